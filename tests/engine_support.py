"""Shared helpers of the engine and CLI tests: a scriptable OpenAI-compatible LLM double on 127.0.0.1,
a tiny run config, `poise` as a subprocess, and the archive/repo consistency check.

Only the LLM is a test double (FakeOpenAIServer); the engine, archive, git workspace, sandboxed
jobs and recipe tiny are the real ones.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# The model fields match tests/test_tiny_model.py's TEST_MODEL: a warm start that builds in seconds.
# Everything else is the smallest RL protocol that still runs every stage of a job.
TINY = {"hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64, "sft_steps": 8, "sft_batch_size": 16,
        "eval_size": 8, "steps": 3, "prompts_per_step": 3, "group_size": 4, "max_response_tokens": 16,
        "minibatches": 2, "pass_k": 2}
# The same protocol on the default model, whose warm start ships in assets/ (no SFT to run) and scores ~0.36,
# for tests that must tell a real score from a zero.
MODEL_FIELDS = ("hidden_size", "layers", "heads", "intermediate_size", "sft_steps", "sft_batch_size")
TINY_PROTOCOL = {key: value for key, value in TINY.items() if key not in MODEL_FIELDS}

# Compositions that behave differently from GRPO and from each other on the probe batches.
COMPOSITIONS = [
    {"advantage": {"name": "dr_grpo"}, "policy_loss": {"name": "ppo_clip"}},
    {"advantage": {"name": "rloo"}, "policy_loss": {"name": "ppo_clip"}},
    {"advantage": {"name": "av", "sigma_min": 0.2}, "policy_loss": {"name": "ppo_clip"}},
    {"advantage": {"name": "lite_ppo"}, "policy_loss": {"name": "ppo_clip"}},
    {"advantage": {"name": "grpo"}, "policy_loss": {"name": "gspo"}},
    {"advantage": {"name": "gpg"}, "policy_loss": {"name": "pg"}},
    {"advantage": {"name": "grpo"}, "policy_loss": {"name": "cispo"}},
    {"advantage": {"name": "rloo"}, "policy_loss": {"name": "sapo"}},
]


def proposal(i: int, **extra: Any) -> str:
    """A valid compose-mode proposal reply, the i-th of COMPOSITIONS."""
    comp = COMPOSITIONS[i % len(COMPOSITIONS)]
    adv = comp["advantage"]["name"]
    body = {"title": f"Try {adv} + {comp['policy_loss']['name']} #{i}", "motivation": "zero-variance groups dominate",
            "mechanism": f"use the {adv} advantage", "hypothesis": "steadier reward", "expected_signals": "lower KL spikes",
            "composition": comp, **extra}
    return json.dumps(body)


SCORE = json.dumps({"consistency": 4, "feasibility": 5, "novelty": 3, "expected_gain": 3, "reason": "plausible"})
REFLECTION = json.dumps({"diagnosis": "the advantage change moved reward", "evidence": "reward end vs start",
                         "design_principle": "normalise carefully", "next_steps": "try a std floor"})


def reply_kind(body: dict) -> str:
    """Which operator sent a chat request, read from its JSON schema (what a real server would constrain)."""
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    props = schema.get("properties", {})
    if "title" in props or "proposals" in props:
        return "propose"
    if "consistency" in props:
        return "screen"
    if "diagnosis" in props:
        return "reflect"
    return "repair"


class FakeOpenAIServer:
    """The LLM's test double: a real HTTP server on 127.0.0.1 speaking the OpenAI chat API.

    Replies come from per-operator scripts; the propose script is consumed in order (then falls back
    to `default_propose(i)`, i counting every proposal request), the others cycle. Each request is
    recorded as (kind, body)."""

    def __init__(self, propose: list[str] | None = None, screen: list[str] | None = None,
                 reflect: list[str] | None = None, repair: list[str] | None = None,
                 default_propose: Callable[[int], str] = proposal, delay_s: float = 0.0) -> None:
        self.scripts = {"propose": list(propose or []), "screen": screen or [SCORE], "reflect": reflect or [REFLECTION],
                        "repair": repair or ['{"composition": {}}']}
        self.default_propose = default_propose
        self.delay_s = delay_s
        self.requests: list[tuple[str, dict]] = []
        self.counts = {k: 0 for k in self.scripts}
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def next_reply(self, kind: str) -> str:
        with self._lock:
            i = self.counts[kind]
            self.counts[kind] += 1
            script = self.scripts[kind]
            if kind == "propose":
                return script[i] if i < len(script) else self.default_propose(i)
            return script[i % len(script)]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path.endswith("/tokenize"):
                    self._send({"tokens": list(range(len(str(body.get("content", "")).split())))})
                    return
                kind = reply_kind(body)
                outer.requests.append((kind, body))
                text = outer.next_reply(kind)
                if outer.delay_s:
                    time.sleep(outer.delay_s)  # a slow model, so a test can catch the engine mid-call
                self._send({"choices": [{"message": {"content": text}, "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 100, "completion_tokens": max(1, len(text) // 4)}})

            def _send(self, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def __enter__(self) -> FakeOpenAIServer:  # noqa: PYI034
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# The statuses of a candidate that went through the whole pipeline once.
FULL_LIFE = ["proposed", "implemented", "verified", "training", "evaluated", "reflected"]


# ------------------------------------------------------------------------------------------ runs


def env(cache_dir: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k != "POISE_FAULT"}  # faults only where a test asks
    return {**base, "POISE_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(ROOT), **extra}


def poise(args: list[str], cache_dir: Path, timeout: float = 300, check: bool = True,
          **extra_env: str) -> subprocess.CompletedProcess:
    """`python -m core.cli ARGS` to completion; raises with its output when check and it failed."""
    proc = subprocess.run([PY, "-m", "core.cli", *map(str, args)], cwd=ROOT, env=env(cache_dir, **extra_env),
                          capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"poise {' '.join(map(str, args))} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}")
    return proc


def start_engine(run: Path, cache_dir: Path, budget: int | None = None, **extra_env: str) -> subprocess.Popen:
    """`poise run` in the background (its own process group, so SIGKILL reaches its job children too)."""
    args = [PY, "-m", "core.cli", "run", str(run)] + (["--budget", str(budget)] if budget is not None else [])
    log = open(run / "test-engine.log", "ab")  # noqa: SIM115 - the child keeps writing after we return
    return subprocess.Popen(args, cwd=ROOT, env=env(cache_dir, **extra_env), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the engine and everything it started (a kill -9 of the whole run, as a crash would do)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def engine_log(run: Path) -> str:
    path = run / "test-engine.log"
    return path.read_text(errors="replace")[-6000:] if path.exists() else ""


def read_engine_json(run: Path) -> dict:
    try:
        return json.loads((run / "engine.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def wait_for(pred: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen | None = None,
             run: Path | None = None, interval: float = 0.05) -> Any:
    """Poll `pred` until truthy; fail with `what` (and the engine log) at the deadline or if proc exited."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            value = pred()
            if value:
                return value
            raise AssertionError(f"engine exited ({proc.returncode}) before {what}\n{engine_log(run) if run else ''}")
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{engine_log(run) if run else ''}")


def init_run(run: Path, cache_dir: Path, llm_url: str | None, budget: int = 2, **search: Any) -> Path:
    """`poise init` then the tiny test protocol written into run.toml (one seed, one parent per round)."""
    poise(["init", run], cache_dir)
    write_test_config(run, llm_url, budget, **search)
    return run


def write_test_config(run: Path, llm_url: str | None, budget: int, **search: Any) -> None:
    from core.config import load_config, save_config

    cfg = load_config(run / "run.toml")
    cfg.seeds = [0]
    cfg.budget.candidates = budget
    cfg.limits.timeout_s = 240.0
    cfg.search.selection.parents_per_round = 1
    cfg.search.proposals_per_parent = search.pop("proposals_per_parent", 1)
    cfg.search.repair_attempts = search.pop("repair_attempts", 1)
    # Elite confirmation (fresh seeds once the budget is spent) is off unless a test turns it on: the engine
    # tests check the lifecycle of exactly `budget` candidates; tests/test_engine_elites.py covers it.
    cfg.search.confirm_top_k = search.pop("confirm_top_k", 0)
    for key, value in search.items():
        setattr(cfg.search, key, value)
    for key, value in TINY.items():
        setattr(cfg.tiny, key, value)
    if llm_url:
        cfg.llm.backend = "openai"
        cfg.llm.base_url = llm_url
        cfg.llm.n_ctx = 16384
        cfg.llm.max_prompt_tokens = 0  # test the engine's context wiring, not the CPU trimming policy
        cfg.llm.timeout_s = 60.0
    save_config(cfg, run / "run.toml")


# ------------------------------------------------------------------------------------------ checks

def check_consistent(run: Path) -> list:
    """Assert the invariants a crash must never break; returns the candidates.

    - the archive loads; ids are unique; every history walks TRANSITIONS from its first status;
    - every non-rejected/vetoed candidate with a commit has cand/<id> at exactly that commit;
    - no cand/* branch without a record; no proposal recorded twice under two ids.
    """
    from core.archive import TRANSITIONS, Archive
    from core.workspace import Workspace

    arch = Archive.open(run, readonly=True)
    cands = arch.all()
    ids = [c.id for c in cands]
    assert len(ids) == len(set(ids)), f"duplicate ids: {ids}"
    for c in cands:
        hist = [h["status"] for h in c.history]
        assert hist and hist[-1] == c.status, f"{c.id}: history {hist} does not end in {c.status}"
        for a, b in itertools.pairwise(hist):
            assert b in TRANSITIONS[a], f"{c.id}: illegal move {a} -> {b} in {hist}"
    with Workspace.open(run) as ws:
        branches = ws.candidate_branches()
    for c in cands:
        if c.commit and c.status not in ("rejected", "vetoed"):
            assert branches.get(c.id) == c.commit, f"{c.id}: branch {branches.get(c.id)} != recorded commit {c.commit}"
    assert set(branches) <= set(ids), f"branches without a record: {sorted(set(branches) - set(ids))}"
    titles = [(c.title, json.dumps(c.proposal.get("change") or {}, sort_keys=True)) for c in cands
              if c.origin == "llm" and c.status not in ("rejected",)]
    assert len(titles) == len(set(titles)), f"a proposal was recorded twice: {titles}"
    return cands


def trained(cands: list) -> list:
    done = {"evaluated", "reflected", "diverged", "crashed", "timed_out"}
    return [c for c in cands if c.id != "seed" and c.status in done]


# ------------------------------------------------------------------------------------------ shared runs

_SESSION: dict[str, Path] = {}


def session_cache(tmp_path_factory) -> Path:
    """One POISE_CACHE_DIR per test session: the tiny warm start is built once for every engine test."""
    if "cache" not in _SESSION:
        _SESSION["cache"] = tmp_path_factory.mktemp("poise-cache")
    return _SESSION["cache"]


def base_run(tmp_path_factory) -> Path:
    """`poise init` + `poise eval seed` once per session: a run whose seed is verified and evaluated.
    Tests copy it (copy_run) so each starts at the first LLM round without paying for the seed again."""
    if "base" not in _SESSION:
        cache = session_cache(tmp_path_factory)
        run = init_run(tmp_path_factory.mktemp("base") / "run", cache, None, budget=1)
        poise(["eval", run, "seed"], cache, timeout=600)
        _SESSION["base"] = run
    return _SESSION["base"]


def copy_run(src: Path, dst: Path, llm_url: str | None, budget: int, **search: Any) -> Path:
    """A copy of a run with its own config; worktrees are dropped (git registers them by absolute path)."""
    import shutil

    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("worktrees", "test-engine.log"))
    shutil.rmtree(dst / "repo" / ".git" / "worktrees", ignore_errors=True)
    write_test_config(dst, llm_url, budget, **search)
    return dst


def queued(run: Path) -> list[dict]:
    """The engine's persistent work queue (confirm, rerun, fork items), as on disk."""
    path = run / "queue.json"
    return json.loads(path.read_text()) if path.exists() else []
