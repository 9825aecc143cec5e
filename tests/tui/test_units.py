"""Unit tests of the TUI's plain-Python parts: reading runs, change tracking, filters, launching engines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.errors import RunDirError
from core.runstate import EngineState, engine_alive, write_state
from poise_tui.launcher import check_run_dir, engine_command, most_recent_run, needs_engine, resume_budget
from poise_tui.pairing import paired_text
from poise_tui.rundata import RunReader, average_curve, per_seed, score_of, tail
from poise_tui.watch import ChangeTracker, dir_stamp, stamp
from poise_tui.widgets.archive_tree import matches
from poise_tui.widgets.status_bar import queue_text, speed_text
from tests.tui.runbuilder import build_run

ROOT = Path(__file__).resolve().parents[2]


def test_average_curve_over_seeds_skips_missing_and_nan() -> None:
    runs = [[{"step": 1, "accuracy": 0.2}, {"step": 2, "accuracy": 0.4}],
            [{"step": 1, "accuracy": 0.4}, {"step": 2, "accuracy": float("nan")}]]
    curve = average_curve(runs)
    assert curve["accuracy"][0] == [1, 2]
    assert curve["accuracy"][1] == pytest.approx([0.3, 0.4])
    assert "kl" not in curve


def test_the_filter_kept_fraction_is_a_curve() -> None:
    """A filter that starves training shows as kept_frac falling to 0 (the trainer then makes no update)."""
    curve = average_curve([[{"step": 1, "kept_frac": 0.5}, {"step": 2, "kept_frac": 0.0}]])
    assert curve["kept_frac"] == ([1, 2], [0.5, 0.0])


def test_tail_reads_only_the_end(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(10_000)))
    assert tail(log, 2) == "line 9998\nline 9999"
    assert tail(tmp_path / "missing.log", 5) == ""


def test_tail_keeps_what_a_progress_bar_left_on_screen(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    log.write_bytes(b"loading\r\n" + b"".join(b"\rtrain %3d%%|bar|" % p for p in range(0, 101, 10)) + b"\ndone\n")
    assert tail(log, 10) == "loading\ntrain 100%|bar|\ndone"


def test_log_tail_puts_the_log_written_last_at_the_bottom(tmp_path: Path) -> None:
    job = tmp_path / "jobs" / "c001" / "0"
    job.mkdir(parents=True)
    (job / "stderr.log").write_text("old warning\n")
    (job / "stdout.log").write_text("step 40 reward 0.5\n")
    os.utime(job / "stderr.log", (1_000, 1_000))
    assert RunReader(tmp_path).log_tail("c001").splitlines()[-1] == "step 40 reward 0.5"
    os.utime(job / "stdout.log", (500, 500))  # the progress bar on stderr is the newest output now
    assert RunReader(tmp_path).log_tail("c001").splitlines()[-1] == "old warning"
    assert RunReader(tmp_path).log_tail("c999") == ""


def test_score_and_per_seed_accept_dict_and_list() -> None:
    cand = SimpleNamespace(seeds=[3, 4], metrics={"selection": {"overall": {
        "mean": 0.5, "lo": 0.4, "hi": 0.7, "n": 2, "per_seed": [0.4, 0.6]}}})
    assert score_of(cand).half == pytest.approx(0.15)
    assert per_seed(cand, "selection", "overall") == {"3": 0.4, "4": 0.6}
    assert score_of(cand, "heldout") is None


def test_paired_text_uses_shared_seeds_only() -> None:
    assert paired_text({"0": 0.5, "1": 0.6}, {"0": 0.4, "1": 0.5, "2": 0.9}).startswith("+10.0")
    assert paired_text({"0": 0.5}, {"1": 0.4}) == "no shared seeds"
    assert paired_text({}, {"1": 0.4}) == "—"


def test_change_tracker_sees_growth_and_replacement(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    tracker = ChangeTracker()
    assert tracker.changed("m", stamp(path))          # first look always reports
    assert not tracker.changed("m", stamp(path))
    path.write_text("a\n")
    assert tracker.changed("m", stamp(path))
    (tmp_path / "sub").mkdir()
    assert tracker.changed("d", dir_stamp(tmp_path, "*/x.json"))
    (tmp_path / "sub" / "x.json").write_text("{}")
    assert tracker.changed("d", dir_stamp(tmp_path, "*/x.json"))


def test_filter_words() -> None:
    cand = SimpleNamespace(id="c004", title="VM-AV", status="reflected", tags=["validity-mask"],
                           proposal={"mechanism": "analytic variance"})
    assert matches(cand, "status:refl tag:valid")
    assert matches(cand, "analytic")
    assert not matches(cand, "status:rejected")
    assert not matches(cand, "tag:kl")


def test_reader_on_a_recorded_run(tmp_path: Path) -> None:
    run = build_run(tmp_path / "r", n=8, steps=8)
    reader = RunReader(run)
    ids = [c.id for c in reader.candidates()]
    assert ids == ["seed"] + [f"c00{i}" for i in range(1, 9)]
    assert reader.curve("c001")["accuracy"][0] == list(range(1, 9))
    assert "step 8" in reader.log_tail("c001")
    assert reader.finished()
    assert "+# c001: validity-mask" in reader.diff("c001")
    assert "+# c001" in reader.diff("c008", against="seed") and "+# c001" not in reader.diff("c008")


def test_diff_without_a_repo_says_why(tmp_path: Path) -> None:
    run = build_run(tmp_path / "r", n=1, steps=2, repo=False)
    assert RunReader(run).diff("c001").startswith("# no repo/")


def test_reader_before_the_archive_exists(tmp_path: Path) -> None:
    assert RunReader(tmp_path).candidates() == []


def test_a_file_of_a_run_opens_that_run(tmp_path: Path) -> None:
    run = build_run(tmp_path / "run1", n=1, repo=False)
    assert check_run_dir(run / "run.toml") == run.resolve()
    assert check_run_dir(run / "jobs" / "seed" / "0" / "stdout.log") == run.resolve()


def test_a_file_outside_any_run_is_named_a_file(tmp_path: Path) -> None:
    stray = tmp_path / "notes" / "run.toml.bak"
    stray.parent.mkdir()
    stray.write_text("")
    with pytest.raises(RunDirError, match=f"is a file, not a run directory; did you mean poise-tui {stray.parent}"):
        check_run_dir(stray)


def test_most_recent_run_and_checks(tmp_path: Path) -> None:
    assert most_recent_run(tmp_path / "none") is None
    old, new = build_run(tmp_path / "old", n=1), build_run(tmp_path / "new", n=1)
    os.utime(old / "engine.json", (time.time() + 100, time.time() + 100))
    assert most_recent_run(tmp_path) == old
    assert check_run_dir(new) == new.resolve()
    with pytest.raises(RunDirError, match="poise init"):
        check_run_dir(tmp_path)
    assert not needs_engine(old), "a finished run gets no engine"
    (old / "engine.json").write_text(json.dumps({"state": "stopped"}))
    assert needs_engine(old)
    (old / "archive.json").write_text("{not json")
    assert not needs_engine(old), "an engine started on an unreadable archive would die at once"


def test_a_stopped_run_resumes_with_its_last_engines_budget(tmp_path: Path) -> None:
    run = build_run(tmp_path / "r", n=2, steps=2, state="stopped", repo=False)
    write_state(run, EngineState(state="stopped", candidates_budget=4))  # `poise run RUN --budget 4`, then stop
    assert resume_budget(run) == 4
    assert engine_command(run, resume_budget(run))[-5:] == ["run", str(run), "--detach", "--budget", "4"]
    write_state(run, EngineState(state="stopped", candidates_budget=0))  # no candidate limit: run.toml decides
    assert resume_budget(run) is None
    assert "--budget" not in engine_command(run, resume_budget(run))
    (run / "engine.json").unlink()  # no engine has run yet
    assert resume_budget(run) is None


def test_status_bar_speed_only_in_llm_stages() -> None:
    assert speed_text(EngineState(state="running", stage="propose", llm_tokens_per_s=90.2)) == " 90 tok/s"
    assert speed_text(EngineState(state="running", stage="train", llm_tokens_per_s=90.2)) == ""
    assert speed_text(EngineState(state="stopped", stage="idle", llm_tokens_per_s=90.2)) == ""


def test_status_bar_queue_leaves_out_the_item_in_progress() -> None:
    queue = ["rerun c004", "fork c002"]
    assert queue_text(EngineState(state="running", stage="train", candidate="c004", queue=queue)) == " q:fork c002"
    assert queue_text(EngineState(state="running", stage="train", candidate="c009", queue=queue)) == \
        " q:rerun c004,fork c002"
    assert queue_text(EngineState(state="stopped", stage="idle", queue=queue)) == " q:rerun c004,fork c002"


def test_engine_started_by_the_tui_outlives_it(tmp_path: Path) -> None:
    """start_engine detaches (new session): SIGKILL of the TUI's whole process group leaves the engine running."""
    run = build_run(tmp_path / "r", n=2, steps=5, state="stopped")
    code = ("import sys, time; from poise_tui.launcher import start_engine; "
            f"start_engine({str(run)!r}, [sys.executable, '-m', 'tests.tui.scripted_engine', {str(run)!r}, "
            "'--step-s', '0.1', '--steps', '5']); time.sleep(60)")
    tui = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not engine_alive(run):
            assert time.monotonic() < deadline, "engine never took the lock"
            time.sleep(0.1)
        os.killpg(tui.pid, signal.SIGKILL)
        tui.wait(timeout=10)
        pid = json.loads((run / "engine.lock").read_text())["pid"]
        size = (run / "archive.json").stat().st_size
        deadline = time.monotonic() + 30
        while (run / "archive.json").stat().st_size == size:
            assert time.monotonic() < deadline, "engine stopped writing after the TUI died"
            time.sleep(0.1)
        assert engine_alive(run)
    finally:
        lock = json.loads((run / "engine.lock").read_text()) if (run / "engine.lock").exists() else {}
        if lock.get("pid"):
            os.kill(int(lock["pid"]), signal.SIGTERM)
    assert pid > 0


def test_tui_import_path_is_light() -> None:
    """No torch/transformers/trl/llama_cpp/sklearn/matplotlib on the TUI's import path (cold start)."""
    heavy = ["torch", "transformers", "trl", "llama_cpp", "sklearn", "matplotlib", "vllm"]
    code = ("import sys, poise_tui.app, poise_tui.__main__; "
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


async def test_tree_orders_siblings_by_time_then_overall(tmp_path: Path) -> None:
    from poise_tui.widgets.archive_tree import ArchiveTree
    from tests.tui.conftest import make_app, wait_until

    run = build_run(tmp_path / "r", n=12, steps=2, repo=False)
    app = make_app(run)
    async with app.run_test(size=(80, 24)) as pilot:
        tree = app.screen.query_one(ArchiveTree)
        await wait_until(pilot, lambda: len(tree._node_of) == 13, what="tree built")
        kids = [n.data for n in tree._node_of["c001"].children]
        assert kids == ["c008", "c012"], "time order is numeric (c008 at t=9 before c012 at t=13)"
        tree.toggle_sort()
        await wait_until(pilot, lambda: len(tree._node_of) == 13, what="rebuilt")
        kids = [n.data for n in tree._node_of["seed"].children]
        scores = [tree.candidates[k].score() for k in kids]
        assert scores == sorted(scores, reverse=True) and kids != ["c001", "c002", "c003", "c004"]
