"""Benchmark of poise-tui on a synthetic run: time to first paint, keypress-to-repaint latency, peak memory.

    .venv/bin/python bench/bench_tui.py [--n 1000] [--steps 500] [--run DIR] [--keys 40]

Builds (or reuses) a run with N candidates and STEPS-step curves for 3 seeds each, then measures in a
fresh interpreter so that the numbers include imports and nothing of the build:
- import: `import poise_tui.app`;
- first paint: from app start (and from spawning the interpreter) to the main screen's first frame,
  and to the frame with the whole tree;
- latency: key arriving at the app -> its effect in the widgets -> frame painted, per key kind
  (median); down_to_curves waits for the debounced detail pane to show the new node's curves;
- peak RSS of that interpreter (ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(run_dir: Path, n: int, steps: int) -> None:
    from tests.tui.runbuilder import build_run

    build_run(run_dir, n=n, steps=steps, state="stopped", bulk=True, repo=False)


async def measure(run_dir: Path, n_keys: int, expected: int, spawned_at: float) -> dict[str, float]:
    import asyncio

    t0 = time.perf_counter()
    from poise_tui.app import PoiseApp

    out: dict[str, float] = {"import_s": time.perf_counter() - t0}
    app = PoiseApp(run_dir, start_engine=False, poll_s=0.25)
    paints = _record_paints(app)
    t_start = time.perf_counter()
    async with app.run_test(size=(160, 48)) as pilot:
        main = app.screen
        out["first_paint_s"] = paints[0] - t_start
        out["spawn_to_first_paint_s"] = out["first_paint_s"] + (t_start - t0) + (time.time() - spawned_at
                                                                                  - (time.perf_counter() - t0))
        while len(main.tree._node_of) < expected:
            await asyncio.sleep(0)
        main._on_timer_update()
        out["full_tree_painted_s"] = time.perf_counter() - t_start
        await pilot.pause()
        out.update(await _latencies(app, pilot, n_keys))
    import resource

    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _record_paints(app) -> list[float]:
    """Times at which the main screen was painted (wraps the App's private frame output; bench only)."""
    paints: list[float] = []
    display = app._display

    def recording(screen, renderable) -> None:
        if type(screen).__name__ == "MainScreen" and renderable is not None:
            paints.append(time.perf_counter())
        display(screen, renderable)

    app._display = recording
    return paints


async def _latencies(app, pilot, n_keys: int) -> dict[str, float]:
    screen = app.screen
    tree, tabs, plot = screen.tree, screen.query_one("TabbedContent"), screen.query_one("CurvesView")
    cases = {
        "down": ("down", None, lambda before: tree.cursor_line != before, lambda: tree.cursor_line, n_keys),
        "metric": ("right_square_bracket", "]", lambda b: plot.metric_index != b, lambda: plot.metric_index, 10),
        "tab": ("4", "4", lambda b: tabs.active != b, lambda: tabs.active, 1),
        "sort": ("s", "s", lambda b: tree.sort_by != b, lambda: tree.sort_by, 4),
        "best": ("b", "b", lambda b: tree.selected_id != b, lambda: tree.selected_id, 1),
        # down, then wait for the debounced detail pane: the new node's curves drawn (loaded by the watcher)
        "down_to_curves": ("down", None, lambda b: screen.shown_id != b and screen.shown_id in plot.curves,
                           lambda: screen.shown_id, 5),
    }
    out = {}
    for name, (key, char, changed, probe, repeat) in cases.items():
        times = []
        for _ in range(repeat):
            if name == "best" or tree.cursor_line >= tree.last_line - 1:
                tree.cursor_line = 0  # jumping to the best node must be a change; down must have room
            elif name in ("tab", "down_to_curves"):
                tabs.active = "curves"
            await pilot.pause()
            times.append(await _key_to_paint(app, key, char, changed, probe()))
        out[f"key_{name}_ms"] = statistics.median(times)
    return out


async def _key_to_paint(app, key: str, char: str | None, changed, before) -> float:
    """ms from a key arriving at the app (as from the terminal driver) to its effect painted on screen.

    Not pilot.press: that also waits for the whole process to go idle, which on a loaded machine
    measures the machine. Here: send the key, spin until its effect is visible in the widget state,
    then run the compositor's frame update at once (what its 60 Hz timer would do next).
    """
    import asyncio

    from textual import events

    t = time.perf_counter()
    event = events.Key(key, char)
    event.set_sender(app)
    app._driver.send_message(event)  # (the path real key presses take)
    deadline = t + 10
    while not changed(before):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"key {key!r} had no effect within 10 s")
        await asyncio.sleep(0)
    app.screen._on_timer_update()  # paint the frame now
    return (time.perf_counter() - t) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--keys", type=int, default=40)
    parser.add_argument("--run", type=Path, help="reuse (or create) this run directory")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--spawned-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        import asyncio

        print(json.dumps(asyncio.run(measure(args.measure, args.keys, args.n + 1, args.spawned_at))))
        return 0
    run_dir = args.run or Path(tempfile.mkdtemp(prefix="poise-bench-")) / "run"
    if not (run_dir / "archive.json").exists():
        t = time.perf_counter()
        build(run_dir, args.n, args.steps)
        print(f"built {run_dir} ({args.n} candidates, {args.steps} steps x 3 seeds) in {time.perf_counter() - t:.1f}s")
    child = subprocess.run([sys.executable, __file__, "--measure", str(run_dir), "--n", str(args.n),
                            "--keys", str(args.keys), "--spawned-at", repr(time.time())],
                           capture_output=True, text=True, cwd=ROOT, check=False)
    if child.returncode != 0:
        print(child.stderr, file=sys.stderr)
        return child.returncode
    result = json.loads(child.stdout.strip().splitlines()[-1])
    for key, value in result.items():
        print(f"{key:>18}: {value:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
