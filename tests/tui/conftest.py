"""Fixtures: real run directories, the app over them, and polling helpers (no sleep-and-hope)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.style import Style
from textual.geometry import Region

from poise_tui.app import PoiseApp
from tests.tui.runbuilder import build_run
from tests.tui.scripted_engine import ScriptedEngine


async def wait_until(pilot, predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Let the app run until predicate() is true; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await pilot.pause(0.02)


@pytest.fixture
def recorded_run(tmp_path: Path) -> Path:
    """A stopped (not finished, so steerable) run with 12 candidates (seed + 12), curves and logs."""
    return build_run(tmp_path / "run", n=12, steps=40, state="stopped")


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    return build_run(tmp_path / "done", n=12, steps=40, state="finished")


@pytest.fixture
def live_engine(tmp_path: Path) -> Iterator[ScriptedEngine]:
    """A small run with a ScriptedEngine holding its lock, driven step by step by the test."""
    run_dir = build_run(tmp_path / "live", n=3, steps=20, state="stopped", seeds=[0, 1])
    engine = ScriptedEngine(run_dir, steps=5).start()
    yield engine
    engine.close()


def make_app(run_dir: Path, **kwargs: object) -> PoiseApp:
    return PoiseApp(run_dir, start_engine=False, poll_s=0.02, **kwargs)  # type: ignore[arg-type]


def screen_rows(app, region: Region | None = None) -> list[list[tuple[str, Style]]]:
    """What the terminal shows of the active screen: per row, its (text, style) segments, cropped to region.

    Read from the screen's compositor (the frame Textual would write), so colors are the final ones."""
    region = region or app.screen.region
    strips = app.screen._compositor.render_strips()
    return [[(seg.text, seg.style or Style()) for seg in strip.crop(region.x, region.right)]
            for strip in strips[region.y:region.bottom]]


def screen_lines(app, region: Region | None = None) -> list[str]:
    return ["".join(text for text, _ in row) for row in screen_rows(app, region)]
