"""Every key in the help screen does what it says, in a pilot test over a real recorded run.

Parametrized over MAIN_BINDINGS (the list the help screen is generated from): a new binding
without an entry in CHECKS fails here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, TabbedContent

from core.inbox import pending_commands
from poise_tui.dialogs.error import ErrorDialog
from poise_tui.dialogs.text_input import TextDialog
from poise_tui.keys import MAIN_BINDINGS, help_text
from poise_tui.rundata import CURVE_METRICS, score_of
from poise_tui.screens.compare import CompareScreen
from poise_tui.screens.help import HelpScreen
from poise_tui.screens.report import ReportScreen
from poise_tui.widgets.curves import CurvesView
from tests.tui.conftest import make_app, screen_lines, wait_until
from tests.tui.scripted_engine import ScriptedEngine

Check = Callable[..., Awaitable[None]]


def sent(run_dir: Path) -> list[tuple[str, dict]]:
    return [(c["name"], c["args"]) for c in pending_commands(run_dir)]


async def check_help(app, pilot, run_dir):
    """Every key is listed, and at 80x24 (too short for all of them) the last ones scroll into view."""
    await pilot.press("question_mark")
    await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help screen")
    first, last = help_text(MAIN_BINDINGS[0]), help_text(MAIN_BINDINGS[-1])
    shown = lambda text: any(text in line for line in screen_lines(app))
    await wait_until(pilot, lambda: shown(first), what="the first key on screen")
    assert not shown(last), "this check needs a screen too short for every key"
    texts = {help_text(b) for b in MAIN_BINDINGS}
    seen = {t for t in texts if shown(t)}
    for key in ("pagedown", "pagedown", "pagedown", "end"):
        await pilot.press(key)
        await pilot.pause()
        seen |= {t for t in texts if shown(t)}
    assert shown(last), f"{last!r} cannot be scrolled into view:\n" + "\n".join(screen_lines(app))
    assert seen == texts, f"never on screen: {texts - seen}"
    await pilot.press("escape")
    await wait_until(pilot, lambda: not isinstance(app.screen, HelpScreen), what="help closed")


async def check_detach(app, pilot, run_dir):
    await pilot.press("q")
    await wait_until(pilot, lambda: app._exit, what="app exit")
    assert sent(run_dir) == [], "plain quit must not stop the engine"


async def check_quit_and_stop(app, pilot, run_dir):
    await pilot.press("Q")
    await wait_until(pilot, lambda: sent(run_dir), what="stop command")
    assert sent(run_dir) == [("stop", {})]


def footer_label(app, key: str) -> str:
    """The footer's word for a key: what the screen has bound to it now."""
    return app.screen.active_bindings[key].binding.description


async def check_pause(app, pilot, run_dir):
    assert footer_label(app, "p") == "Pause"
    await pilot.press("p")
    assert sent(run_dir) == [("pause", {})]


async def check_resume(app, pilot, run_dir):
    engine = ScriptedEngine(run_dir).start()  # holds the lock, so engine.json's "paused" is believed
    try:
        engine.state.state = "paused"
        engine.publish()
        await wait_until(pilot, lambda: footer_label(app, "p") == "Resume", what="the footer offering Resume")
        await pilot.press("p")
        assert sent(run_dir) == [("resume", {})]
    finally:
        engine.close()


async def check_fork(app, pilot, run_dir):
    await select(app, pilot, "c002")
    await pilot.press("f")
    await wait_until(pilot, lambda: isinstance(app.screen, TextDialog), what="fork dialog")
    await pilot.press(*"shorter")
    await pilot.press("enter")
    await wait_until(pilot, lambda: sent(run_dir), what="fork command")
    assert sent(run_dir) == [("fork", {"id": "c002", "directive": "shorter"})]


async def check_rerun(app, pilot, run_dir):
    await select(app, pilot, "c001")
    await pilot.press("r")
    ((name, args),) = sent(run_dir)
    assert name == "rerun" and args["id"] == "c001"
    assert len(args["seeds"]) == 3 and not set(args["seeds"]) & {0, 1, 2}, "rerun must use new seeds"


async def check_veto(app, pilot, run_dir):
    await select(app, pilot, "c007")  # status verified in the recorded run
    await pilot.press("v")
    assert sent(run_dir) == [("veto", {"id": "c007"})]


async def check_mark(app, pilot, run_dir):
    await select(app, pilot, "c003")
    await pilot.press("m")
    assert app.screen.tree.marked == ["c003"]
    assert "◆" in str(app.screen.tree._node_of["c003"].label)


async def check_compare(app, pilot, run_dir):
    for cid in ("c001", "c002"):
        await select(app, pilot, cid)
        await pilot.press("m")
    await pilot.press("c")
    await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen), what="compare screen")
    table = app.screen.query_one(DataTable)
    await wait_until(pilot, lambda: table.row_count > 0, what="compare table")
    assert "Δ c002" in [str(c.label) for c in table.columns.values()]


async def check_directive(app, pilot, run_dir):
    await pilot.press("d")
    await wait_until(pilot, lambda: isinstance(app.screen, TextDialog), what="directive dialog")
    await pilot.press(*"short")
    await pilot.press("enter")
    await wait_until(pilot, lambda: sent(run_dir), what="set_directive")
    assert sent(run_dir) == [("set_directive", {"directive": "short"})]


async def check_report(app, pilot, run_dir):
    await pilot.press("o")
    done = lambda: isinstance(app.screen, (ReportScreen, ErrorDialog))
    await wait_until(pilot, done, timeout=120, what="report (poise report runs in a worker)")
    assert isinstance(app.screen, ReportScreen), getattr(app.screen, "message", "")
    assert "c001" in app.screen.markdown


async def check_best(app, pilot, run_dir):
    await pilot.press("b")
    cands = app.screen.tree.candidates.values()
    best = max((score_of(c).mean, c.id) for c in cands if score_of(c) is not None)[1]
    assert app.screen.tree.selected_id == best


async def check_filter(app, pilot, run_dir):
    await pilot.press("slash")
    box = app.screen.query_one("#filter", Input)
    assert box.has_focus
    await pilot.press(*"status:rej")
    await wait_until(pilot, lambda: "c005" in app.screen.tree._node_of, what="filtered tree")
    assert set(app.screen.tree._node_of) == {"seed", "c004", "c005"}  # match + its ancestors


async def check_sort(app, pilot, run_dir):
    await pilot.press("s")
    tree = app.screen.tree
    assert tree.sort_by == "overall"
    kids = [n.data for n in tree._node_of["seed"].children]
    scores = [score_of(tree.candidates[k]).mean if score_of(tree.candidates[k]) else -1 for k in kids]
    assert scores == sorted(scores, reverse=True)


async def check_toggle_node(app, pilot, run_dir):
    await select(app, pilot, "c001")
    node = app.screen.tree.cursor_node
    assert node.is_expanded
    await pilot.press("x")
    assert not node.is_expanded


async def check_diff_against(app, pilot, run_dir):
    await select(app, pilot, "c001")
    await pilot.press("t")
    assert app.screen.diff_against == "seed"
    assert app.screen.query_one(TabbedContent).active == "diff"
    await wait_until(pilot, lambda: app.screen.diff_shown[:2] == ("c001", "seed"), what="diff vs seed loaded")
    assert "+# c001: validity-mask" in app.screen.diff_shown[2]


async def check_metric(app, pilot, run_dir, step):
    plot = app.screen.query_one(CurvesView)
    before = plot.metric_index
    await pilot.press("right_square_bracket" if step > 0 else "left_square_bracket")
    assert plot.metric_index == (before + step) % len(CURVE_METRICS)


async def check_tab_key(app, pilot, run_dir, *, tab, key):
    await pilot.press(key)
    assert app.screen.query_one(TabbedContent).active == tab


async def select(app, pilot, cand_id: str) -> None:
    assert app.screen.tree.select_id(cand_id)
    await wait_until(pilot, lambda: app.screen.tree.selected_id == cand_id, what=f"cursor on {cand_id}")


CHECKS: dict[str, Callable] = {
    "help": check_help, "detach": check_detach, "quit_and_stop": check_quit_and_stop,
    "pause": check_pause, "resume": check_resume, "fork": check_fork, "rerun": check_rerun, "veto": check_veto,
    "mark": check_mark, "compare": check_compare, "directive": check_directive, "report": check_report,
    "best": check_best, "filter": check_filter, "sort": check_sort, "toggle_node": check_toggle_node,
    "diff_against": check_diff_against,
    "metric(-1)": lambda a, p, r: check_metric(a, p, r, -1), "metric(1)": lambda a, p, r: check_metric(a, p, r, 1),
    **{f"tab('{t}')": partial(check_tab_key, tab=t, key=str(i + 1))
       for i, t in enumerate(("curves", "diff", "proposal", "metrics", "logs"))},
}


@pytest.mark.parametrize("binding", MAIN_BINDINGS, ids=lambda b: b.key)
async def test_binding(binding, recorded_run: Path) -> None:
    assert binding.action in CHECKS, f"binding {binding.key} -> {binding.action} has no pilot test in CHECKS"
    app = make_app(recorded_run, read_only=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: len(app.screen.tree.candidates) == 13, what="archive loaded")
        await CHECKS[binding.action](app, pilot, recorded_run)


async def test_best_prefers_a_candidate_confirmed_on_fresh_seeds(recorded_run: Path) -> None:
    from core.archive import Archive
    from core.elites import mark_confirmed

    cands = Archive.open(recorded_run, readonly=True).all()
    ranked = sorted(((score_of(c).mean, c.id) for c in cands if score_of(c) is not None and c.id != "seed"),
                    reverse=True)
    runner_up = ranked[1][1]  # not the top by selection: only the confirmation can make `b` pick it
    mark_confirmed(Archive.open(recorded_run), runner_up)
    app = make_app(recorded_run, read_only=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: len(app.screen.tree.candidates) == 13, what="archive loaded")
        await pilot.press("b")
        assert app.screen.tree.selected_id == runner_up
