"""Fixes from a user walkthrough at 80x24: filter box, diff header, rejected reasons, rerun refusal, logs."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import TabbedContent

from poise_tui.widgets.filter_box import FilterBox
from tests.tui.conftest import make_app, screen_lines, wait_until


def on_screen(app, text: str) -> bool:
    return any(text in line for line in screen_lines(app))


async def loaded_app(pilot, app) -> None:
    await wait_until(pilot, lambda: len(app.screen.tree.candidates) == 13, what="archive loaded")
    await wait_until(pilot, lambda: app.screen.shown_id is not None, what="detail pane")


async def test_escape_clears_and_hides_the_filter_and_gives_the_tree_the_focus(recorded_run: Path) -> None:
    app = make_app(recorded_run)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded_app(pilot, app)
        await pilot.press("slash", *"status:rej")
        tree = app.screen.tree
        await wait_until(pilot, lambda: set(tree._node_of) == {"seed", "c004", "c005"}, what="filtered tree")
        await pilot.press("escape")
        box = app.screen.query_one(FilterBox)
        assert box.value == "" and not box.display
        assert tree.has_focus
        await wait_until(pilot, lambda: len(tree._node_of) == 13, what="the whole tree back")


async def test_slash_in_an_open_filter_selects_its_text_instead_of_typing_a_slash(recorded_run: Path) -> None:
    app = make_app(recorded_run)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded_app(pilot, app)
        await pilot.press("slash", *"mul", "enter")
        box = app.screen.query_one(FilterBox)
        assert app.screen.tree.has_focus and box.display
        await pilot.press("slash")
        assert box.has_focus
        await pilot.press("slash", *"c00")  # `/` again inside the box: the query is replaced, no slash typed
        assert box.value == "c00"


async def test_a_filter_that_matches_nothing_says_so_and_hides_the_old_node(recorded_run: Path) -> None:
    app = make_app(recorded_run)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded_app(pilot, app)
        app.screen.tree.select_id("c002")
        await wait_until(pilot, lambda: app.screen.shown_id == "c002", what="c002 shown")
        await pilot.press("3")  # the Proposal tab names the node it shows
        await wait_until(pilot, lambda: on_screen(app, "c002: "), what="c002's proposal")
        await pilot.press("slash", *"xyz")
        await wait_until(pilot, lambda: on_screen(app, "no candidate matches 'xyz'"), what="the no-match line")
        assert not on_screen(app, "c002: ") and app.screen.shown_id is None
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen.shown_id is not None, what="a node shown again")
        assert not on_screen(app, "no candidate matches")


async def test_a_filter_that_hides_the_shown_node_moves_the_detail_to_a_visible_one(recorded_run: Path) -> None:
    app = make_app(recorded_run)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded_app(pilot, app)
        app.screen.tree.select_id("c002")
        await wait_until(pilot, lambda: app.screen.shown_id == "c002", what="c002 shown")
        await pilot.press("slash", *"status:rej")
        visible = {"seed", "c004", "c005"}
        await wait_until(pilot, lambda: app.screen.shown_id in visible, what="a visible node in the detail pane")
        assert app.screen.query_one(TabbedContent).display


async def test_the_diff_tab_says_what_it_is_a_diff_against(recorded_run: Path) -> None:
    app = make_app(recorded_run)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded_app(pilot, app)
        app.screen.tree.select_id("c003")
        await wait_until(pilot, lambda: app.screen.shown_id == "c003", what="c003 shown")
        parent = app.screen.tree.candidates["c003"].parent_ids[0]
        await pilot.press("2")
        await wait_until(pilot, lambda: on_screen(app, f"c003 vs parent {parent}  (t: vs seed)"), what="header")
        await pilot.press("t")
        await wait_until(pilot, lambda: on_screen(app, "c003 vs seed  (t: vs parent)"), what="header vs seed")


async def test_the_compare_diff_says_which_side_is_which(recorded_run: Path) -> None:
    app = make_app(recorded_run)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded_app(pilot, app)
        for cand_id in ("c001", "c002"):
            app.screen.tree.select_id(cand_id)
            await wait_until(pilot, lambda: app.screen.tree.selected_id == cand_id, what=cand_id)  # noqa: B023
            await pilot.press("m")
        await pilot.press("c")
        await wait_until(pilot, lambda: app.screen.query("#cmp-diff-text"), what="compare screen")
        app.screen.query_one(TabbedContent).active = "cmp-diff"
        await wait_until(pilot, lambda: on_screen(app, "c002 → c001  (+ lines: c001, - lines: c002)"), what="header")


def record_verdict(run_dir: Path, cand_id: str, stage: str, reason: str) -> None:
    """Give a rejected candidate the failed verification record core.verify writes."""
    from core.archive import Archive

    Archive.open(run_dir).update(cand_id, verification={"ok": False, "stage": stage, "reason": reason})


async def test_metrics_and_logs_of_a_rejected_node_say_where_and_why(recorded_run: Path) -> None:
    record_verdict(recorded_run, "c005", "smoke", "smoke run crashed: NaN loss")  # c005 is rejected in the run
    app = make_app(recorded_run)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded_app(pilot, app)
        app.screen.tree.select_id("c005")
        await wait_until(pilot, lambda: app.screen.shown_id == "c005", what="c005 shown")
        why = "rejected at the smoke stage"
        await pilot.press("4")
        await wait_until(pilot, lambda: on_screen(app, why), what="the rejection in the Metrics tab")
        assert on_screen(app, "NaN loss")
        await pilot.press("5")
        await wait_until(pilot, lambda: on_screen(app, why), what="the rejection in the Logs tab")
        assert not on_screen(app, "no job logs yet")


def test_why_not_run_of_vetoed_and_of_rejected_without_a_verdict() -> None:
    from types import SimpleNamespace

    from poise_tui.rundata import why_not_run

    vetoed = SimpleNamespace(id="c1", status="vetoed", verification={}, history=[
        {"status": "proposed", "reason": ""}, {"status": "vetoed", "reason": "vetoed by the user"}])
    assert why_not_run(vetoed) == "c1 was vetoed: vetoed by the user"
    lost = SimpleNamespace(id="c2", status="rejected", verification={"ok": True, "stage": "passed"},
                           history=[{"status": "rejected", "reason": "branch cand/c2 missing from the repo"}])
    assert why_not_run(lost) == "c2 was rejected: branch cand/c2 missing from the repo"
    assert why_not_run(SimpleNamespace(id="c3", status="reflected")) == ""


def step_axis_labels(app) -> list[str]:
    """The numbers under the curves plot's bottom axis (the line below its └──┬── line)."""
    lines = screen_lines(app)
    axis = next(i for i, line in enumerate(lines) if "└" in line and "┬" in line.split("└", 1)[-1])
    return lines[axis + 1].split("│")[-1].split()


async def test_curve_step_ticks_are_integers(recorded_run: Path) -> None:
    app = make_app(recorded_run)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded_app(pilot, app)
        await wait_until(pilot, lambda: app.screen.query_one("CurvesView").curves, what="curves")
        await wait_until(pilot, lambda: any("step" in line for line in screen_lines(app)), what="plot drawn")
        labels = step_axis_labels(app)
        assert len(labels) >= 2 and all(label.isdigit() for label in labels), labels


def test_step_ticks_are_a_handful_of_round_integers() -> None:
    from poise_tui.widgets.curves import MAX_STEP_TICKS, step_ticks

    assert step_ticks(1, 40) == [10, 20, 30, 40]
    assert step_ticks(0, 7) == [0, 2, 4, 6]
    assert step_ticks(5, 5) == [5]
    for last in (3, 51, 999, 12_345):
        ticks = step_ticks(1, last)
        assert 1 <= len(ticks) <= MAX_STEP_TICKS and all(1 <= t <= last for t in ticks), (last, ticks)


async def test_rerun_of_a_never_evaluated_node_is_refused_at_once(recorded_run: Path) -> None:
    from core.inbox import pending_commands

    app = make_app(recorded_run)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded_app(pilot, app)
        for cand_id, status in (("c005", "rejected"), ("c007", "verified")):
            app.screen.tree.select_id(cand_id)
            await wait_until(pilot, lambda: app.screen.tree.selected_id == cand_id, what=cand_id)  # noqa: B023
            await pilot.press("r")
            refusal = f"{cand_id} is {status}; only a candidate whose evaluation has finished can be rerun"
            assert any(refusal in str(n.message) for n in app._notifications), refusal
        assert pending_commands(recorded_run) == [], "nothing may reach the engine"


async def test_a_narrow_tree_drops_the_plus_minus_to_leave_room_for_titles(recorded_run: Path) -> None:
    app = make_app(recorded_run)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded_app(pilot, app)
        row = lambda: next(line for line in screen_lines(app) if " c010 " in line)
        await wait_until(pilot, lambda: "kl-k3" in row(), what=f"c010's title readable at 80 columns: {row()!r}")
        assert "±" not in row()
        await pilot.resize_terminal(160, 48)
        await wait_until(pilot, lambda: "±" in row(), what="the ± back in a wide tree")
