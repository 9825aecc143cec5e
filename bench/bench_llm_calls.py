"""LLM time of the discovery loop with the embedded model: prompt cache on vs off, in one process.

    .venv/bin/python bench/bench_llm_calls.py [--run DIR] [--rounds 2] [--max-prompt-tokens 1024]

Each round is what core/discovery.py does per candidate: 2 proposals for one parent (per_call,
seeds s and s+1), screening of 2 proposals (one LLM score each), and 1 reflection. Round r uses
another parent, as the loop does. Contexts come from a real run (--run: its archive, git repo and
metrics, read through core.discovery.Discovery as the engine builds them) or are synthesized with
realistic content (6 splits with CIs, 100-step curves, reflections, the real mechanism library).

The same rounds run twice on the same model: `[llm] prompt_cache_mb` = 0 (llama.cpp reuses only the
previous call's prefix) and = 256 (saved states of earlier prompts too). Both start cold. Printed:
per call seconds, prompt tokens sent and read, and the totals with the ratio off/on.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.llm.config import LLMConfig
from core.operators.context import NodeView, curve_stats
from core.operators.propose import Proposal, ProposalContext
from core.operators.reflect import ReflectionInput, unified_diff

SPLITS = ("add1", "add2", "sub", "mul", "mixed", "chain")


@dataclass
class Round:
    """What one candidate's LLM work sees: the proposal context, two proposals to screen, a reflection."""

    ctx: ProposalContext
    to_screen: list[Proposal]
    archive: list[NodeView]
    reflection: ReflectionInput


# ----------------------------------------------------------------------------------------- synthetic contexts


def _metrics(rng: random.Random, level: float) -> dict[str, Any]:
    def one(mean: float) -> dict[str, float]:
        return {"mean": mean, "lo": mean - 0.012, "hi": mean + 0.011, "n": 3}

    splits = {s: one(min(0.95, max(0.05, level + rng.uniform(-0.25, 0.35)))) for s in SPLITS}
    return {"selection": {"overall": one(level), **splits}}


def _rows(rng: random.Random, gain: float) -> list[dict[str, float]]:
    return [{"step": s, "reward_mean": 0.15 + gain * s / 100 + rng.gauss(0, 0.02),
             "valid_rate": 0.53 + 0.26 * s / 100, "entropy": 0.26 - 0.07 * s / 100,
             "kl": 0.0004 + 0.014 * s / 100, "response_length": 18.9 + rng.gauss(0, 0.3),
             "grad_norm": 0.8 + rng.gauss(0, 0.1), "accuracy": 0.2 + gain * s / 120} for s in range(1, 101)]


# Proposals to screen: new to the archive (else the duplicate gate rejects them and no LLM score is asked).
FRESH = [
    {"advantage": {"name": "vm"}, "policy_loss": {"name": "sapo"}, "kl": "k2", "kl_coef": 0.01},
    {"advantage": {"name": "lite_ppo"}, "policy_loss": {"name": "clip_cov"}, "entropy": {"name": "fixed"}},
]
COMPOSITIONS = [
    {"advantage": {"name": "gpg"}, "policy_loss": {"name": "gmpo", "eps_low": 0.3}, "kl": "k3", "kl_coef": 0.02},
    {"advantage": {"name": "av", "sigma_min": 0.2}, "policy_loss": {"name": "ppo_clip", "eps_high": 0.28},
     "filters": [{"name": "dynamic_sampling"}]},
    {"advantage": {"name": "rloo"}, "policy_loss": {"name": "cispo"}, "aggregation": "seq-mean-token-sum-norm"},
    {"advantage": {"name": "dr_grpo"}, "policy_loss": {"name": "gspo"}, "masks": [{"name": "truncation"}]},
]


def _node(rng: random.Random, i: int, source: str) -> NodeView:
    comp = COMPOSITIONS[i % len(COMPOSITIONS)]
    title = " + ".join(str(v["name"] if isinstance(v, dict) else v) for v in comp.values()
                       if isinstance(v, (dict, str)))
    reflection = {"diagnosis": f"The {title} variant raised reward faster than its parent while entropy fell "
                               "at the same rate; the gain comes from the pass@k splits.",
                  "evidence": "reward_mean 0.15->0.33 vs 0.15->0.31; mul 0.33 vs 0.30 (CIs overlap on add1).",
                  "design_principle": "Rescaling advantages by the share of informative groups helps when "
                                      "many groups are all-correct or all-wrong.",
                  "next_steps": "Try a floor on the group std and clip-higher on the policy loss."}
    proposal = {"title": title, "mechanism": "see composition", "change": {"composition": comp}}
    return NodeView(f"c{i:03d}", title, source, _metrics(rng, 0.47 + 0.01 * i), curve_stats(_rows(rng, 0.18)),
                    reflection, proposal, comp)


def synthetic_rounds(n_rounds: int) -> list[Round]:
    from core.workspace import default_template_dir

    rng = random.Random(0)
    source = (default_template_dir() / "algorithm.py").read_text()
    nodes = [_node(rng, i, source) for i in range(8)]
    return [_round(nodes[r], nodes, rng) for r in range(n_rounds)]


def _round(parent: NodeView, nodes: list[NodeView], rng: random.Random) -> Round:
    others = [n for n in nodes if n is not parent]
    ctx = ProposalContext(parent, pareto=others[:3], contrasting=others[3:5], outside=others[5:7])
    props = [_proposal(c, parent.id) for c in FRESH]
    child = others[0]
    refl = ReflectionInput(child.id, {k: v for k, v in child.proposal.items() if isinstance(v, str)},
                           unified_diff(parent.source, parent.source.replace("0.2", "0.28")), _rows(rng, 0.2),
                           _rows(rng, 0.17), child.metrics, parent.metrics, nodes[0].metrics)
    return Round(ctx, props, others, refl)


def _proposal(comp: dict, parent_id: str) -> Proposal:
    return Proposal("variant", "zero-variance groups waste the batch", "floor the std and clip higher",
                    "more signal per step", "reward rises faster, entropy stays up", "compose",
                    {"composition": comp}, parent_id)


# ----------------------------------------------------------------------------------------- contexts from a run


def run_rounds(run_dir: Path, n_rounds: int) -> list[Round]:
    """Contexts exactly as Discovery builds them, for the run's scored candidates as parents."""
    from core.archive import Archive
    from core.config import load_config
    from core.discovery import Discovery
    from core.rundir import RunPaths
    from core.workspace import Workspace

    d = Discovery(Archive.open(run_dir, readonly=True), Workspace.open(run_dir), load_config(run_dir / "run.toml"),
                  RunPaths(run_dir))
    scored = [c for c in d.scored() if c.parent_ids] or d.scored()
    rounds = []
    for cand in (scored * n_rounds)[:n_rounds]:
        pid = cand.parent_ids[0] if cand.parent_ids else cand.id
        pareto, contrasting, outside = d.reference_tiers(pid)
        ctx = ProposalContext(d.node(pid), pareto, contrasting, outside)
        known = [d.node(c.id) for c in d.archive.all() if c.commit and c.status not in ("rejected", "vetoed")]
        refl = ReflectionInput(cand.id, dict(cand.proposal), d.ws.diff(cand.id, against="parent"), d.rows(cand.id),
                               d.rows(pid), dict(cand.metrics or {}), dict(d.archive.get(pid).metrics or {}),
                               dict(d.archive.get("seed").metrics or {}), cand.status)
        rounds.append(Round(ctx, [_proposal(c, pid) for c in FRESH], known, refl))
    return rounds


# ----------------------------------------------------------------------------------------- timing


def play(llm: Any, rounds: list[Round], cfg: LLMConfig) -> list[dict[str, Any]]:
    """The LLM calls of the rounds in the loop's order; one row per call."""
    from core.operators.implement import RegistryLibrary, default_check
    from core.operators.propose import propose
    from core.operators.reflect import reflect
    from core.operators.screen import screen

    lib, check, rows = RegistryLibrary(), default_check(), []
    for r, rnd in enumerate(rounds):
        out = propose(llm, rnd.ctx, n=2, mode="compose", cfg=cfg, library=lib, seed=1000 * r)
        rows += _rows_of(r, out.calls)
        res = screen(llm, rnd.to_screen, parent=rnd.ctx.parent, archive=rnd.archive, library=lib, check=check, cfg=cfg)
        rows += _rows_of(r, res.calls)
        _, record = reflect(llm, rnd.reflection, cfg=cfg)
        rows += _rows_of(r, [record])
    return rows


def _rows_of(r: int, calls: list) -> list[dict[str, Any]]:
    return [{"round": r, "op": c.operator, "s": c.seconds, "sent": c.prompt_tokens, "gen": c.completion_tokens,
             "error": c.error[:40]} for c in calls]


def timed(llm: Any, rounds: list[Round], cfg: LLMConfig) -> tuple[list[dict[str, Any]], int, float]:
    llm.forget_prompts()
    read0, t0 = llm.stats.prompt_tokens_read, time.perf_counter()
    rows = _play_counting(llm, rounds, cfg)
    return rows, llm.stats.prompt_tokens_read - read0, time.perf_counter() - t0


def _play_counting(llm: Any, rounds: list[Round], cfg: LLMConfig) -> list[dict[str, Any]]:
    """play(), recording each call's prompt tokens read (wrapping chat: the operators hide the backend)."""
    reads: list[tuple[int, str]] = []
    chat = llm.chat

    def counting_chat(*args: Any, **kwargs: Any) -> Any:
        reply = chat(*args, **kwargs)
        reads.append((llm.stats.last_read, reply.text))
        return reply

    llm.chat = counting_chat
    try:
        rows = play(llm, rounds, cfg)
    finally:
        del llm.chat
    for row, (read, text) in zip(rows, reads):
        row["read"], row["text"] = read, text
    return rows


def report(name: str, rows: list[dict[str, Any]], read: int, wall: float) -> None:
    print(f"\n{name}")
    print(f"{'round':>5} {'op':8} {'s':>7} {'sent':>6} {'read':>6} {'gen':>5}  error")
    for row in rows:
        print(f"{row['round']:>5} {row['op']:8} {row['s']:7.2f} {row['sent']:6d} {row.get('read', -1):6d} "
              f"{row['gen']:5d}  {row['error']}")
    sent = sum(r["sent"] for r in rows)
    llm_s = sum(r["s"] for r in rows)
    print(f"total: {len(rows)} calls, {llm_s:.1f} s in calls ({wall:.1f} s wall), prompt tokens sent {sent}, read {read}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a run directory to take contexts from (read only)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-prompt-tokens", type=int, default=1024)
    args = ap.parse_args()
    from core.llm.llamacpp import LlamaCppLLM

    cfg = replace(LLMConfig(), max_prompt_tokens=args.max_prompt_tokens)
    rounds = run_rounds(args.run, args.rounds) if args.run else synthetic_rounds(args.rounds)
    results = {}
    for mb in (0, 256):
        llm = LlamaCppLLM(cfg.model_path, cfg.n_ctx, repeat_penalty=cfg.repeat_penalty, prompt_cache_mb=mb)
        rows, read, wall = timed(llm, rounds, replace(cfg, prompt_cache_mb=mb))
        report(f"prompt_cache_mb = {mb}", rows, read, wall)
        results[mb] = (sum(r["s"] for r in rows), read, [r.get("text") for r in rows])
    (off_s, off_read, off_text), (on_s, on_read, on_text) = results[0], results[256]
    print(f"\nratio off/on: LLM seconds {off_s / on_s:.2f}x, prompt tokens read {off_read / max(on_read, 1):.2f}x; "
          f"identical replies: {off_text == on_text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
