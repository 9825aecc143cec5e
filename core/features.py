"""Node features for parent selection: the GP's inputs and the space that diversity is measured in.

Pure numpy and no I/O, so selection is a function of the archive alone. A "candidate" here is
anything with the archive's Candidate attributes: id, parent_ids, status, metrics, proposal, tags.

The feature row of a node holds, in this column order:

  sel:<split>   the node's mean score on each benchmark split of the selection part (one column per
                split that any eligible node has; a node missing a split gets the column mean, so a
                gap neither helps nor hurts it). Distinguishes specialists from generalists.
  overall       the selection-part Overall, i.e. the utility U the whole search maximises.
  depth         generations from the root (the seed is 0; a crossover is one below its deeper parent,
                as Archive.depth). Deep
                nodes have been refined many times; the GP can learn that they saturate.
  children      direct children of the node in the whole archive, any status: how much the node has
                already been expanded (the paper's GP conditions on exactly this kind of history).
  mech:<name>   1.0 if the node uses mechanism <name> (its tags, or the names in
                proposal["composition"]), else 0.0. The vocabulary is the sorted union of the names
                the nodes use: a registry name that no node uses would be an all-zero column, which
                changes neither a distance nor the GP, so leaving it out is equivalent and keeps the
                features independent of the registry's import.
  curve:<stat>  optional per-node curve statistics (see `curve_summary`) when the caller passes
                them; a node without them gets the column mean.

`standardized()` z-scores the columns (zero-variance columns become 0), so no feature dominates a
Euclidean distance or the GP's isotropic kernel because of its units.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from core.elites import CONFIRMED_TAG

# Statuses whose metrics are complete: only these can be parents or count as descendants.
EVALUATED_STATUSES = ("evaluated", "reflected")
SELECTION_PART = "selection"
OVERALL_KEY = "overall"


class CandidateLike(Protocol):
    id: str
    parent_ids: list[str]
    status: str
    metrics: dict[str, Any]
    proposal: dict[str, Any]
    tags: list[str]


@dataclass
class FeatureMatrix:
    """Rows follow `ids`, columns follow `names`; X is float64 [N, F]."""

    ids: list[str]
    names: list[str]
    X: np.ndarray  # [N, F]

    def standardized(self) -> np.ndarray:
        """Z-scored copy [N, F]; a constant column becomes 0 instead of NaN."""
        mu = self.X.mean(axis=0)  # [F]
        sd = self.X.std(axis=0)  # [F]
        safe = np.where(sd > 0, sd, 1.0)
        return np.where(sd > 0, (self.X - mu) / safe, 0.0)

    def column(self, name: str) -> np.ndarray:
        return self.X[:, self.names.index(name)]  # [N]


# ---- metrics -------------------------------------------------------------------------------------


def utility(c: CandidateLike, part: str = SELECTION_PART) -> float | None:
    """The node's Overall on `part` (the utility U), or None when it has none."""
    try:
        return float(c.metrics[part][OVERALL_KEY]["mean"])
    except (KeyError, TypeError, ValueError):
        return None


def split_scores(c: CandidateLike, part: str = SELECTION_PART) -> dict[str, float]:
    """Mean score per benchmark split of `part`, without the Overall."""
    table = (c.metrics or {}).get(part) or {}
    out: dict[str, float] = {}
    for split, stats in table.items():
        if split == OVERALL_KEY or not isinstance(stats, dict) or "mean" not in stats:
            continue
        out[split] = float(stats["mean"])
    return out


def is_evaluated(c: CandidateLike) -> bool:
    """Eligible as a parent: finished evaluation (maybe reflected) and has a utility."""
    return c.status in EVALUATED_STATUSES and utility(c) is not None


# ---- lineage -------------------------------------------------------------------------------------


def children_map(candidates: Iterable[CandidateLike]) -> dict[str, list[str]]:
    """id -> ids of its direct children, in input order (a child with two parents appears twice)."""
    kids: dict[str, list[str]] = {}
    for c in candidates:
        kids.setdefault(c.id, [])
        for p in c.parent_ids or []:
            kids.setdefault(p, []).append(c.id)
    return kids


def descendant_depths(node_id: str, children: Mapping[str, list[str]]) -> dict[str, int]:
    """Every descendant of `node_id` -> generations below it (child = 1), shortest path (BFS)."""
    depths: dict[str, int] = {}
    queue = deque([(node_id, 0)])
    while queue:
        cur, d = queue.popleft()
        for kid in children.get(cur, []):
            if kid not in depths and kid != node_id:
                depths[kid] = d + 1
                queue.append((kid, d + 1))
    return depths


def root_depths(candidates: Sequence[CandidateLike]) -> dict[str, int]:
    """id -> 0 for a root, else 1 + the deepest parent's depth (as Archive.depth: below both parents)."""
    by_id = {c.id: c for c in candidates}
    memo: dict[str, int] = {}

    def walk(cid: str, seen: frozenset[str]) -> int:
        if cid not in memo:
            parents = [p for p in (by_id[cid].parent_ids or []) if p in by_id and p not in seen]
            memo[cid] = 1 + max(walk(p, seen | {cid}) for p in parents) if parents else 0
        return memo[cid]

    return {cid: walk(cid, frozenset()) for cid in by_id}


# ---- mechanisms ----------------------------------------------------------------------------------


def mechanism_names(c: CandidateLike) -> set[str]:
    """Mechanism names a node uses: its tags plus the names found in proposal['composition'].
    Status tags (e.g. `confirmed` from elite confirmation) are not mechanisms."""
    names = {str(t) for t in (c.tags or []) if t not in STATUS_TAGS}
    comp = (c.proposal or {}).get("composition")
    names.update(_names_in(comp))
    return names


STATUS_TAGS = (CONFIRMED_TAG,)
_PARAM_KEYS = ("params", "hparams", "kwargs")


def _names_in(comp: Any) -> set[str]:
    """Mechanism names in a composition, whatever its nesting.

    Accepts a name, {"name": ..., "params": ...}, a list of those, or a table of slots such as
    {"advantage": "vm", "loss": {"name": "dapo_clip", "params": {...}}}. Parameter tables are
    skipped, so numbers and knob names never become mechanism columns.
    """
    if isinstance(comp, str):
        return {comp}
    if isinstance(comp, list):
        return set().union(*(_names_in(x) for x in comp)) if comp else set()
    if isinstance(comp, dict):
        if isinstance(comp.get("name"), str):
            return {comp["name"]}
        found = [_names_in(v) for k, v in comp.items() if k not in _PARAM_KEYS]
        return set().union(*found) if found else set()
    return set()


# ---- curves --------------------------------------------------------------------------------------


def curve_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Statistics of one metrics.jsonl: final value (mean of the last quarter) and slope per key.

    `final:<key>` is robust to the last step's noise; `slope:<key>` is the least-squares trend per
    step, the number a reflection calls "reward still rising".
    """
    out: dict[str, float] = {}
    for key in ("reward_mean", "accuracy", "entropy", "kl", "response_length", "valid_rate"):
        ys = np.array([float(r[key]) for r in rows if isinstance(r.get(key), (int, float))])  # [S]
        if ys.size == 0:
            continue
        tail = ys[-max(1, ys.size // 4):]
        out[f"final:{key}"] = float(tail.mean())
        out[f"slope:{key}"] = float(np.polyfit(np.arange(ys.size), ys, 1)[0]) if ys.size > 1 else 0.0
    return out


# ---- the matrix ----------------------------------------------------------------------------------


def node_features(
    nodes: Sequence[CandidateLike],
    archive: Sequence[CandidateLike] | None = None,
    curve_stats: Mapping[str, Mapping[str, float]] | None = None,
) -> FeatureMatrix:
    """Feature rows for `nodes`; lineage columns (depth, children) are computed over `archive`.

    `archive` defaults to `nodes`; pass the whole archive so that a node's rejected or running
    children still count as expansion.
    """
    archive = list(archive) if archive is not None else list(nodes)
    splits = sorted(set().union(*(split_scores(n) for n in nodes))) if nodes else []
    mechs = sorted(set().union(*(mechanism_names(n) for n in nodes))) if nodes else []
    curve_keys = sorted({k for n in nodes for k in (curve_stats or {}).get(n.id, {})})
    depth, kids = root_depths(archive), children_map(archive)
    cols: list[tuple[str, list[float]]] = []
    cols += [(f"sel:{s}", [split_scores(n).get(s, np.nan) for n in nodes]) for s in splits]
    cols.append((OVERALL_KEY, [utility(n) if utility(n) is not None else np.nan for n in nodes]))
    cols.append(("depth", [float(depth.get(n.id, 0)) for n in nodes]))
    cols.append(("children", [float(len(kids.get(n.id, []))) for n in nodes]))
    cols += [(f"mech:{m}", [float(m in mechanism_names(n)) for n in nodes]) for m in mechs]
    cols += [(f"curve:{k}", [(curve_stats or {}).get(n.id, {}).get(k, np.nan) for n in nodes]) for k in curve_keys]
    X = np.array([v for _, v in cols], dtype=float).T.reshape(len(nodes), len(cols))  # [N, F]
    return FeatureMatrix([n.id for n in nodes], [name for name, _ in cols], _fill_column_means(X))


def _fill_column_means(X: np.ndarray) -> np.ndarray:
    """Replace NaN by its column's mean (0 when the whole column is missing). X: [N, F]."""
    X = X.copy()
    for j in range(X.shape[1]):
        col = X[:, j]
        missing = np.isnan(col)
        if missing.any():
            col[missing] = col[~missing].mean() if (~missing).any() else 0.0
    return X
