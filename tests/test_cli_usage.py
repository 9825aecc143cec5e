"""`poise` mistakes a user can make at the command line: each is one clear line on stderr and a non-zero exit,
never a traceback, and nothing is queued or changed. Runs are made by `poise init` (no engine, no training);
`poise` runs in-process, except where the test is about the process itself (a closed stdout)."""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

import pytest
from engine_support import PY, ROOT

from core.archive import Archive
from core.cli import build_parser, init_run, main
from core.config import load_config, save_config
from core.inbox import pending_commands, send_command
from core.lock import EngineLock


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return init_run(tmp_path / "run")


def poise(capsys, *args: object) -> tuple[int, str, str]:
    """`poise ARGS` in-process: (exit code, stdout, stderr); argparse's usage errors exit via SystemExit."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def refused(capsys, *args: object) -> str:
    """Run `poise ARGS`, which must fail cleanly: exit 2 and one `poise: error:` line."""
    code, _, err = poise(capsys, *args)
    assert code == 2, (code, err)
    assert "Traceback" not in err
    assert err.startswith("poise: error: ") and err.count("\n") == 1, err
    return err


def usage_error(capsys, *args: object) -> str:
    """Run `poise ARGS`, which argparse must reject: exit 2, the usage line, then one error line."""
    code, _, err = poise(capsys, *args)
    assert code == 2 and "Traceback" not in err, (code, err)
    return err.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------------- --seeds, --budget


@pytest.mark.parametrize("value", ["a,b", "0,,1", "1.5", "", "0,0"])
def test_eval_seeds_must_be_distinct_integers(capsys, run: Path, value: str) -> None:
    line = usage_error(capsys, "eval", run, "seed", "--seeds", value)
    assert line.startswith("poise eval: error: argument --seeds: ")
    assert f"got {value!r}" in line
    assert Archive.open(run, readonly=True).get("seed").status == "implemented"  # nothing was evaluated


def test_send_seeds_must_be_integers(capsys, run: Path) -> None:
    line = usage_error(capsys, "send", run, "rerun", "--id", "seed", "--seeds", "x,y")
    assert line == "poise send: error: argument --seeds: expected comma-separated integers, got 'x,y'"
    assert pending_commands(run) == []
    code, _, _ = poise(capsys, "send", run, "rerun", "--id", "seed", "--seeds", "3,4")
    assert code == 0
    assert [c["args"] for c in pending_commands(run)] == [{"id": "seed", "seeds": [3, 4]}]


@pytest.mark.parametrize("value, says", [("-1", "must be >= 0 (0 = no limit), got -1"),
                                         ("many", "expected a number of candidates, got 'many'")])
def test_run_budget_must_be_a_count(capsys, run: Path, value: str, says: str) -> None:
    assert usage_error(capsys, "run", run, "--budget", value) == f"poise run: error: argument --budget: {says}"
    assert not (run / "engine.lock").exists()


# ------------------------------------------------------------------------------------------- poise add


def test_add_names_a_file_it_cannot_read(capsys, run: Path, tmp_path: Path) -> None:
    err = refused(capsys, "add", run, tmp_path / "nonexistent.py", "--parent", "seed", "--title", "x")
    assert err == f"poise: error: cannot read {tmp_path / 'nonexistent.py'}: No such file or directory\n"
    err = refused(capsys, "add", run, tmp_path, "--parent", "seed", "--title", "x")
    assert f"cannot read {tmp_path}: Is a directory" in err
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    assert "not a text file" in refused(capsys, "add", run, binary, "--parent", "seed", "--title", "x")
    assert [c.id for c in Archive.open(run, readonly=True).all()] == ["seed"]


@pytest.mark.parametrize("source, says", [
    ("def policy_loss(:\n    pass\n", "line 1: invalid syntax"),
    ("x = 1\n\nif x:\nreturn x\n", "line 4: expected an indented block after 'if' statement on line 3"),
    ("x = 1\0\n", "source code string cannot contain null bytes"),
])
def test_add_refuses_a_file_that_is_not_python(capsys, run: Path, tmp_path: Path, source: str, says: str) -> None:
    """It used to be recorded as `implemented` and rejected only by `poise verify`; nothing is recorded now."""
    broken = tmp_path / "broken.py"
    broken.write_text(source)
    err = refused(capsys, "add", run, broken, "--parent", "seed", "--title", "x")
    assert err == f"poise: error: {broken} is not valid Python ({says}); nothing was added\n"
    assert [c.id for c in Archive.open(run, readonly=True).all()] == ["seed"]
    assert "cand/c001" not in subprocess.run(["git", "-C", str(run / "repo"), "branch", "--list"], text=True,
                                             capture_output=True, check=True).stdout


# ------------------------------------------------------------------------------------------- poise diff


def test_diff_of_the_seed_shows_its_algorithm_as_added(capsys, run: Path, tmp_path: Path) -> None:
    """The seed has no parent: its diff was empty, which reads as "no change". Like `git show` of a root commit,
    every line is added, and the patch applied to nothing gives back the seed's algorithm.py."""
    code, out, err = poise(capsys, "diff", run, "seed")
    assert (code, err) == (0, "")
    assert out.startswith("diff --git a/algorithm.py b/algorithm.py\nnew file mode 100644\n"
                          "--- /dev/null\n+++ b/algorithm.py\n@@ -0,0 +1,")
    empty = tmp_path / "empty"
    empty.mkdir()
    subprocess.run(["git", "apply", "-"], cwd=empty, input=out, text=True, check=True)
    seed = subprocess.run(["git", "-C", str(run / "repo"), "show", "cand/seed:algorithm.py"], text=True,
                          capture_output=True, check=True).stdout
    assert (empty / "algorithm.py").read_text() == seed


# ------------------------------------------------------------------------------------------- a closed stdout


@pytest.mark.parametrize("args", [["mechanisms"], ["status", "RUN"], ["show", "RUN", "seed"], ["lineage", "RUN"]])
def test_a_closed_stdout_ends_quietly(run: Path, args: list[str]) -> None:
    """`poise show RUN seed | head`: the reader is gone before poise writes. The read end is closed before
    poise starts, so every write fails with EPIPE: the same outcome on every run, no timing involved."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([PY, "-m", "core.cli", *[str(run) if a == "RUN" else a for a in args]], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=120, check=False)
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (1, "")


# ------------------------------------------------------------------------------------------- poise send


def test_pause_and_stop_need_a_running_engine(capsys, run: Path) -> None:
    err = refused(capsys, "send", run, "pause")
    assert err == f"poise: error: no engine is running on {run}: there is no engine to pause\n"
    assert "there is nothing to stop" in refused(capsys, "send", run, "stop")
    assert pending_commands(run) == []
    lock = EngineLock(run).acquire()  # what `poise run` holds while it runs: this process stands in for it
    try:
        code, out, err = poise(capsys, "send", run, "pause")
    finally:
        lock.release()
    assert (code, err) == (0, "")  # an engine to pause: sent, and no warning
    assert [(c["id"], c["name"]) for c in pending_commands(run)] == [(out.strip(), "pause")]


def test_other_commands_are_queued_with_a_warning_when_no_engine_runs(capsys, run: Path) -> None:
    code, out, err = poise(capsys, "send", run, "set_directive", "--directive", "shorter answers")
    assert code == 0
    assert err == (f"poise: warning: no engine is running on {run}; set_directive is queued and will be applied "
                   f"when an engine starts on this run (poise run {run})\n")
    (cmd,) = pending_commands(run)
    assert out == f"{cmd['id']}\n" and cmd["args"] == {"directive": "shorter answers"}


@pytest.mark.parametrize("args, says", [
    (["rerun"], "rerun needs --id ID, the candidate it applies to"),
    (["veto"], "veto needs --id ID, the candidate it applies to"),
    (["fork", "--directive", "shorter"], "fork needs --id ID"),
    (["rerun", "--id", "c999"], "no candidate 'c999' in {run}/archive.json (known: seed)"),
    (["fork", "--id", "zzz"], "no candidate 'zzz' in {run}/archive.json (known: seed)"),
    (["veto", "--id", "c001"], "no candidate 'c001'"),
    (["pause", "--id", "seed"], "pause takes no --id"),
    (["veto", "--id", "seed", "--seeds", "1"], "veto takes no --seeds; it takes --id"),
    (["set_directive", "--id", "seed", "--directive", "x"], "set_directive takes no --id; it takes --directive"),
])
def test_send_checks_its_arguments_before_queuing(capsys, run: Path, args: list[str], says: str) -> None:
    lock = EngineLock(run).acquire()  # with an engine running, so only the arguments can be the problem
    try:
        err = refused(capsys, "send", run, *args)
    finally:
        lock.release()
    assert err.startswith("poise: error: " + says.format(run=run)), err
    assert pending_commands(run) == []


def test_set_directive_clears_only_when_told_to(capsys, run: Path) -> None:
    """Without --directive it used to queue an empty directive: the run's directive was silently cleared."""
    err = refused(capsys, "send", run, "set_directive")
    assert err == 'poise: error: set_directive needs --directive TEXT (--directive "" clears the directive)\n'
    assert pending_commands(run) == []
    code, _, _ = poise(capsys, "send", run, "set_directive", "--directive", "")
    assert code == 0 and [c["args"] for c in pending_commands(run)] == [{"directive": ""}]


def test_run_says_which_queued_commands_it_will_apply(capsys, run: Path) -> None:
    """A command queued while no engine ran (from the TUI, say) is applied when `poise run` starts: it says so
    first. The repo is left dirty so the engine refuses to start right after: no engine runs in this test."""
    send_command(run, "pause")
    send_command(run, "fork", id="seed")
    algo = run / "repo" / "algorithm.py"
    algo.write_text(algo.read_text() + "\n# mine\n")
    code, _, err = poise(capsys, "run", run)
    assert code == 2
    first, second = err.splitlines()
    assert first == "poise: note: 2 command(s) sent while no engine ran will be applied when it starts: pause, fork"
    assert second.startswith("poise: error: ") and "uncommitted changes" in second


# ------------------------------------------------------------------------------------------- run.toml, help


def test_an_invalid_run_toml_is_one_clear_line(capsys, run: Path) -> None:
    cfg = load_config(run / "run.toml")
    cfg.budget.candidates = -3
    save_config(cfg, run / "run.toml")
    for cmd in ("check", "status"):
        err = refused(capsys, cmd, run)
        assert err == f"poise: error: {run}/run.toml: [budget].candidates: must be >= 0, got -3\n"


def test_every_argument_has_help() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    undocumented = [f"{name} {action.dest}" for name, parser in sub.choices.items() for action in parser._actions
                    if not isinstance(action, argparse._HelpAction) and not action.help]
    assert undocumented == []
