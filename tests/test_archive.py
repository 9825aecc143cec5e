"""core.archive: records, lifecycle, lineage, Pareto front, corruption and tolerant loading."""

from __future__ import annotations

import itertools
import json
import statistics
from dataclasses import asdict
from pathlib import Path

import pytest

from core.archive import SCHEMA_VERSION, Archive, Candidate, migrate
from core.errors import ArchiveError, CorruptArchiveError, RunDirError, UnknownCandidateError
from core.jobspec import JobResult


@pytest.fixture
def arch(tmp_path: Path) -> Archive:
    a = Archive.open(tmp_path, create=True)
    a.add(Candidate(id="seed", title="GRPO", origin="seed", status="implemented"))
    return a


def _evaluated(a: Archive, cid: str, parents: list[str], scores: dict[str, float]) -> None:
    a.add(Candidate(id=cid, title=cid, parent_ids=parents, status="training"))
    overall = sum(scores.values()) / len(scores)
    a.record_result(cid, 0, JobResult(outcome="evaluated", eval={"selection": scores}, overall={"selection": overall}))
    a.set_status(cid, "evaluated")


def test_open_missing_dir_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="no such directory"):
        Archive.open(tmp_path / "nope")
    with pytest.raises(RunDirError, match="not a poise run"):
        Archive.open(tmp_path)


def test_roundtrip_and_ids(arch: Archive, tmp_path: Path) -> None:
    assert arch.next_id() == "c001"
    arch.add(Candidate(id="c001", title="clip higher", parent_ids=["seed"], proposal={"title": "clip higher"}))
    assert arch.next_id() == "c002"
    again = Archive.open(tmp_path, readonly=True)
    c = again.get("c001")
    assert c.parent_ids == ["seed"] and c.proposal == {"title": "clip higher"}
    assert c.history[0]["status"] == "proposed" and c.created_at > 0
    assert [x.id for x in again.all()] == ["seed", "c001"]


def test_empty_archive_next_id_is_seed(tmp_path: Path) -> None:
    assert Archive.open(tmp_path, create=True).next_id() == "seed"


def test_get_unknown_and_add_checks(arch: Archive) -> None:
    with pytest.raises(UnknownCandidateError, match="c999"):
        arch.get("c999")
    with pytest.raises(UnknownCandidateError):
        arch.add(Candidate(id="c001", parent_ids=["ghost"]))
    with pytest.raises(ArchiveError, match="already exists"):
        arch.add(Candidate(id="seed"))
    with pytest.raises(ArchiveError, match="origin"):
        arch.add(Candidate(id="c001", origin="martian"))


def test_set_status_records_history_and_refuses_illegal_moves(arch: Archive) -> None:
    arch.add(Candidate(id="c001", parent_ids=["seed"]))
    for st in ("implemented", "implemented", "verified", "training", "training", "evaluated", "reflected"):
        arch.set_status("c001", st, reason=f"to {st}")
    hist = arch.get("c001").history
    assert [h["status"] for h in hist] == ["proposed", "implemented", "implemented", "verified", "training",
                                           "training", "evaluated", "reflected"]
    assert all(a["at"] <= b["at"] for a, b in itertools.pairwise(hist))
    assert hist[-1]["reason"] == "to reflected"
    with pytest.raises(ArchiveError, match="cannot go from 'reflected' to 'verified'.*allowed.*training"):
        arch.set_status("c001", "verified")
    arch.add(Candidate(id="c002", parent_ids=["seed"]))
    arch.set_status("c002", "vetoed", "researcher said no")
    with pytest.raises(ArchiveError, match="final state"):
        arch.set_status("c002", "implemented")
    with pytest.raises(ArchiveError, match="unknown status"):
        arch.set_status("c002", "sleeping")


def test_update_refuses_status_and_unknown_fields(arch: Archive, tmp_path: Path) -> None:
    arch.update("seed", branch="cand/seed", commit="abc", tags=["grpo"])
    assert Archive.open(tmp_path).get("seed").tags == ["grpo"]
    with pytest.raises(ArchiveError, match="set_status"):
        arch.update("seed", status="evaluated")
    with pytest.raises(ArchiveError, match="'colour'"):
        arch.update("seed", colour="red")


def test_record_result_aggregates_metrics(arch: Archive, tmp_path: Path) -> None:
    for seed, acc in ((0, 0.2), (1, 0.6)):
        arch.record_result("seed", seed, JobResult(outcome="evaluated", eval={"selection": {"easy": acc}},
                                                   overall={"selection": acc}, wall_s=3.0))
    arch.record_result("seed", 2, {"outcome": "diverged", "reason": "kl"})
    c = Archive.open(tmp_path).get("seed")
    assert c.seeds == [0, 1, 2]
    assert set(c.results) == {"0", "1", "2"}
    assert c.metrics["selection"]["easy"]["mean"] == pytest.approx(0.4)
    assert c.metrics["selection"]["overall"]["n"] == 2
    assert c.score("easy") == pytest.approx(0.4)


def test_metrics_stored_with_percentile_intervals_are_read_as_t_intervals(tmp_path: Path) -> None:
    """An archive from before Student-t intervals: its candidates must not be compared on another method."""
    results = {str(s): asdict(JobResult(outcome="evaluated", overall={"selection": v})) for s, v in enumerate((.2, .4, .9))}
    old = {"mean": 0.5, "lo": 0.2, "hi": 0.9, "n": 3, "per_seed": {"0": .2, "1": .4, "2": .9}}  # [min, max]: no key
    rec = Candidate(id="seed", origin="seed", seeds=[0, 1, 2], results=results,
                    metrics={"selection": {"overall": old}}).to_dict()
    (tmp_path / "archive.json").write_text(json.dumps({"candidates": {"1": rec}}))
    m = Archive.open(tmp_path, readonly=True).get("seed").metrics["selection"]["overall"]
    half = 4.302653 * statistics.stdev([.2, .4, .9]) / 3 ** 0.5  # t(0.975, df=2) by hand, from a table
    assert m["interval"] == "t" and m["mean"] == pytest.approx(0.5)
    assert (m["lo"], m["hi"]) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-5)
    assert json.loads((tmp_path / "archive.json").read_text())["candidates"]["1"]["metrics"] == rec["metrics"]

    # The writer stores them once (the engine does at start), so readers stop recomputing at each reload.
    fresh_seed = Candidate(id="c001", origin="seed", metrics={"selection": {"overall": dict(m)}}).to_dict()
    data = json.loads((tmp_path / "archive.json").read_text())
    data["candidates"]["2"] = fresh_seed  # already under t: not rewritten
    (tmp_path / "archive.json").write_text(json.dumps(data))
    writer = Archive.open(tmp_path)
    assert writer.store_recomputed_intervals() == 1
    stored = json.loads((tmp_path / "archive.json").read_text())["candidates"]
    assert stored["1"]["metrics"]["selection"]["overall"] == m and stored["2"] == fresh_seed
    before = (tmp_path / "archive.json").stat().st_mtime_ns
    assert writer.store_recomputed_intervals() == 0 and Archive.open(tmp_path).store_recomputed_intervals() == 0
    assert (tmp_path / "archive.json").stat().st_mtime_ns == before, "nothing left to store: no write"
    assert Archive.open(tmp_path, readonly=True).get("seed").metrics == writer.get("seed").metrics


def test_add_cost_accumulates(arch: Archive) -> None:
    arch.add_cost("seed", "train", wall_s=2.0)
    arch.add_cost("seed", "train", wall_s=1.5, llm_tokens=10, llm_s=0.5)
    costs = arch.get("seed").costs
    assert costs == {"wall_s": {"train": 3.5}, "llm_tokens": 10, "llm_s": 0.5}


def test_readonly_refuses_writes_and_refresh_sees_new_records(arch: Archive, tmp_path: Path) -> None:
    reader = Archive.open(tmp_path, readonly=True)
    with pytest.raises(ArchiveError, match="read-only"):
        reader.set_status("seed", "verified")
    assert reader.refresh() is False
    arch.add(Candidate(id="c001", parent_ids=["seed"]))
    assert reader.refresh() is True
    assert "c001" in reader
    assert reader.refresh() is False


def test_writer_picks_up_another_writers_records(arch: Archive, tmp_path: Path) -> None:
    other = Archive.open(tmp_path)
    other.add(Candidate(id="c001", parent_ids=["seed"]))
    arch.add(Candidate(id="c002", parent_ids=["c001"]))  # must not clobber c001
    assert [c.id for c in Archive.open(tmp_path).all()] == ["seed", "c001", "c002"]


# --- corruption and schema ---------------------------------------------------------------

@pytest.mark.parametrize("content", [b'{"candidates": {"1": {"id": "se', b"[1, 2]", b"\xff\xfe garbage"])
def test_corrupt_file_raises_and_is_not_modified(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "archive.json"
    path.write_bytes(content)
    for kwargs in ({}, {"readonly": True}, {"create": True}):
        with pytest.raises(CorruptArchiveError, match=r"archive\.json.*not modified"):
            Archive.open(tmp_path, **kwargs)
    assert path.read_bytes() == content


def test_bad_record_is_reported_by_id(tmp_path: Path) -> None:
    (tmp_path / "archive.json").write_text(json.dumps({"candidates": {"1": {"id": "seed", "schema_version": 1,
                                                                            "bogus": 1, "title": "t"},
                                                                      "2": {"title": "no id", "schema_version": 1}}}))
    with pytest.raises(CorruptArchiveError, match="record None"):
        Archive.open(tmp_path)


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    rec = Candidate(id="seed", origin="seed").to_dict() | {"from_the_future": {"x": 1}}
    (tmp_path / "archive.json").write_text(json.dumps({"candidates": {"1": rec}}))
    a = Archive.open(tmp_path)
    assert a.get("seed").origin == "seed"
    a.update("seed", title="still writable")
    assert Archive.open(tmp_path).get("seed").title == "still writable"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="newer"):
        migrate({"id": "c001", "schema_version": SCHEMA_VERSION + 1})


def test_migration_from_v0(tmp_path: Path) -> None:
    v0 = {
        "1": {"id": "seed", "title": "GRPO", "parent": None, "status": "evaluated", "code_commit": "aaa",
              "created": "2025-01-02T03:04:05+00:00", "scores": {"0": {"easy": 0.5}, "1": {"easy": 0.7}}},
        "2": {"id": "c001", "title": "AV", "parent": "seed", "status": "proposed", "code_commit": "",
              "created": "2025-01-02T04:00:00+00:00"},
    }
    (tmp_path / "archive.json").write_text(json.dumps({"candidates": v0}))
    a = Archive.open(tmp_path)
    seed, child = a.get("seed"), a.get("c001")
    assert seed.schema_version == SCHEMA_VERSION
    assert seed.parent_ids == [] and child.parent_ids == ["seed"]
    assert seed.commit == "aaa" and seed.created_at == 1735787045.0
    assert seed.history == [{"status": "evaluated", "at": 1735787045.0, "reason": "migrated from schema v0"}]
    assert seed.seeds == [0, 1] and seed.results["1"]["eval"] == {"selection": {"easy": 0.7}}
    assert seed.score("easy") == pytest.approx(0.6)
    a.update("c001", title="AV v2")  # a rewrite stores the v1 shape and drops the v0 keys
    stored = json.loads((tmp_path / "archive.json").read_text())["candidates"]["2"]
    assert stored["schema_version"] == SCHEMA_VERSION and "parent" not in stored and stored["title"] == "AV v2"


# --- lineage and selection views ----------------------------------------------------------

@pytest.fixture
def tree(arch: Archive) -> Archive:
    """seed -> c001 -> c003 -> c005(x c002); seed -> c002 -> c004."""
    for cid, parents in (("c001", ["seed"]), ("c002", ["seed"]), ("c003", ["c001"]), ("c004", ["c002"]),
                         ("c005", ["c003", "c002"])):
        arch.add(Candidate(id=cid, parent_ids=parents, origin="crossover" if len(parents) == 2 else "llm"))
    return arch


def ids(cands: list[Candidate]) -> list[str]:
    return [c.id for c in cands]


def test_lineage_queries(tree: Archive) -> None:
    assert ids(tree.children("seed")) == ["c001", "c002"]
    assert ids(tree.children("c002")) == ["c004", "c005"]
    assert ids(tree.children("c005")) == []
    assert ids(tree.roots()) == ["seed"]
    assert ids(tree.ancestors("c005")) == ["c003", "c002", "c001", "seed"]
    assert ids(tree.ancestors("seed")) == []
    assert [tree.depth(c) for c in ("seed", "c001", "c002", "c003", "c004", "c005")] == [0, 1, 1, 2, 2, 3]
    assert ids(tree.subtree("c002")) == ["c002", "c004", "c005"]
    assert ids(tree.subtree("seed")) == ["seed", "c001", "c002", "c003", "c004", "c005"]
    assert tree.distance("c005", "c002") == 1 and tree.distance("c005", "seed") == 2
    assert tree.distance("c004", "c001") is None
    with pytest.raises(UnknownCandidateError):
        tree.subtree("c404")


def test_pareto_front_and_best_hand_computed(arch: Archive) -> None:
    # (aime, math): A=(0.5,0.2) B=(0.3,0.6) C=(0.4,0.4) D=(0.3,0.5) dominated by B, E=(0.5,0.1) dominated by A.
    pts = {"c001": (0.5, 0.2), "c002": (0.3, 0.6), "c003": (0.4, 0.4), "c004": (0.3, 0.5), "c005": (0.5, 0.1)}
    for cid, (aime, math_) in pts.items():
        _evaluated(arch, cid, ["seed"], {"aime": aime, "math": math_})
    arch.add(Candidate(id="c006", parent_ids=["seed"]))  # proposed: never on the front
    assert ids(arch.pareto_front(["aime", "math"])) == ["c001", "c002", "c003"]
    assert ids(arch.pareto_front(["aime"])) == ["c001", "c005"]  # ties are both non-dominated
    assert arch.best().id == "c002"  # overall = mean(0.3, 0.6) = 0.45 is the highest
    assert arch.pareto_front(["aime"], part="heldout") == []
    with pytest.raises(ArchiveError):
        arch.pareto_front([])


def test_best_is_none_without_scores(arch: Archive) -> None:
    assert arch.best() is None


def test_empty_file_is_corrupt_not_an_empty_archive(tmp_path: Path) -> None:
    """Read as "no candidates", an emptied archive.json made the engine discard every candidate branch."""
    path = tmp_path / "archive.json"
    path.write_bytes(b"  \n")
    for kwargs in ({}, {"readonly": True}, {"create": True}):
        with pytest.raises(CorruptArchiveError, match=r"archive\.json: the file is empty.*not modified"):
            Archive.open(tmp_path, **kwargs)
    assert path.read_bytes() == b"  \n"


def test_a_current_record_that_lost_its_schema_version_is_refused_not_wiped(tmp_path: Path) -> None:
    """Taken for v0, it would lose its parents, commit, results and history at the next write."""
    rec = Candidate(id="c001", parent_ids=["seed"], commit="abc", created_at=5.0, origin="llm").to_dict()
    del rec["schema_version"]
    seed = Candidate(id="seed", origin="seed").to_dict()
    text = json.dumps({"candidates": {"1": seed, "2": rec}})
    (tmp_path / "archive.json").write_text(text)
    with pytest.raises(CorruptArchiveError, match=r"c001.*no schema_version.*parent_ids.*restore"):
        Archive.open(tmp_path).all()
    assert (tmp_path / "archive.json").read_text() == text


GOOD_METRIC = {"mean": 0.5, "lo": 0.4, "hi": 0.6, "n": 3, "per_seed": {"0": 0.5}}


@pytest.mark.parametrize(("field", "value", "words"), [
    ("history", ["reflected"], "entry 0 is \"reflected\", expected an object with a string status"),
    ("history", [{"status": "proposed"}], "entry 0 .*a number at"),
    ("seeds", [0, "1"], "holds \"1\", expected whole numbers"), ("seeds", [True], "holds true"),
    ("results", {"0": "evaluated"}, "seed 0 is \"evaluated\", expected an object with a string outcome"),
    ("metrics", {"selection": {"overall": {"mean": 0.5}}}, "selection/overall is .*numbers mean, lo, hi, n"),
    ("metrics", {"selection": {"overall": GOOD_METRIC | {"lo": "low"}}}, "selection/overall"),
    ("metrics", {"selection": [GOOD_METRIC]}, "selection/ is \\["),
])
def test_a_nested_value_of_the_wrong_shape_is_refused_by_name_at_open(tmp_path: Path, field: str, value,
                                                                      words: str) -> None:
    """Nested values the TUI, status and the engine read unchecked: each used to end in a traceback there."""
    good = Candidate(id="seed", origin="seed").to_dict() | {
        "history": [{"status": "proposed", "at": 1.0}], "seeds": [0],
        "results": {"0": {"outcome": "evaluated"}}, "metrics": {"selection": {"overall": GOOD_METRIC}}}
    assert Candidate.from_dict(good).score() == 0.5  # the well-formed record opens
    text = json.dumps({"candidates": {"1": good | {field: value}}})
    (tmp_path / "archive.json").write_text(text)
    with pytest.raises(CorruptArchiveError, match=rf"field '{field}' {words}.*not modified"):
        Archive.open(tmp_path)
    assert (tmp_path / "archive.json").read_text() == text


@pytest.mark.parametrize(("field", "value", "words"), [
    ("parent_ids", None, "expected a list of strings"), ("parent_ids", [5], "expected a list of strings"),
    ("metrics", "x", "expected an object"), ("id", 5, "expected a string"), ("title", None, "expected a string"),
    ("created_at", "yesterday", "expected a number"), ("history", {}, "expected a list"),
])
def test_a_field_of_the_wrong_type_is_refused_by_name_at_open(tmp_path: Path, field: str, value, words: str) -> None:
    """A hand edit used to open fine and then break lineage, status or the TUI with a traceback."""
    rec = Candidate(id="seed", origin="seed").to_dict() | {field: value}
    text = json.dumps({"candidates": {"1": rec}})
    (tmp_path / "archive.json").write_text(text)
    with pytest.raises(CorruptArchiveError, match=rf"field '{field}' is .*{words}.*not modified"):
        Archive.open(tmp_path)
    assert (tmp_path / "archive.json").read_text() == text
