"""`poise-tui [RUN_DIR]`: attach to a run (starting its engine if needed), or to the most recent one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.errors import PoiseError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="poise-tui", description="Watch and steer a POISE discovery run.")
    parser.add_argument("run_dir", nargs="?", type=Path,
                        help="run directory; default: the most recent run under $POISE_HOME "
                             "(~/.local/share/poise/runs), or offer to create the demo run")
    parser.add_argument("--no-engine", action="store_true", help="never start an engine; only watch")
    parser.add_argument("--read-only", action="store_true", help="watch only: no engine start, no commands")
    parser.add_argument("--poll", type=float, default=0.25, help="seconds between checks of the run directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from poise_tui.launcher import check_run_dir, most_recent_run, runs_home

    try:
        run_dir = check_run_dir(args.run_dir) if args.run_dir else most_recent_run(runs_home())
    except PoiseError as exc:
        print(f"poise-tui: {exc}", file=sys.stderr)
        return 2
    from poise_tui.app import PoiseApp

    app = PoiseApp(run_dir, start_engine=not (args.no_engine or args.read_only), poll_s=args.poll,
                   read_only=args.read_only)
    app.run()
    return app.return_code or 0


if __name__ == "__main__":
    sys.exit(main())
