"""`poise status`: what the engine does now, the directive in force, and the run's best said so that a baseline
still ahead of every candidate cannot be missed. Runs are made by `poise init`; scores are recorded straight into
the archive (no training) and the engine is stood in for by this process holding the engine lock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.archive import Archive, Candidate
from core.cli import init_run, main
from core.config import load_config, save_config
from core.elites import mark_confirmed
from core.jobspec import JobResult
from core.lock import EngineLock
from core.runstate import EngineState, save_directive, write_state


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return init_run(tmp_path / "run")


def status(capsys, run: Path) -> list[str]:
    assert main(["status", str(run)]) == 0
    return capsys.readouterr().out.splitlines()


def evaluate(archive: Archive, cid: str, per_seed: dict[int, float], confirmed: bool = False) -> None:
    """Record a candidate's scores as the engine would (one JobResult per seed); the seed exists already."""
    if cid != "seed":
        archive.add(Candidate(id=cid, title=f"title {cid}", parent_ids=["seed"], status="proposed",
                              created_at=time.time()))
        archive.set_status(cid, "implemented")
    archive.set_status(cid, "verified")
    archive.set_status(cid, "training")
    for seed, overall in per_seed.items():
        archive.record_result(cid, seed, JobResult("evaluated", eval={"selection": {"a": overall}},
                                                   overall={"selection": overall}))
    archive.set_status(cid, "evaluated")
    if confirmed:
        mark_confirmed(archive, cid)


def overall(run: Path, cid: str) -> str:
    """The selection Overall as status prints it: mean [lo, hi]."""
    m = Archive.open(run, readonly=True).get(cid).metrics["selection"]["overall"]
    return f"{m['mean']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]"


def best_lines(lines: list[str]) -> list[str]:
    return lines[lines.index(next(ln for ln in lines if ln.startswith("candidates: "))) + 1:]


# ------------------------------------------------------------------------------------------- the run's best


def test_a_baseline_ahead_of_every_candidate_is_said_in_words(capsys, run: Path) -> None:
    """The walkthrough's run: confirmed c001 scores below the seed. It used to print a second "best" line, the
    seed's, labelled "(unconfirmed)", and left the reader to compare the numbers."""
    archive = Archive.open(run)
    evaluate(archive, "seed", {0: 0.50, 1: 0.48})
    evaluate(archive, "c001", {0: 0.49, 1: 0.47}, confirmed=True)
    archive.close()
    first, second = best_lines(status(capsys, run))
    assert first.startswith("best (confirmed): c001 title c001  overall ")
    assert second == (f"no candidate beats the baseline yet: seed overall {overall(run, 'seed')} >= "
                      f"c001 overall {overall(run, 'c001')}")
    archive = Archive.open(run)
    evaluate(archive, "c002", {0: 0.60, 1: 0.58}, confirmed=True)  # one that does beat it: no note, one best
    archive.close()
    assert [ln.split("  ")[0] for ln in best_lines(status(capsys, run))] == ["best (confirmed): c002 title c002"]


def test_an_unconfirmed_leader_is_labelled_and_the_baseline_compared_with_the_confirmed_best(capsys,
                                                                                             run: Path) -> None:
    archive = Archive.open(run)
    evaluate(archive, "seed", {0: 0.50, 1: 0.48})
    evaluate(archive, "c001", {0: 0.40, 1: 0.42}, confirmed=True)
    evaluate(archive, "c002", {0: 0.60, 1: 0.62})
    archive.close()
    confirmed, leader, baseline = best_lines(status(capsys, run))
    assert confirmed.startswith("best (confirmed): c001 ")
    assert leader.startswith("best (selection): c002 (unconfirmed) title c002  overall ")
    assert baseline.startswith("no confirmed candidate beats the baseline yet: seed overall ")


def test_the_seed_alone_is_the_baseline_not_the_best(capsys, run: Path) -> None:
    archive = Archive.open(run)
    evaluate(archive, "seed", {0: 0.50, 1: 0.48})
    archive.close()
    (line,) = best_lines(status(capsys, run))
    assert line.startswith(f"baseline: seed GRPO (seed)  overall {overall(run, 'seed')}")
    assert line.endswith("; no other candidate is evaluated yet")


# ------------------------------------------------------------------------------------------- the engine line


@pytest.fixture
def engine(run: Path):
    """This process stands in for a running engine: it holds the lock, so engine.json is believed."""
    lock = EngineLock(run).acquire()
    yield lambda **fields: write_state(run, EngineState(**fields))
    lock.release()


def test_the_engine_line_says_the_engines_message_once(capsys, run: Path, engine) -> None:
    engine(state="running", stage="train", candidate="seed", message="training seed seed 1: step 4/100")
    assert status(capsys, run)[1] == "engine: running, training seed seed 1: step 4/100"
    engine(state="running", stage="train", candidate="c002")  # no message: the stage and candidate say it
    assert status(capsys, run)[1] == "engine: running, train c002"


def test_the_running_engines_directive_is_shown(capsys, run: Path, engine) -> None:
    engine(state="running", stage="propose", directive="shorter answers at equal accuracy")
    assert status(capsys, run)[2] == "directive: shorter answers at equal accuracy"
    engine(state="running", stage="propose", directive="")
    assert not any(ln.startswith("directive") for ln in status(capsys, run))


def test_without_an_engine_the_directive_the_next_one_takes_is_shown(capsys, run: Path) -> None:
    cfg = load_config(run / "run.toml")
    cfg.directive = "from run.toml"
    save_config(cfg, run / "run.toml")
    assert status(capsys, run)[1:3] == ["engine: stopped", "directive: from run.toml"]
    save_directive(run, "set while an engine ran")  # outlives that engine and wins over run.toml's
    assert status(capsys, run)[2] == "directive: set while an engine ran"
