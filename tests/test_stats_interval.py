"""run.toml's [stats] interval: one interval method for every stored metric, reader and paired comparison of a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args, get_type_hints

import pytest

from core.archive import Archive, Candidate
from core.config import RunConfig, StatsConfig, load_config, save_config, stats_interval
from core.errors import ArchiveError, ConfigError
from core.jobspec import JobResult
from core.stats import INTERVALS, paired_difference, paired_metrics, summarize

# Per-seed Overall where the two methods differ clearly: t at n=3 is far wider than [min, max].
SPREAD = (0.2, 0.4, 0.9)
LOWER = (0.1, 0.35, 0.6)


def _result(v: float) -> JobResult:
    # the same score on both parts: the report pairs held-out, the TUI and `poise show` lead with selection
    return JobResult(outcome="evaluated", eval={"selection": {"easy": v}, "heldout": {"easy": v}},
                     overall={"selection": v, "heldout": v})


def _record(arch: Archive, cid: str, values: tuple[float, ...], parents: list[str] | None = None) -> None:
    arch.add(Candidate(id=cid, title=cid, parent_ids=parents or [], origin="llm" if parents else "seed",
                       status="training"))
    for seed, v in enumerate(values):
        arch.record_result(cid, seed, _result(v))
    arch.set_status(cid, "evaluated")


def _per_seed(values: tuple[float, ...]) -> dict[int, float]:
    return dict(enumerate(values))


def test_the_config_offers_exactly_the_methods_stats_implements() -> None:
    assert get_args(get_type_hints(StatsConfig)["interval"]) == INTERVALS
    assert RunConfig().stats.interval == "t"


def test_an_unknown_interval_in_run_toml_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[stats]\ninterval = "bca"\n')
    with pytest.raises(ConfigError, match=r"stats.*interval.*bca"):
        load_config(path)


def test_stats_interval_reads_the_run_and_falls_back_on_a_broken_config(tmp_path: Path) -> None:
    save_config(RunConfig(stats=StatsConfig(interval="bootstrap")), tmp_path / "run.toml")
    assert stats_interval(tmp_path) == "bootstrap"
    (tmp_path / "run.toml").write_text("[stats\n")
    assert stats_interval(tmp_path) == "t"


def test_an_archive_opened_with_bootstrap_stores_bootstrap_intervals(tmp_path: Path) -> None:
    arch = Archive.open(tmp_path, create=True, interval="bootstrap")
    _record(arch, "seed", SPREAD)
    stored = json.loads((tmp_path / "archive.json").read_text())["candidates"]["1"]["metrics"]["selection"]["overall"]
    expected = summarize(_per_seed(SPREAD), method="bootstrap")
    assert stored["interval"] == "bootstrap"
    assert (stored["lo"], stored["hi"]) == pytest.approx((expected["lo"], expected["hi"]))
    t = summarize(_per_seed(SPREAD), method="t")
    assert stored["hi"] - stored["lo"] < (t["hi"] - t["lo"]) / 2  # the methods really differ on this data


def test_a_reader_with_the_other_method_recomputes_without_writing(tmp_path: Path) -> None:
    """run.toml's interval changed mid-run: every candidate is shown under the new method, none is rewritten."""
    _record(Archive.open(tmp_path, create=True, interval="bootstrap"), "seed", SPREAD)
    before = (tmp_path / "archive.json").read_bytes()
    m = Archive.open(tmp_path, readonly=True, interval="t").get("seed").metrics["selection"]["overall"]
    t = summarize(_per_seed(SPREAD), method="t")
    assert m["interval"] == "t" and (m["lo"], m["hi"]) == pytest.approx((t["lo"], t["hi"]))
    assert (tmp_path / "archive.json").read_bytes() == before


def test_an_unknown_interval_cannot_open_an_archive(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="unknown interval method 'bca'"):
        Archive.open(tmp_path, create=True, interval="bca")


@pytest.mark.parametrize("method", INTERVALS)
def test_paired_metrics_use_the_method_they_were_stored_with(tmp_path: Path, method: str) -> None:
    arch = Archive.open(tmp_path, create=True, interval=method)
    _record(arch, "seed", LOWER)
    _record(arch, "c001", SPREAD, ["seed"])
    a, b = (arch.get(c).metrics["selection"]["overall"] for c in ("c001", "seed"))
    d = paired_metrics(a, b)
    oracle = paired_difference(_per_seed(SPREAD), _per_seed(LOWER), method=method)
    other = paired_difference(_per_seed(SPREAD), _per_seed(LOWER), method=next(m for m in INTERVALS if m != method))
    assert d["interval"] == method and (d["lo"], d["hi"]) == pytest.approx((oracle["lo"], oracle["hi"]))
    assert (d["lo"], d["hi"]) != pytest.approx((other["lo"], other["hi"]))


def test_poise_show_prints_the_runs_interval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from core.cli import main

    run = tmp_path / "run"
    assert main(["init", str(run)]) == 0
    cfg = load_config(run / "run.toml")
    cfg.stats.interval = "bootstrap"
    save_config(cfg, run / "run.toml")
    arch = Archive.open(run, interval="t")  # results written under t; the reader must show bootstrap
    for st in ("implemented", "verified", "training"):
        arch.set_status("seed", st)
    for seed, v in enumerate(SPREAD):
        arch.record_result("seed", seed, _result(v))
    capsys.readouterr()
    assert main(["show", str(run), "seed"]) == 0
    boot = summarize(_per_seed(SPREAD), method="bootstrap")
    assert f"overall selection {boot['mean']:.3f} [{boot['lo']:.3f}, {boot['hi']:.3f}]" in capsys.readouterr().out


def test_the_report_pairs_with_the_runs_interval(tmp_path: Path) -> None:
    from core.report import write_report

    save_config(RunConfig(stats=StatsConfig(interval="bootstrap")), tmp_path / "run.toml")
    arch = Archive.open(tmp_path, create=True, interval="bootstrap")
    _record(arch, "seed", LOWER)
    _record(arch, "c001", SPREAD, ["seed"])
    text = write_report(tmp_path).read_text()
    d = paired_difference(_per_seed(SPREAD), _per_seed(LOWER), method="bootstrap")
    assert f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] (n=3)" in text


def test_the_tui_metrics_table_pairs_with_the_stored_method(tmp_path: Path) -> None:
    from poise_tui.widgets.metrics_table import metric_rows

    arch = Archive.open(tmp_path, create=True, interval="bootstrap")
    _record(arch, "seed", LOWER)
    _record(arch, "c001", SPREAD, ["seed"])
    rows = metric_rows(arch.get("c001"), {"vs seed": arch.get("seed")})
    overall = next(r for r in rows if r[:2] == ("selection", "overall"))
    d = paired_difference(_per_seed(SPREAD), _per_seed(LOWER), method="bootstrap")
    assert overall[-1] == f"{d['mean'] * 100:+.1f} [{d['lo'] * 100:+.1f}, {d['hi'] * 100:+.1f}]"


def test_the_engine_writes_under_the_runs_interval(tmp_path: Path) -> None:
    from core.cli import main
    from core.engine import Engine

    run = tmp_path / "run"
    assert main(["init", str(run)]) == 0
    cfg = load_config(run / "run.toml")
    cfg.stats.interval = "bootstrap"
    save_config(cfg, run / "run.toml")
    engine = Engine(run)
    for st in ("implemented", "verified", "training"):
        engine.archive.set_status("seed", st)
    for seed, v in enumerate(SPREAD):
        engine.archive.record_result("seed", seed, _result(v))
    stored = json.loads((run / "archive.json").read_text())["candidates"]["1"]["metrics"]["heldout"]["overall"]
    assert stored["interval"] == "bootstrap"
