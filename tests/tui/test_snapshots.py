"""SVG snapshots of the main views at 80x24 and 160x48 (reviewed before accepting: see tests/tui/__snapshots__)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tui.conftest import make_app, wait_until


def loaded(extra: list[str] | None = None, select: str = "c002"):
    async def run_before(pilot) -> None:
        app = pilot.app
        await wait_until(pilot, lambda: len(app.screen.tree.candidates) == 13, what="archive")
        app.screen.tree.select_id(select)
        await wait_until(pilot, lambda: app.screen.shown_id == select, what="detail pane")
        await wait_until(pilot, lambda: app.screen.query_one("CurvesView").curves, what="curves")
        for key in extra or []:
            await pilot.press(key)
        await pilot.pause()
        app.clear_notifications()  # toasts fade on a timer: never in a snapshot
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
def test_main_curves(snap_compare, finished_run: Path, size) -> None:
    assert snap_compare(make_app(finished_run), terminal_size=size, run_before=loaded())


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
def test_main_metrics(snap_compare, finished_run: Path, size) -> None:
    assert snap_compare(make_app(finished_run), terminal_size=size, run_before=loaded(["4"]))


def test_main_proposal(snap_compare, finished_run: Path) -> None:
    assert snap_compare(make_app(finished_run), terminal_size=(80, 24), run_before=loaded(["3"]))


def test_help(snap_compare, finished_run: Path) -> None:
    assert snap_compare(make_app(finished_run), terminal_size=(80, 24), run_before=loaded(["question_mark"]))


def test_compare(snap_compare, finished_run: Path) -> None:
    async def marked(pilot) -> None:
        await loaded(["m"], select="c001")(pilot)
        pilot.app.screen.tree.select_id("c002")
        await pilot.pause()
        await pilot.press("m", "c", "2")
        await wait_until(pilot, lambda: pilot.app.screen.query("#cmp-table"), what="compare screen")
        await wait_until(pilot, lambda: pilot.app.screen.query_one("CurvesView").curves, what="compare curves")
        pilot.app.clear_notifications()
        await pilot.pause()

    assert snap_compare(make_app(finished_run), terminal_size=(160, 48), run_before=marked)
