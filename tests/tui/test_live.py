"""The main screen against a live run: a ScriptedEngine (in-process, stepped by the test) writes the run."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Log

from poise_tui.app import PoiseApp
from poise_tui.dialogs.error import ErrorDialog
from poise_tui.dialogs.text_input import TextDialog
from poise_tui.widgets.curves import CurvesView
from poise_tui.widgets.metrics_table import MetricsTable
from poise_tui.widgets.status_bar import StatusBar
from tests.tui.conftest import make_app, screen_lines, screen_rows, wait_until
from tests.tui.scripted_engine import ScriptedEngine


def notes(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def loaded(app, pilot, n: int) -> None:
    await wait_until(pilot, lambda: len(app.screen.tree.candidates) >= n, what=f"{n} candidates in the tree")


async def test_tree_grows_and_shows_training_progress(live_engine) -> None:
    app = make_app(live_engine.run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app, pilot, 4)
        cand_id = live_engine.propose()
        await wait_until(pilot, lambda: cand_id in app.screen.tree._node_of, what="new node")
        live_engine.train_step(cand_id, 2)
        label = lambda: str(app.screen.tree._node_of[cand_id].label)
        await wait_until(pilot, lambda: "40%" in label(), what="progress on the training node")
        status = app.screen.query_one(StatusBar)
        assert "running" in str(status.query_one("#engine-state").render())
        live_engine.finish(cand_id)
        await wait_until(pilot, lambda: "★" in label() and "%" not in label(), what="reflected icon")


async def test_curves_and_logs_follow_the_selected_node(live_engine) -> None:
    app = make_app(live_engine.run_dir)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(app, pilot, 4)
        cand_id = live_engine.propose()
        live_engine.train_step(cand_id, 1)
        await wait_until(pilot, lambda: app.screen.tree.select_id(cand_id), what="select new node")
        plot = app.screen.query_one(CurvesView)
        await wait_until(pilot, lambda: plot.curves.get(cand_id, {}).get("accuracy", ([], []))[0] == [1],
                         what="first step")
        assert "baseline" in plot.curves and any(k.startswith("parent") for k in plot.curves)
        live_engine.train_step(cand_id, 2)
        await wait_until(pilot, lambda: plot.curves[cand_id]["accuracy"][0] == [1, 2], what="second step")
        log = app.screen.query_one(Log)
        await pilot.press("5")  # the Log is written only while its tab is open
        await wait_until(pilot, lambda: any("step 2" in line for line in log.lines), what="live log tail")


async def test_fork_is_applied_and_its_outcome_shows(live_engine) -> None:
    app = make_app(live_engine.run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app, pilot, 4)
        app.screen.tree.select_id("c001")
        await pilot.press("f")
        await wait_until(pilot, lambda: isinstance(app.screen, TextDialog), what="fork dialog")
        await pilot.press("enter")
        await wait_until(pilot, lambda: any("fork sent" in n for n in notes(app)), what="sent note")
        assert live_engine.apply_commands() == ["fork"]
        await wait_until(pilot, lambda: any("next proposal forks c001" in n for n in notes(app)), what="outcome")
        child = live_engine.propose()
        await wait_until(pilot, lambda: child in app.screen.tree._node_of, what="forked child")
        assert app.screen.tree._node_of[child].parent.data == "c001"


async def test_failed_command_outcome_is_an_error_note(live_engine) -> None:
    app = make_app(live_engine.run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app, pilot, 4)
        app.screen.tree.select_id("c001")  # reflected: the engine refuses a veto
        await wait_until(pilot, lambda: app.screen.tree.selected_id == "c001")
        app.screen._send("veto", id="c001")  # (the key refuses it earlier; test the engine's refusal)
        live_engine.apply_commands()
        await wait_until(pilot, lambda: any("cannot veto" in n for n in notes(app)), what="refusal shown")
        assert any(n.severity == "error" for n in app._notifications)


async def test_pause_toggles_with_engine_state(live_engine) -> None:
    app = make_app(live_engine.run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app, pilot, 4)
        await pilot.press("p")
        live_engine.apply_commands()
        await wait_until(pilot, lambda: app.screen.engine_state.state == "paused", what="paused")
        assert app.screen.active_bindings["p"].binding.description == "Resume", "the footer says what p does now"
        await pilot.press("p")
        assert live_engine.apply_commands() == ["resume"]


def engine_label(app) -> str:
    return str(app.screen.query_one("#engine-state").render())


async def test_finished_run_is_read_only(finished_run: Path) -> None:
    app = make_app(finished_run)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.screen.read_only, what="read-only after engine.json says finished")
        await pilot.press("p")
        await pilot.press("r")
        assert not list((finished_run / "inbox").glob("*.json")), "a finished run gets no commands"
        assert any("read-only" in n for n in notes(app))
        assert any(f"poise run {finished_run} --budget N" in n for n in notes(app)), "say how to resume it"


async def test_a_finished_run_resumed_by_a_new_engine_can_be_steered(finished_run: Path) -> None:
    app = make_app(finished_run)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: "finished (read-only)" in engine_label(app), what="finished, read-only")
        engine = ScriptedEngine(finished_run).start()  # what `poise run RUN --budget 16 --detach` does
        try:
            await wait_until(pilot, lambda: engine_label(app) == "running", what="running, no longer read-only")
            await pilot.press("p")
            assert engine.apply_commands() == ["pause"]
        finally:
            engine.close()


async def test_fork_on_a_finished_run_is_refused_before_its_dialog(finished_run: Path) -> None:
    app = make_app(finished_run)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.screen.read_only and len(app.screen.tree.candidates) == 13,
                         what="finished run loaded")
        app.screen.tree.select_id("c001")
        await wait_until(pilot, lambda: app.screen.tree.selected_id == "c001")
        await pilot.press("f")
        await wait_until(pilot, lambda: any(n.startswith("fork: the run is finished") for n in notes(app)),
                         what="the refusal")
        assert not isinstance(app.screen, TextDialog), "no dialog whose directive would be thrown away"


async def test_read_only_flag_outlasts_a_running_engine(live_engine) -> None:
    app = make_app(live_engine.run_dir, read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: engine_label(app) == "running (read-only)", what="watch-only status")
        await pilot.press("p")
        assert live_engine.apply_commands() == []
        assert any("--read-only" in n for n in notes(app))


async def test_metrics_tab_has_paired_differences(recorded_run: Path) -> None:
    app = make_app(recorded_run)
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded(app, pilot, 13)
        app.screen.tree.select_id("c002")
        await pilot.press("4")  # tabs are filled when opened
        table = app.screen.query_one(MetricsTable)
        await wait_until(pilot, lambda: app.screen.shown_id == "c002", what="c002 in the detail pane")
        await wait_until(pilot, lambda: table.row_count == 8, what="2 parts x (overall + 3 splits)")
        row = table.get_row_at(0)
        assert row[:2] == ["selection", "overall"]
        assert row[4].startswith(("+", "-")) and "[" in row[4], f"paired CI vs parent, got {row[4]!r}"


async def test_dead_engine_is_shown(live_engine) -> None:
    app = make_app(live_engine.run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app, pilot, 4)
        live_engine.lock.release()  # the engine vanishes without saying so: engine.json still says running
        state = app.screen.query_one("#engine-state")
        await wait_until(pilot, lambda: "dead" in str(state.render()), timeout=15, what="dead engine")


async def test_worker_failure_becomes_error_dialog(recorded_run: Path, monkeypatch) -> None:
    """The screen's and the app's workers both end in an error dialog (WorkerErrors on each)."""
    from poise_tui.rundata import TuiError

    def no_report(run_dir: Path) -> str:
        raise TuiError("`poise report` failed: no plots")

    def no_engine(run_dir: Path, command: list[str]) -> int:
        raise TuiError("cannot start the engine: no python")

    monkeypatch.setattr("poise_tui.screens.steering.run_report", no_report)
    monkeypatch.setattr("poise_tui.app.start_engine", no_engine)
    app = PoiseApp(recorded_run, start_engine=True, poll_s=0.02)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, ErrorDialog), what="the engine starter's failure")
        assert app.screen.message == "cannot start the engine: no python"
        await pilot.press("escape")
        await loaded(app, pilot, 13)
        await pilot.press("o")
        await wait_until(pilot, lambda: isinstance(app.screen, ErrorDialog), what="the report worker's failure")
        assert app.screen.message == "`poise report` failed: no plots"


async def test_unreadable_archive_is_explained_and_starts_no_engine(recorded_run: Path, monkeypatch) -> None:
    started: list[list[str]] = []
    monkeypatch.setattr("poise_tui.app.start_engine", lambda run_dir, command: started.append(command) or 4242)
    archive = recorded_run / "archive.json"
    good = archive.read_bytes()
    archive.write_text("{not json")
    app = PoiseApp(recorded_run, start_engine=True, poll_s=0.02)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, ErrorDialog), what="error dialog")
        assert "archive.json" in app.screen.message
        await wait_until(pilot, lambda: all(w.is_finished for w in app.workers if w.group == "engine"),
                         what="the engine starter done")
        assert started == [], "an engine would die at once on the same file"
        assert not any("engine" in n for n in notes(app))
        await pilot.press("escape")
        problem = app.screen.query_one("#problem")
        await wait_until(pilot, lambda: problem.display and "archive.json unreadable" in str(problem.render()),
                         what="the problem in the status bar")
        await wait_until(pilot, lambda: engine_label(app) == "stopped", what="the engine state, still watched")
        restored = archive.with_suffix(".restored")
        restored.write_bytes(good)
        restored.replace(archive)  # restored while the TUI is open (whole, as the engine writes it)
        await wait_until(pilot, lambda: len(app.screen.tree.candidates) == 13, what="the archive read again")
        assert not problem.display


async def test_why_the_engine_stopped_is_shown_once(recorded_run: Path) -> None:
    from core.runstate import EngineState, write_state

    why = "recipe math is not ready on this machine:\n  - [math].model_path is empty"
    write_state(recorded_run, EngineState(state="stopped", message=f"error: {why}"))
    app = make_app(recorded_run)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: why in notes(app), what="the engine's error as a notification")
        write_state(recorded_run, EngineState(state="stopped", message=f"error: {why}", candidates_done=1))
        await wait_until(pilot, lambda: app.screen.engine_state.candidates_done == 1, what="engine.json re-read")
        assert notes(app).count(why) == 1  # the same error is not repeated on every poll



async def test_progress_bar_shows_only_while_a_stage_runs(live_engine) -> None:
    from core.runstate import EngineState, write_state

    app = make_app(live_engine.run_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app, pilot, 4)
        cand_id = live_engine.propose()
        live_engine.train_step(cand_id, 2)
        bar, stage = app.screen.query_one("#stage-progress"), app.screen.query_one("#stage")
        await wait_until(pilot, lambda: f"train {cand_id}" in str(stage.render()) and bar.display, what="training")
        # what Engine.run publishes last when the budget is spent
        write_state(live_engine.run_dir, EngineState(state="finished", stage="idle", candidate="", progress=0.0))
        await wait_until(pilot, lambda: app.screen.engine_state.state == "finished", what="engine.json re-read")
        await pilot.pause()
        assert not bar.display and cand_id not in str(stage.render())


def diff_viewport(app, widget_id: str):
    """The screen region of the scroll area that shows the diff widget `widget_id`."""
    return app.screen.query_one(f"#{widget_id}").parent.region


def diff_header_shown(app, widget_id: str) -> bool:
    return any(line.startswith("diff --git") for line in screen_lines(app, diff_viewport(app, widget_id)))


def unreadable_segments(app, widget_id: str) -> list[tuple[str, str]]:
    """Text of the diff drawn in its background color (or with no color of its own)."""
    return [(text, str(style)) for row in screen_rows(app, diff_viewport(app, widget_id)) for text, style in row
            if text.strip() and (style.color is None or style.color == style.bgcolor)]


async def test_every_diff_line_is_readable(recorded_run: Path) -> None:
    app = make_app(recorded_run)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app, pilot, 13)
        app.screen.tree.select_id("c001")
        await wait_until(pilot, lambda: app.screen.shown_id == "c001", what="c001 in the detail pane")
        await pilot.press("2")
        await wait_until(pilot, lambda: diff_header_shown(app, "diff-text"), what="the diff header line on screen")
        assert unreadable_segments(app, "diff-text") == []


async def test_every_compare_diff_line_is_readable(recorded_run: Path) -> None:
    from poise_tui.screens.compare import CompareScreen

    app = make_app(recorded_run)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app, pilot, 13)
        for cand_id in ("c001", "c002"):
            app.screen.tree.select_id(cand_id)
            await wait_until(pilot, lambda c=cand_id: app.screen.tree.selected_id == c, what=f"cursor on {cand_id}")
            await pilot.press("m")
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen), what="compare screen")
        app.screen.query_one("#compare-tabs").active = "cmp-diff"
        await wait_until(pilot, lambda: diff_header_shown(app, "cmp-diff-text"),
                         what="the compare diff's header line on screen")
        assert unreadable_segments(app, "cmp-diff-text") == []
