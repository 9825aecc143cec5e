"""The main screen against a live run: a ScriptedEngine (in-process, stepped by the test) writes the run."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Log

from poise_tui.dialogs.text_input import TextDialog
from poise_tui.widgets.curves import CurvesView
from poise_tui.widgets.metrics_table import MetricsTable
from poise_tui.widgets.status_bar import StatusBar
from tests.tui.conftest import make_app, wait_until


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
        await pilot.press("p")
        assert live_engine.apply_commands() == ["resume"]


async def test_finished_run_is_read_only(finished_run: Path) -> None:
    app = make_app(finished_run)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.screen.read_only, what="read-only after engine.json says finished")
        await pilot.press("p")
        await pilot.press("r")
        assert not list((finished_run / "inbox").glob("*.json")), "a finished run gets no commands"
        assert any("read-only" in n for n in notes(app))


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


async def test_worker_failure_becomes_error_dialog(recorded_run: Path) -> None:
    (recorded_run / "archive.json").write_text("{not json")
    app = make_app(recorded_run)
    async with app.run_test(size=(80, 24)) as pilot:
        from poise_tui.dialogs.error import ErrorDialog

        await wait_until(pilot, lambda: isinstance(app.screen, ErrorDialog), what="error dialog")
        assert "archive.json" in app.screen.message


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
