"""ScriptedEngine: a test double of core.engine that writes a run exactly as the engine does.

Real archive records (core.archive), real metrics.jsonl, the real lock and engine.json
(core.lock, core.runstate), and inbox commands applied through core.inbox. Only the work
itself is scripted: no LLM, no training; the curves are synthetic. Tests drive it step by
step in-process (deterministic), or run it as a process:

    python -m tests.tui.scripted_engine <run_dir> [--step-s 0.05] [--steps 20] [--budget 50]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

from core.archive import Archive, Candidate
from core.inbox import mark_done, pending_commands
from core.lock import EngineLock
from core.runstate import EngineState, write_state
from tests.tui.runbuilder import job_result, proposal, write_branch


class ScriptedEngine:
    def __init__(self, run_dir: Path, steps: int = 10, seeds: list[int] | None = None, budget: int = 0) -> None:
        self.run_dir = Path(run_dir)
        self.archive = Archive.open(self.run_dir)
        self.steps, self.seeds, self.budget = steps, seeds or [0, 1], budget
        self.rng = random.Random(0)
        self.state = EngineState(state="running", candidates_budget=budget)
        self.fork_next: str | None = None
        self.directive = ""
        self.lock = EngineLock(self.run_dir)

    # ---- lifecycle -----------------------------------------------------------
    def start(self) -> ScriptedEngine:
        self.lock.acquire()
        self.state.pid = __import__("os").getpid()
        self.publish()
        return self

    def close(self, final: str = "stopped") -> None:
        self.state.state = final  # type: ignore[assignment]
        self.state.stage = "idle"
        self.publish()
        self.lock.release()

    def publish(self) -> None:
        write_state(self.run_dir, self.state)

    # ---- commands --------------------------------------------------------------
    def apply_commands(self) -> list[str]:
        """Apply every pending inbox command; returns their names."""
        names = []
        for cmd in pending_commands(self.run_dir):
            ok, outcome = self._apply(cmd["name"], cmd.get("args", {}))
            mark_done(self.run_dir, cmd, outcome, ok)
            names.append(cmd["name"])
        self.publish()
        return names

    def _apply(self, name: str, args: dict) -> tuple[bool, str]:
        if name in ("pause", "resume", "stop"):
            self.state.state = {"pause": "paused", "resume": "running", "stop": "stopping"}[name]  # type: ignore[assignment]
            return True, f"engine {self.state.state}"
        if name == "set_directive":
            self.directive = args.get("directive", "")
            return True, f"directive set to {self.directive!r}"
        cand_id = args.get("id", "")
        if cand_id not in self.archive:
            return False, f"no candidate {cand_id!r}"
        if name == "fork":
            self.fork_next = cand_id
            return True, f"next proposal forks {cand_id}"
        if name == "veto":
            if self.archive.get(cand_id).status not in ("proposed", "implemented", "verified"):
                return False, f"{cand_id} is past verification; cannot veto"
            self.archive.set_status(cand_id, "vetoed", "vetoed from the TUI")
            return True, f"vetoed {cand_id}"
        if name == "rerun":
            self.state.queue = [*self.state.queue, cand_id]
            return True, f"rerun of {cand_id} on seeds {args.get('seeds')} queued"
        return False, f"unknown command {name}"

    # ---- work ------------------------------------------------------------------
    def propose(self) -> str:
        """Add a proposed candidate (child of the forked node, else of the best) and carry it to training."""
        parent = self.fork_next or (self.archive.best() or self.archive.get("seed")).id
        self.fork_next = None
        cand_id = self.archive.next_id()
        prop = proposal(int(cand_id[1:]), self.rng)
        self.archive.add(Candidate(id=cand_id, title=prop["title"], parent_ids=[parent], proposal=prop,
                                   branch=f"cand/{cand_id}", tags=[prop["mechanism"]]))
        if (self.run_dir / "repo").is_dir():
            from core.workspace import Workspace

            with Workspace.open(self.run_dir) as ws:
                write_branch(ws, self.archive.get(cand_id))
        for status in ("implemented", "verified", "training"):
            self.archive.set_status(cand_id, status)
        self.state.stage, self.state.candidate, self.state.progress = "train", cand_id, 0.0
        self.publish()
        return cand_id

    def train_step(self, cand_id: str, step: int) -> None:
        for seed in self.seeds:
            job = self.run_dir / "jobs" / cand_id / str(seed)
            job.mkdir(parents=True, exist_ok=True)
            acc = 0.4 + 0.3 * step / self.steps + self.rng.gauss(0, 0.01)
            row = {"step": step, "reward_mean": acc, "accuracy": acc, "valid_rate": 0.9, "entropy": 1.0,
                   "kl": 0.01 * step, "response_length": 30.0, "grad_norm": 1.0}
            with open(job / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
            with open(job / "stdout.log", "a") as fh:
                fh.write(f"{cand_id} seed {seed} step {step} acc {acc:.3f}\n")
        self.state.progress = step / self.steps
        self.state.message = f"training {cand_id}, step {step}/{self.steps}"
        self.publish()

    def finish(self, cand_id: str) -> None:
        quality = 0.45 + self.rng.gauss(0.01, 0.02)
        for seed in self.seeds:
            self.archive.record_result(cand_id, seed, asdict(job_result(self.rng, quality)))
        self.archive.set_status(cand_id, "evaluated")
        self.archive.update(cand_id, reflection={"diagnosis": "scripted", "design_principle": "none"})
        self.archive.set_status(cand_id, "reflected")
        self.state.candidates_done += 1
        self.state.stage, self.state.candidate, self.state.progress = "idle", "", 0.0
        self.publish()

    def run(self, step_s: float) -> None:
        """The process loop: candidates one after another, commands between steps, until stop or budget."""
        while self.state.state != "stopping" and not (self.budget and self.state.candidates_done >= self.budget):
            self.apply_commands()
            if self.state.state == "paused":
                time.sleep(step_s)
                continue
            cand_id = self.propose()
            for step in range(1, self.steps + 1):
                self.apply_commands()
                self.train_step(cand_id, step)
                time.sleep(step_s)
            self.finish(cand_id)
        self.close("finished" if self.state.state != "stopping" else "stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--step-s", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--budget", type=int, default=0)
    args = parser.parse_args(argv)
    ScriptedEngine(args.run_dir, steps=args.steps, budget=args.budget).start().run(args.step_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
