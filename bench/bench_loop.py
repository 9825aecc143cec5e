"""Wall time of the discovery loop per stage, and how much of it is loop overhead.

    .venv/bin/python bench/bench_loop.py RUN_DIR --budget 8     # init (if needed) + `poise run`, then the table
    .venv/bin/python bench/bench_loop.py RUN_DIR --summary-only  # the table of an existing run

Reads every candidate's `costs` from the archive (the engine records wall seconds per stage,
LLM tokens and LLM seconds). "Training" is what the issue excludes from overhead: the
evaluation jobs (stages train, confirm and rerun). Everything else (propose, screen, implement,
verify, repair, reflect, bookkeeping) is overhead. Two views:
- per candidate: the sum of its recorded stages (LLM time spent while another candidate
  trained is reported apart, as `overlapped_s`, and is not on the critical path);
- per run: engine wall time minus time inside training jobs, over engine wall time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.archive import Archive

TRAINING = ("train", "confirm", "rerun")
STAGES = ("propose", "implement", "verify", "repair", "train", "confirm", "rerun", "reflect")


def run_engine(run_dir: Path, budget: int) -> float:
    py = sys.executable
    if not (run_dir / "run.toml").exists():
        subprocess.run([py, "-m", "core.cli", "init", str(run_dir)], check=True)
    start = time.perf_counter()
    subprocess.run([py, "-m", "core.cli", "run", str(run_dir), "--budget", str(budget)], check=False)
    return time.perf_counter() - start


def candidate_rows(archive: Archive) -> list[dict]:
    rows = []
    for c in archive.all():
        wall = dict((c.costs or {}).get("wall_s", {}))
        total = sum(wall.values())
        training = sum(wall.get(k, 0.0) for k in TRAINING)
        rows.append({"id": c.id, "status": c.status, "wall": wall, "total": total, "training": training,
                     "overhead": total - training,
                     "overlapped": sum((c.costs or {}).get("overlapped_s", {}).values()),
                     "llm_tokens": int((c.costs or {}).get("llm_tokens", 0)),
                     "llm_s": float((c.costs or {}).get("llm_s", 0.0))})
    return rows


def print_table(rows: list[dict]) -> None:
    head = ["candidate", "status", *STAGES, "total", "overhead", "overhead %", "overlapped LLM s", "LLM tokens", "LLM s"]
    print("| " + " | ".join(head) + " |")
    print("|---" * len(head) + "|")
    for r in rows:
        cells = [f"{r['wall'][s]:.1f}" if s in r["wall"] else "-" for s in STAGES]
        pct = 100 * r["overhead"] / r["total"] if r["total"] else 0.0
        print(f"| {r['id']} | {r['status']} | " + " | ".join(cells)
              + f" | {r['total']:.1f} | {r['overhead']:.1f} | {pct:.1f} | {r['overlapped']:.1f}"
              + f" | {r['llm_tokens']} | {r['llm_s']:.1f} |")


def print_totals(rows: list[dict], engine_wall: float | None) -> None:
    trained = [r for r in rows if r["training"] > 0 and r["id"] != "seed"]
    total = sum(r["total"] for r in trained)
    over = sum(r["overhead"] for r in trained)
    print(f"\ncandidates trained (not the seed): {len(trained)}; their recorded stages: {total:.0f} s, "
          f"overhead {over:.0f} s = {100 * over / total if total else 0:.1f}%; "
          f"LLM time overlapped with training: {sum(r['overlapped'] for r in rows):.0f} s")
    if engine_wall:
        training = sum(r["training"] for r in rows)
        print(f"engine wall {engine_wall:.0f} s, in training jobs {training:.0f} s, "
              f"everything else {engine_wall - training:.0f} s = {100 * (engine_wall - training) / engine_wall:.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--budget", type=int, default=8)
    ap.add_argument("--summary-only", action="store_true")
    a = ap.parse_args()
    wall = None if a.summary_only else run_engine(a.run_dir, a.budget)
    rows = candidate_rows(Archive.open(a.run_dir, readonly=True))
    print_table(rows)
    print_totals(rows, wall)


if __name__ == "__main__":
    main()
