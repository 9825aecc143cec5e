"""The archive of candidates: `<run>/archive.json`, the only module that touches TinyDB.

One record per candidate (a `Candidate`): its proposal, its implementation
(branch, commit), per-seed job results and the metrics aggregated from them,
verification, reflection, lineage (parent ids), a timestamped status history and
costs. The engine is the only writer; TUIs and the CLI open it read-only and call
`refresh()`, which re-reads the file only when it was replaced.

Durability: every write goes to a temp file in the same directory, is flushed and
fsynced, then renamed over archive.json (and the directory is fsynced), so a
crash at any moment leaves either the old or the new file, never a torn one. A
file that does not parse is reported and never written to.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinydb import Storage, TinyDB

from core.errors import ArchiveError, CorruptArchiveError, RunDirError, UnknownCandidateError
from core.jobspec import JobResult
from core.runstate import pid_alive
from core.stats import DEFAULT_INTERVAL, INTERVALS, aggregate_results, summarize

ARCHIVE_FILE = "archive.json"
TABLE = "candidates"
SCHEMA_VERSION = 1

if TYPE_CHECKING:
    import numpy as np

ORIGINS = ("seed", "llm", "human", "fork", "crossover", "rerun")
FAILED = ("diverged", "crashed", "timed_out", "cancelled")
# Allowed lifecycle moves (DESIGN.md). Self-loops: implemented -> implemented is a repair
# attempt; training -> training is the next seed (or a resume after an engine crash).
# Back to training from an outcome is a rerun on more seeds.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "proposed": ("implemented", "rejected", "vetoed", "cancelled"),
    "implemented": ("implemented", "verified", "rejected", "vetoed", "cancelled"),
    "verified": ("training", "vetoed", "cancelled"),
    "training": ("training", "evaluated", *FAILED),
    "evaluated": ("reflected", "training"),
    "diverged": ("reflected", "training"),
    "crashed": ("reflected", "training"),
    "timed_out": ("reflected", "training"),
    "cancelled": ("training",),
    "reflected": ("training",),
    "rejected": (),
    "vetoed": (),
}
STATUSES = tuple(TRANSITIONS)
# Statuses whose metrics are comparable (reflected keeps the outcome's metrics).
SCORED = ("evaluated", "reflected")


def _default_costs() -> dict[str, Any]:
    return {"wall_s": {}, "llm_tokens": 0, "llm_s": 0.0}


@dataclass
class Candidate:
    """One node of the genealogy. Treat instances as read-only; change them through Archive."""

    id: str
    title: str = ""
    parent_ids: list[str] = field(default_factory=list)
    origin: str = "llm"
    proposal: dict[str, Any] = field(default_factory=dict)
    branch: str = ""
    commit: str = ""
    status: str = "proposed"
    history: list[dict[str, Any]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    reflection: dict[str, Any] | None = None
    costs: dict[str, Any] = field(default_factory=_default_costs)
    tags: list[str] = field(default_factory=list)
    created_at: float = 0.0
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], interval: str = DEFAULT_INTERVAL) -> Candidate:
        """Build from a stored record of any known schema version; unknown keys are ignored. A field of the
        wrong JSON type (a hand edit) raises TypeError here, not a traceback later in lineage or the TUI.
        Metrics stored under another interval method than `interval` (the run's) are recomputed."""
        record = migrate(data)
        kept = {k: v for k, v in record.items() if k in _FIELDS}
        for key, value in kept.items():
            expected, words = _FIELD_TYPES.get(key, (object, ""))
            if not isinstance(value, expected) or key in _LIST_OF_STR and not all(isinstance(x, str) for x in value):
                raise TypeError(f"field {key!r} is {_short(value)}, expected {words}")
        problem = _nested_problem(kept)
        if problem:
            raise TypeError(problem)
        return cls(**_with_current_intervals(kept, interval))

    def score(self, split: str = "overall", part: str = "selection") -> float | None:
        """Mean of one metric, or None when the candidate has none."""
        entry = self.metrics.get(part, {}).get(split)
        return None if entry is None else float(entry["mean"])


_FIELDS = frozenset(f.name for f in dataclasses.fields(Candidate))
_STR, _LIST, _OBJ = (str, "a string"), (list, "a list"), (dict, "an object")
_LIST_OF_STR = ("parent_ids", "tags")
# field -> (JSON type it must have, how an error names it)
_FIELD_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "id": _STR, "title": _STR, "origin": _STR, "branch": _STR, "commit": _STR, "status": _STR,
    "parent_ids": (list, "a list of strings"), "tags": (list, "a list of strings"), "history": _LIST, "seeds": _LIST,
    "proposal": _OBJ, "results": _OBJ, "metrics": _OBJ, "verification": _OBJ, "costs": _OBJ,
    "reflection": ((dict, type(None)), "an object or null"), "created_at": ((int, float), "a number"),
}


def _nested_problem(rec: dict[str, Any]) -> str | None:
    """The first nested value of a record that readers use unchecked (history entries, seeds, results,
    metrics) and that has the wrong shape, in words; None when every one is well formed."""
    for i, h in enumerate(rec.get("history", [])):
        if not (isinstance(h, dict) and isinstance(h.get("status"), str) and _is_number(h.get("at"))):
            return f"field 'history' entry {i} is {_short(h)}, expected an object with a string status and a number at"
    for s in rec.get("seeds", []):
        if not isinstance(s, int) or isinstance(s, bool):
            return f"field 'seeds' holds {_short(s)}, expected whole numbers"
    for seed, res in rec.get("results", {}).items():
        if not (isinstance(res, dict) and isinstance(res.get("outcome"), str)):
            return f"field 'results' seed {seed} is {_short(res)}, expected an object with a string outcome"
    for part, splits in rec.get("metrics", {}).items():
        for split, m in (splits.items() if isinstance(splits, dict) else [("", splits)]):
            if not (isinstance(m, dict) and all(_is_number(m.get(k)) for k in ("mean", "lo", "hi", "n"))
                    and isinstance(m.get("per_seed"), dict)):
                return (f"field 'metrics' {part}/{split} is {_short(m)}, expected an object with numbers "
                        "mean, lo, hi, n and an object per_seed")
    return None


def _with_current_intervals(rec: dict[str, Any], method: str) -> dict[str, Any]:
    """The record with each metric stored under another interval method than the run's `method` recomputed
    from its own per-seed values: run.toml's [stats] interval was changed, or the archive is from before
    Student-t intervals (percentile-bootstrap ones, no "interval" key). Mixing two methods in one run would
    make one candidate's interval look tighter than another's for the same spread. Nothing is lost: the
    stored record is rewritten by the next write of it, or by Archive.store_recomputed_intervals."""
    metrics = rec.get("metrics", {})
    if not any(_stale_interval(m, method) for splits in metrics.values() for m in splits.values()):
        return rec
    fresh = {part: {split: summarize(m["per_seed"], method=method) if _stale_interval(m, method) else m
                    for split, m in splits.items()}
             for part, splits in metrics.items()}
    return {**rec, "metrics": fresh}


def _stale_interval(metric: dict[str, Any], method: str) -> bool:
    return metric.get("interval") != method and bool(metric["per_seed"])


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _short(value: Any) -> str:
    return json.dumps(value)[:80]


# --- schema migration ------------------------------------------------------------------
#
# v0 (the prototype's shape, kept so old runs still open):
#   {"id", "title", "parent": str | None, "status", "code_commit", "created": ISO-8601 str,
#    "scores": {seed: {split: float}}}   -- selection-part scores only, no history, no version.


def _migrate_v0(rec: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in rec.items() if k not in ("parent", "code_commit", "created", "scores")}
    parent = rec.get("parent")
    out["parent_ids"] = [parent] if parent else []
    out["commit"] = rec.get("code_commit", "")
    created = rec.get("created")
    out["created_at"] = _parse_iso(created) if isinstance(created, str) else float(created or 0.0)
    out["history"] = [{"status": rec.get("status", "proposed"), "at": out["created_at"], "reason": "migrated from schema v0"}]
    out["results"] = {
        str(seed): asdict(JobResult(outcome="evaluated", eval={"selection": dict(splits)}))
        for seed, splits in (rec.get("scores") or {}).items()
    }
    out["seeds"] = sorted(int(s) for s in out["results"] if str(s).lstrip("-").isdigit())
    out["metrics"] = aggregate_results(out["results"])
    out["schema_version"] = 1
    return out


def _parse_iso(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


MIGRATIONS = {0: _migrate_v0}


V0_ONLY_KEYS = frozenset({"parent", "code_commit", "created", "scores"})
V1_KEYS = frozenset({"parent_ids", "commit", "created_at", "results", "history"})


def migrate(record: dict[str, Any]) -> dict[str, Any]:
    """Bring a stored record up to SCHEMA_VERSION, one version at a time."""
    if "schema_version" not in record and V1_KEYS & set(record) and not V0_ONLY_KEYS & set(record):
        # a current record that lost only its version: "migrating" it from v0 would drop its parents,
        # commit, results and history at the next write
        raise CorruptArchiveError(
            f"candidate {record.get('id')!r} has no schema_version but current fields "
            f"({', '.join(sorted(V1_KEYS & set(record)))}); the file was edited or damaged: restore "
            f"\"schema_version\": {SCHEMA_VERSION} in that record (nothing was changed)")
    version = int(record.get("schema_version", 0))
    if version > SCHEMA_VERSION:
        raise ArchiveError(
            f"candidate {record.get('id')!r} has schema_version {version}, newer than this poise "
            f"understands ({SCHEMA_VERSION}); upgrade poise to open this run"
        )
    while version < SCHEMA_VERSION:
        record = MIGRATIONS[version](record)
        version = int(record["schema_version"])
    return record


# --- storage ---------------------------------------------------------------------------


class AtomicJSONStorage(Storage):
    """TinyDB storage that replaces the file atomically on every write and never writes a corrupt one."""

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.readonly = readonly
        # TinyDB reads the whole file before every write; keep what we last wrote (or read)
        # while the file is unchanged, which halves the cost of a write to a large archive.
        self._cache: dict[str, dict[str, Any]] | None = None
        self._cache_sig: tuple[int, int, int] | None = None

    def read(self) -> dict[str, dict[str, Any]] | None:
        sig = _signature(self.path)
        if sig is not None and sig == self._cache_sig:
            return self._cache
        self.forget()
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        self._cache, self._cache_sig = _parse_tables(raw, self.path), sig
        return self._cache

    def forget(self) -> None:
        """Drop the cache, so the next read returns objects nobody else holds."""
        self._cache = self._cache_sig = None

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        if self.readonly:
            raise ArchiveError(f"{self.path} is open read-only; only the engine writes the archive")
        payload = json.dumps(data, separators=(",", ":")).encode()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                self._write_payload(fh, payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            self.forget()  # TinyDB may have changed `data` in place before the failed write
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.path.parent)
        self._cache, self._cache_sig = data, _signature(self.path)

    def _write_payload(self, fh: Any, payload: bytes) -> None:
        # A separate method so the crash test can stop a process half-way through it.
        fh.write(payload)

    def close(self) -> None:
        pass


def _parse_tables(raw: bytes, path: Path) -> dict[str, dict[str, Any]]:
    untouched = "it was not modified; move it aside or restore a backup, then reopen the run"
    if not raw.strip():
        # Every write replaces the file whole (write, fsync, rename), so an empty archive was emptied by
        # something else. Read as "no candidates" it would make the engine discard the run's branches.
        raise CorruptArchiveError(f"{path}: the file is empty; {untouched}")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptArchiveError(f"{path}: not valid JSON ({exc}); {untouched}") from None
    if not isinstance(data, dict) or not all(isinstance(t, dict) for t in data.values()):
        raise CorruptArchiveError(f"{path}: not a TinyDB archive (expected an object of tables); {untouched}")
    return data


def _fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_temps(path: Path) -> None:
    """Temp files of writers that died mid-write; a live writer's temp file is left alone."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name.removeprefix(f".{path.name}.").removesuffix(".tmp")
        if pid.isdigit() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


# --- the archive -----------------------------------------------------------------------


class Archive:
    """Candidate records of one run, with lineage queries. Open with `Archive.open`."""

    def __init__(self, path: Path, readonly: bool, interval: str = DEFAULT_INTERVAL) -> None:
        self.path = path
        self.readonly = readonly
        self.interval = interval  # the run's [stats] interval: how metrics are stored and shown
        self._db: TinyDB | None = None
        self._cands: dict[str, Candidate] = {}  # in creation order
        self._doc_ids: dict[str, int] = {}
        self._sig: tuple[int, int, int] | None = None
        self._stale: set[str] = set()  # records whose stored intervals were recomputed at load (another method)

    @classmethod
    def open(cls, run_dir: str | Path, create: bool = False, readonly: bool = False,
             interval: str = DEFAULT_INTERVAL) -> Archive:
        """Open `<run_dir>/archive.json`. Missing -> RunDirError (unless create); corrupt -> CorruptArchiveError.
        `interval`: the run's cfg.stats.interval (core.stats.INTERVALS); every reader and the writer of a run
        must pass the same one, or they show different intervals for the same seeds."""
        if interval not in INTERVALS:
            raise ArchiveError(f"unknown interval method {interval!r}; use one of {', '.join(INTERVALS)}")
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise RunDirError(f"{run_dir}: no such directory; create a run with `poise init {run_dir}`")
        path = run_dir / ARCHIVE_FILE
        if not path.exists() and not create:
            raise RunDirError(f"{run_dir} is not a poise run (no {ARCHIVE_FILE}); create one with `poise init <dir>`")
        if create and readonly:
            raise ArchiveError("cannot create an archive read-only; open it with readonly=False")
        arch = cls(path, readonly, interval)
        if not readonly:
            _remove_stale_temps(path)
        arch._load()
        if not path.exists():
            arch._storage().write({TABLE: {}})
            arch._sig = _signature(path)
        return arch

    # -- loading -------------------------------------------------------------------------

    def _storage(self) -> AtomicJSONStorage:
        assert self._db is not None
        return self._db.storage  # type: ignore[return-value]

    def _load(self) -> None:
        """(Re)read the whole file; a fresh TinyDB so its cached next-doc-id is right too."""
        sig = _signature(self.path)
        db = TinyDB(self.path, storage=AtomicJSONStorage, readonly=self.readonly)
        tables = db.storage.read() or {}
        # Candidates share nested objects with what was just parsed; TinyDB must not write those.
        db.storage.forget()  # type: ignore[attr-defined]
        cands: dict[str, Candidate] = {}
        doc_ids: dict[str, int] = {}
        stale: set[str] = set()
        for doc_id, rec in sorted(tables.get(TABLE, {}).items(), key=lambda kv: int(kv[0])):
            cand = self._candidate_from(rec)
            cands[cand.id] = cand
            doc_ids[cand.id] = int(doc_id)
            if not self.readonly and cand.metrics != rec.get("metrics", {}):
                stale.add(cand.id)  # only a writer can store them; readers skip the comparison
        self._db, self._cands, self._doc_ids, self._sig = db, cands, doc_ids, sig
        self._stale = stale

    def _candidate_from(self, rec: Any) -> Candidate:
        try:
            return Candidate.from_dict(rec, self.interval)
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            rid = rec.get("id") if isinstance(rec, dict) else None
            raise CorruptArchiveError(
                f"{self.path}: record {rid!r} cannot be read ({exc}); it was not modified; fix or remove that record"
            ) from None

    def refresh(self) -> bool:
        """Re-read the file if it was replaced since we last read or wrote it; True when it was."""
        if _signature(self.path) == self._sig:
            return False
        self._load()
        return True

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    # -- reading -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._cands)

    def __contains__(self, cand_id: object) -> bool:
        return cand_id in self._cands

    def get(self, cand_id: str) -> Candidate:
        try:
            return self._cands[cand_id]
        except KeyError:
            known = ", ".join(list(self._cands)[:20]) or "none"
            raise UnknownCandidateError(f"no candidate {cand_id!r} in {self.path} (known: {known})") from None

    def all(self) -> list[Candidate]:
        """Every candidate, in creation order."""
        return list(self._cands.values())

    def next_id(self) -> str:
        """The id the next candidate gets: "seed" first, then c001, c002, ..."""
        if "seed" not in self._cands:
            return "seed"
        nums = [int(c[1:]) for c in self._cands if c[:1] == "c" and c[1:].isdigit()]
        return f"c{max(nums, default=0) + 1:03d}"

    # -- writing -------------------------------------------------------------------------

    def store_recomputed_intervals(self) -> int:
        """Write back the records whose intervals were recomputed at load ([stats] interval changed, or an
        archive from before t intervals), so that readers stop recomputing them at every reload (~12 ms a
        candidate). The engine calls it at start, under its lock. Returns how many records it wrote."""
        self._check_writable()
        records = {cid: self._cands[cid].to_dict() for cid in self._cands if cid in self._stale}
        if records:  # one write of the file for all of them, not one per record

            def apply(doc: dict[str, Any]) -> None:
                _replace_with(records[doc["id"]])(doc)

            self._db.table(TABLE).update(apply, doc_ids=[self._doc_ids[cid] for cid in records])  # type: ignore[union-attr]
            self._sig = _signature(self.path)
        self._stale.clear()
        return len(records)

    def _check_writable(self) -> None:
        if self.readonly:
            raise ArchiveError(f"{self.path} is open read-only; only the engine writes the archive")
        self.refresh()  # never write on top of a newer file than the one we read

    def _commit(self, cand: Candidate) -> Candidate:
        """Persist one whole record (replacing its stored dict) and keep memory in step."""
        table = self._db.table(TABLE)  # type: ignore[union-attr]
        record = cand.to_dict()
        if cand.id in self._doc_ids:
            table.update(_replace_with(record), doc_ids=[self._doc_ids[cand.id]])
        else:
            self._doc_ids[cand.id] = table.insert(record)
        self._cands[cand.id] = cand
        self._sig = _signature(self.path)
        return cand

    def add(self, cand: Candidate, reason: str = "created") -> Candidate:
        """Insert a new candidate; its parents must exist. Its first history entry is its status."""
        self._check_writable()
        if cand.id in self._cands:
            raise ArchiveError(f"candidate {cand.id!r} already exists in {self.path}; use archive.next_id()")
        self._check_fields(cand)
        now = time.time()
        cand = dataclasses.replace(
            cand, created_at=cand.created_at or now, schema_version=SCHEMA_VERSION,
            history=cand.history or [{"status": cand.status, "at": now, "reason": reason}],
        )
        return self._commit(cand)

    def _check_fields(self, cand: Candidate) -> None:
        for pid in cand.parent_ids:
            self.get(pid)
        if cand.origin not in ORIGINS:
            raise ArchiveError(f"candidate {cand.id!r}: origin {cand.origin!r} is not one of {', '.join(ORIGINS)}")
        if cand.status not in STATUSES:
            raise ArchiveError(f"candidate {cand.id!r}: status {cand.status!r} is not one of {', '.join(STATUSES)}")

    def update(self, cand_id: str, **fields: Any) -> Candidate:
        """Change fields of a candidate (not id, status or history: use set_status)."""
        self._check_writable()
        bad = sorted(set(fields) - _FIELDS | set(fields) & {"id", "status", "history", "schema_version"})
        if bad:
            raise ArchiveError(f"cannot update {bad[0]!r} of {cand_id!r}; status changes go through set_status, "
                               f"updatable fields: {', '.join(sorted(_FIELDS - {'id', 'status', 'history', 'schema_version'}))}")
        cand = dataclasses.replace(self.get(cand_id), **fields)
        self._check_fields(cand)
        return self._commit(cand)

    def set_status(self, cand_id: str, status: str, reason: str = "") -> Candidate:
        """Move a candidate along its lifecycle; illegal moves raise ArchiveError naming the allowed ones."""
        self._check_writable()
        cand = self.get(cand_id)
        if status not in STATUSES:
            raise ArchiveError(f"unknown status {status!r}; valid: {', '.join(STATUSES)}")
        allowed = TRANSITIONS[cand.status]
        if status not in allowed:
            raise ArchiveError(
                f"candidate {cand_id!r} cannot go from {cand.status!r} to {status!r}; "
                f"allowed from {cand.status!r}: {', '.join(allowed) or 'nothing (final state)'}"
            )
        entry = {"status": status, "at": time.time(), "reason": reason}
        return self._commit(dataclasses.replace(cand, status=status, history=[*cand.history, entry]))

    def record_result(self, cand_id: str, seed: int, result: JobResult | dict[str, Any]) -> Candidate:
        """Store one seed's JobResult and recompute the candidate's metrics from all its seeds."""
        self._check_writable()
        cand = self.get(cand_id)
        res = asdict(result) if isinstance(result, JobResult) else dict(result)
        results = {**cand.results, str(seed): res}
        seeds = cand.seeds if seed in cand.seeds else sorted([*cand.seeds, seed])
        cand = dataclasses.replace(cand, results=results, seeds=seeds, metrics=aggregate_results(results, self.interval))
        return self._commit(cand)

    def add_cost(self, cand_id: str, stage: str, wall_s: float = 0.0, llm_tokens: int = 0, llm_s: float = 0.0) -> Candidate:
        """Accumulate the cost of one stage (propose, implement, verify, train, reflect, ...)."""
        self._check_writable()
        cand = self.get(cand_id)
        costs = {**_default_costs(), **cand.costs}
        wall = dict(costs["wall_s"])
        wall[stage] = wall.get(stage, 0.0) + wall_s
        costs.update(wall_s=wall, llm_tokens=costs["llm_tokens"] + llm_tokens, llm_s=costs["llm_s"] + llm_s)
        return self._commit(dataclasses.replace(cand, costs=costs))

    # -- lineage -------------------------------------------------------------------------

    def _children_index(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {cid: [] for cid in self._cands}
        for cand in self._cands.values():
            for pid in cand.parent_ids:
                index.setdefault(pid, []).append(cand.id)
        return index

    def children(self, cand_id: str) -> list[Candidate]:
        self.get(cand_id)
        return [self._cands[c] for c in self._children_index()[cand_id]]

    def roots(self) -> list[Candidate]:
        """Candidates without (known) parents: the seed, and any imported root."""
        return [c for c in self._cands.values() if not any(p in self._cands for p in c.parent_ids)]

    def ancestors(self, cand_id: str) -> list[Candidate]:
        """All ancestors, nearest first (breadth-first over both parents of a crossover), each once."""
        return [self._cands[a] for a in self._distances_up(cand_id) if a != cand_id]

    def _distances_up(self, cand_id: str) -> dict[str, int]:
        dist = {cand_id: 0}
        frontier = [self.get(cand_id)]
        while frontier:
            nxt = []
            for cand in frontier:
                for pid in cand.parent_ids:
                    if pid in self._cands and pid not in dist:
                        dist[pid] = dist[cand.id] + 1
                        nxt.append(self._cands[pid])
            frontier = nxt
        return dist

    def distance(self, descendant: str, ancestor: str) -> int | None:
        """Generations from ancestor down to descendant (shortest path), None if not an ancestor."""
        self.get(ancestor)
        return self._distances_up(descendant).get(ancestor)

    def depth(self, cand_id: str) -> int:
        """0 for a root; otherwise one more than its deepest parent (so a child is drawn below both parents)."""
        memo: dict[str, int] = {}

        def walk(cid: str) -> int:
            if cid not in memo:
                parents = [p for p in self._cands[cid].parent_ids if p in self._cands]
                memo[cid] = 1 + max(map(walk, parents)) if parents else 0
            return memo[cid]

        self.get(cand_id)
        return walk(cand_id)

    def subtree(self, cand_id: str) -> list[Candidate]:
        """The candidate and all its descendants, breadth-first, each once."""
        index = self._children_index()
        order, seen, frontier = [], {cand_id}, [self.get(cand_id).id]
        while frontier:
            order.extend(frontier)
            nxt = [c for cid in frontier for c in index[cid] if c not in seen]
            seen.update(nxt)
            frontier = list(dict.fromkeys(nxt))
        return [self._cands[c] for c in order]

    # -- selection views -----------------------------------------------------------------

    def scored(self, keys: Iterable[str] = ("overall",), part: str = "selection") -> list[Candidate]:
        """Evaluated (or reflected-after-evaluation) candidates that have every metric in keys."""
        keys = list(keys)
        return [
            c for c in self._cands.values()
            if c.status in SCORED and all(c.score(k, part) is not None for k in keys)
        ]

    def pareto_front(self, keys: list[str], part: str = "selection") -> list[Candidate]:
        """Non-dominated scored candidates on the mean of each benchmark in keys (higher is better)."""
        if not keys:
            raise ArchiveError("pareto_front needs at least one benchmark name")
        import numpy as np  # lazily: the TUI opens archives without needing numpy

        pool = self.scored(keys, part)
        vals = np.array([[c.score(k, part) for k in keys] for c in pool], dtype=np.float64).reshape(len(pool), len(keys))  # [N, K]
        return [c for c, v in zip(pool, vals) if not _dominated(vals, v)]

    def best(self, part: str = "selection") -> Candidate | None:
        """The scored candidate with the highest Overall mean (earliest wins a tie); None if none."""
        pool = self.scored(["overall"], part)
        return max(pool, key=lambda c: c.score("overall", part), default=None)


def _dominated(vals: np.ndarray, v: np.ndarray) -> bool:
    """Whether any row of vals [N, K] is >= v [K] everywhere and > somewhere."""
    return bool(((vals >= v).all(axis=1) & (vals > v).any(axis=1)).any())


def _replace_with(record: dict[str, Any]) -> Any:
    def apply(doc: dict[str, Any]) -> None:
        # Replace, not merge: keys a migration renamed must not linger next to their new names.
        doc.clear()
        doc.update(record)

    return apply
