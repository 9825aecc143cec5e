"""Parent selection: hand-computed descendant gain and Pareto strength, the acquisition, ablations."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.archive import Archive, Candidate
from core.errors import PoiseError
from core.features import children_map, curve_summary, node_features, utility
from core.jobspec import JobResult
from core.operators.select import (
    PRIOR_STD,
    NoEligibleParentError,
    descendant_gain,
    pareto_strength,
    score_candidates,
    select_parents,
)
from core.search_config import SelectionConfig

NodeSpec = tuple[str, list[str], float | None]


def build(tmp_path: Path, specs: list[NodeSpec], splits: dict[str, dict[str, float]] | None = None,
          tags: dict[str, list[str]] | None = None, status: dict[str, str] | None = None) -> list[Candidate]:
    """A real archive in tmp_path: each node evaluated on seed 0 with Overall u (None: not evaluated)."""
    arch = Archive.open(tmp_path, create=True)
    for cid, parents, u in specs:
        arch.add(Candidate(id=cid, title=f"node {cid}", parent_ids=parents, origin="llm" if parents else "seed",
                           tags=(tags or {}).get(cid, [])))
        if u is None:
            _walk(arch, cid, ["rejected"] if (status or {}).get(cid) != "training" else
                  ["implemented", "verified", "training"])
            continue
        _walk(arch, cid, ["implemented", "verified", "training"])
        sel = (splits or {}).get(cid, {})
        arch.record_result(cid, 0, JobResult("evaluated", eval={"selection": sel}, overall={"selection": u}))
        _walk(arch, cid, ["evaluated"])
    return Archive.open(tmp_path, readonly=True).all()


def _walk(arch: Archive, cid: str, statuses: list[str]) -> None:
    for st in statuses:
        arch.set_status(cid, st)


def small_tree(tmp_path: Path, splits: dict[str, dict[str, float]] | None = None) -> list[Candidate]:
    """R(0.50) -> A(0.53) -> C(0.56) -> D(0.51); R -> B(0.49); R -> E (rejected, no metrics)."""
    specs = [("R", [], 0.50), ("A", ["R"], 0.53), ("B", ["R"], 0.49), ("C", ["A"], 0.56), ("D", ["C"], 0.51),
             ("E", ["R"], None)]
    return build(tmp_path, specs, splits)


CFG = SelectionConfig(top_k=2, gamma=0.8, beta=0.02)


def gains(cands: list[Candidate], cfg: SelectionConfig = CFG) -> dict[str, float | None]:
    util = {c.id: u for c in cands if (u := utility(c)) is not None}
    kids = children_map(cands)
    return {cid: descendant_gain(cid, util, kids, cfg) for cid in util}


def test_descendant_gain_matches_hand_computation(tmp_path: Path) -> None:
    y = gains(small_tree(tmp_path))
    # R: descendants A(depth 1, .53) B(1, .49) C(2, .56) D(3, .51); top-2 by U are C and A.
    expected_r = (0.8**2 * math.tanh((0.56 - 0.50) / 0.02) + 0.8 * math.tanh((0.53 - 0.50) / 0.02)) / 2
    # A: descendants C(1, .56) and D(2, .51); both are in the top 2, D is a regression.
    expected_a = (0.8 * math.tanh((0.56 - 0.53) / 0.02) + 0.8**2 * math.tanh((0.51 - 0.53) / 0.02)) / 2
    # C: only D, one generation below, a regression.
    expected_c = 0.8 * math.tanh((0.51 - 0.56) / 0.02)
    assert y["R"] == pytest.approx(expected_r, abs=1e-12)
    assert y["R"] == pytest.approx(0.6804766, abs=1e-6)  # the same number, worked out on paper
    assert y["A"] == pytest.approx(expected_a, abs=1e-12)
    assert y["C"] == pytest.approx(expected_c, abs=1e-12)
    assert y["B"] is None and y["D"] is None  # leaves are predicted, not fitted


def test_top_k_one_uses_only_the_best_descendant(tmp_path: Path) -> None:
    y = gains(small_tree(tmp_path), replace(CFG, top_k=1))
    assert y["R"] == pytest.approx(0.64 * math.tanh(3.0), abs=1e-12)


def test_descendant_reached_twice_counts_once_at_its_shortest_depth(tmp_path: Path) -> None:
    # X has parents R and A (a crossover): from R it is one generation below, not two.
    specs = [("R", [], 0.50), ("A", ["R"], 0.53), ("X", ["R", "A"], 0.60)]
    cands = build(tmp_path, specs)
    y = gains(cands, replace(CFG, top_k=1))
    assert y["R"] == pytest.approx(0.8 * math.tanh(0.10 / 0.02), abs=1e-12)
    # As a feature, its depth is one below its deeper parent (Archive.depth's rule).
    assert node_features(cands).column("depth").tolist() == [0, 1, 2]
    assert Archive.open(tmp_path, readonly=True).depth("X") == 2


def test_pareto_strength_hand_computed() -> None:
    F = np.array([[0.6, 0.4], [0.4, 0.6], [0.5, 0.5], [0.3, 0.3], [0.55, 0.35]])
    # row 0 dominates rows 3 and 4; rows 1 and 2 dominate row 3; rows 3 and 4 are dominated.
    assert pareto_strength(F).tolist() == pytest.approx([3 / 5, 2 / 5, 2 / 5, 0.0, 0.0])


def test_pareto_specialist_on_the_front_scores_above_dominated_nodes() -> None:
    F = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # two specialists; row 2 is dominated by both
    assert pareto_strength(F).tolist() == pytest.approx([2 / 3, 2 / 3, 0.0])
    assert pareto_strength(np.array([[0.2, 0.0], [0.0, 0.3]])).tolist() == pytest.approx([0.5, 0.5])


def test_acquisition_parts_are_the_weighted_terms(tmp_path: Path) -> None:
    pairs = {"R": (0.5, 0.5), "A": (0.6, 0.46), "B": (0.48, 0.5), "C": (0.58, 0.54), "D": (0.5, 0.52)}
    cands = small_tree(tmp_path, {cid: {"easy": a, "hard": b} for cid, (a, b) in pairs.items()})
    cfg = replace(CFG, w_pareto=0.3, w_perf=0.3, w_div=0.2, w_bayes=0.2)
    table = score_candidates(cands, cfg)
    assert {s.id for s in table} == {"R", "A", "B", "C", "D"}  # the rejected E is never eligible
    for s in table:
        p = s.parts
        terms = 0.3 * p["pareto"] + 0.3 * p["perf"] + 0.2 * p["div"] + 0.2 * p["bayes"]
        assert s.score == pytest.approx(terms)
        assert p["bayes"] == pytest.approx(p["gp_mean"] + cfg.ucb_kappa * p["gp_std"])
        assert 0.0 <= p["perf"] <= 1.0 and 0.0 <= p["div"] <= 1.0 and 0.0 <= p["pareto"] <= 1.0
    by_id = {s.id: s.parts for s in table}
    assert by_id["C"]["perf"] == 1.0 and by_id["B"]["perf"] == 0.0  # min-max of Overall
    assert by_id["R"]["gain"] == pytest.approx(gains(cands)["R"])
    assert by_id["B"]["gain"] is None and by_id["R"]["gp_train"] == 3.0  # R, A and C have descendants
    assert [s.score for s in table] == sorted((s.score for s in table), reverse=True)


def lineage_trap(tmp_path: Path) -> list[Candidate]:
    """The paper's 11-of-21 situation: the best node's children all regressed, a weaker node's improved.

    S(0.45) seed; P1(0.60) has children 0.50 and 0.52; P2(0.40) has children 0.45 and 0.46.
    Greedy picks P1; P2 is the parent whose line actually improves.
    """
    specs = [("S", [], 0.45), ("P1", ["S"], 0.60), ("P2", ["S"], 0.40), ("P1a", ["P1"], 0.50),
             ("P1b", ["P1"], 0.52), ("P2a", ["P2"], 0.45), ("P2b", ["P2"], 0.46)]
    tags = {"S": [], "P1": ["clip_higher"], "P2": ["validity_mask"], "P1a": ["clip_higher", "token_mean"],
            "P1b": ["clip_higher", "kl_k3"], "P2a": ["validity_mask", "token_mean"],
            "P2b": ["validity_mask", "kl_k3"]}
    return build(tmp_path, specs, tags={k: ["grpo", *v] for k, v in tags.items()})


def test_strong_descendants_outrank_the_greedy_choice_when_bayes_dominates(tmp_path: Path) -> None:
    cands = lineage_trap(tmp_path)
    greedy = select_parents(cands, SelectionConfig(mode="greedy", parents_per_round=1))
    assert [s.id for s in greedy] == ["P1"]
    cfg = SelectionConfig(w_pareto=0.0, w_perf=0.05, w_div=0.0, w_bayes=1.0, ucb_kappa=0.0,
                          top_k=2, gamma=0.8, beta=0.02, parents_per_round=1)
    table = {s.id: s for s in score_candidates(cands, cfg)}
    assert table["P2"].parts["gain"] > 0.5 > -0.5 > table["P1"].parts["gain"]
    assert table["P2"].score > table["P1"].score
    assert [s.id for s in select_parents(cands, cfg)] == ["P2"]


def test_perf_weight_alone_is_greedy(tmp_path: Path) -> None:
    cands = lineage_trap(tmp_path)
    cfg = SelectionConfig(w_pareto=0.0, w_perf=1.0, w_div=0.0, w_bayes=0.0, parents_per_round=3)
    greedy = SelectionConfig(mode="greedy", parents_per_round=3)
    assert [s.id for s in select_parents(cands, cfg)] == [s.id for s in select_parents(cands, greedy)]
    assert [s.id for s in select_parents(cands, greedy)] == ["P1", "P1b", "P1a"]


def test_fewer_than_two_training_points_gives_the_prior_to_every_node(tmp_path: Path) -> None:
    cands = build(tmp_path, [("S", [], 0.45), ("A", ["S"], 0.50), ("B", ["S"], 0.40)])  # only S has descendants
    cfg = SelectionConfig(ucb_kappa=2.0)
    for s in score_candidates(cands, cfg):
        assert s.parts["gp_mean"] == 0.0 and s.parts["gp_std"] == PRIOR_STD
        assert s.parts["bayes"] == pytest.approx(2.0 * PRIOR_STD)
        assert s.parts["gp_train"] == 1.0


def test_gp_predicts_unexpanded_nodes_with_uncertainty(tmp_path: Path) -> None:
    cands = lineage_trap(tmp_path)
    table = {s.id: s.parts for s in score_candidates(cands, SelectionConfig(top_k=2))}
    assert table["P2a"]["gain"] is None
    # A never-expanded node is less certain than a node the GP was fitted on.
    assert table["P2a"]["gp_std"] > table["P2"]["gp_std"]


def test_random_ablation_is_seeded_and_uniform_over_eligible(tmp_path: Path) -> None:
    cands = small_tree(tmp_path)
    cfg = SelectionConfig(mode="random", parents_per_round=2)
    first = [s.id for s in select_parents(cands, cfg, np.random.default_rng(7))]
    again = [s.id for s in select_parents(cands, cfg, np.random.default_rng(7))]
    assert first == again and len(set(first)) == 2
    counts: dict[str, int] = {}
    one = replace(cfg, parents_per_round=1)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        (pick,) = select_parents(cands, one, rng)
        counts[pick.id] = counts.get(pick.id, 0) + 1
    assert set(counts) == {"R", "A", "B", "C", "D"}  # never the rejected E
    assert all(abs(n - 400) < 80 for n in counts.values()), counts  # 400 +- 4.5 sigma


def test_acquisition_is_deterministic_and_independent_of_input_order(tmp_path: Path) -> None:
    cands = lineage_trap(tmp_path)
    cfg = SelectionConfig(parents_per_round=3)
    first = score_candidates(cands, cfg)
    shuffled = cands[:]
    random.Random(3).shuffle(shuffled)
    second = score_candidates(shuffled, cfg)
    assert [s.id for s in first] == [s.id for s in second]
    for a, b in zip(first, second):
        assert a.score == pytest.approx(b.score, abs=1e-6)
    assert [s.id for s in select_parents(cands, cfg)] == [s.id for s in first[:3]]


def test_parents_per_round_is_capped_by_eligible_nodes(tmp_path: Path) -> None:
    cands = build(tmp_path, [("S", [], 0.45), ("X", ["S"], None)], status={"X": "training"})
    assert [c.status for c in cands] == ["evaluated", "training"]
    picks = select_parents(cands, SelectionConfig(parents_per_round=3))
    assert [s.id for s in picks] == ["S"]


def test_no_eligible_parent_says_what_to_do(tmp_path: Path) -> None:
    cands = build(tmp_path, [("S", [], None)])
    with pytest.raises(NoEligibleParentError, match="evaluate the seed") as exc:
        select_parents(cands, SelectionConfig())
    assert isinstance(exc.value, PoiseError)


def test_features_document_lineage_and_mechanisms(tmp_path: Path) -> None:
    cands = lineage_trap(tmp_path)
    cands[0] = replace(cands[0], proposal={"composition": {"advantage": {"name": "grpo_adv", "params": {"eps": "1e-6"}}}})
    fm = node_features(cands)
    assert fm.ids == [c.id for c in cands]
    assert fm.column("depth").tolist() == [0, 1, 1, 2, 2, 2, 2]
    assert fm.column("children").tolist() == [2, 2, 2, 0, 0, 0, 0]
    assert fm.column("mech:validity_mask").tolist() == [0, 0, 1, 0, 0, 1, 1]
    assert fm.column("mech:grpo_adv").tolist() == [1, 0, 0, 0, 0, 0, 0]
    assert "mech:1e-6" not in fm.names and "mech:eps" not in fm.names  # params are not mechanisms
    cands[1] = replace(cands[1], tags=[*cands[1].tags, "confirmed"])
    assert "mech:confirmed" not in node_features(cands).names  # elite confirmation is a status, not a mechanism
    Z = fm.standardized()
    assert np.isfinite(Z).all() and np.allclose(Z[:, fm.names.index("mech:grpo")], 0.0)  # constant column


def test_curve_summary_and_curve_columns(tmp_path: Path) -> None:
    rows = [{"step": s, "reward_mean": 0.1 * s, "kl": 0.0} for s in range(8)] + [{"step": 8}]
    stats = curve_summary(rows)
    assert stats["final:reward_mean"] == pytest.approx((0.6 + 0.7) / 2)  # mean of the last quarter (2 of 8)
    assert stats["slope:reward_mean"] == pytest.approx(0.1)
    assert stats["final:kl"] == 0.0 and "final:accuracy" not in stats
    cands = build(tmp_path, [("S", [], 0.45), ("A", ["S"], 0.50), ("B", ["S"], 0.40)])
    fm = node_features(cands, curve_stats={"S": stats, "A": {"final:reward_mean": 0.95}})
    # B has no curves: it gets the column mean, so the gap neither helps nor hurts it.
    assert fm.column("curve:final:reward_mean").tolist() == pytest.approx([0.65, 0.95, 0.80])
    assert fm.column("curve:final:kl").tolist() == [0.0, 0.0, 0.0]
