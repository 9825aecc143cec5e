"""Config of the discovery loop (section [search] of run.toml): selection, proposal, verification."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.configlib import opt


@dataclass
class SelectionConfig:
    mode: Literal["acquisition", "random", "greedy"] = opt("acquisition", "acquisition is the paper's score; random and greedy are ablations.")
    parents_per_round: int = opt(3, "Parents selected per round (paper: 3).")
    w_pareto: float = opt(0.3, "Weight of Pareto-front strength across benchmarks.")
    w_perf: float = opt(0.3, "Weight of normalised utility.")
    w_div: float = opt(0.2, "Weight of diversity (distance to other nodes).")
    w_bayes: float = opt(0.2, "Weight of the GP-UCB estimate of descendant gain.")
    top_k: int = opt(3, "K in the discounted top-K descendant gain.")
    gamma: float = opt(0.8, "Depth discount of descendant gain.")
    beta: float = opt(0.02, "Scale of tanh((U(c) - U(d)) / beta).")
    ucb_kappa: float = opt(1.0, "UCB exploration coefficient: mean + kappa * std.")


@dataclass
class SearchConfig:
    selection: SelectionConfig = opt(SelectionConfig(), "How parents are chosen each round.")
    proposals_per_parent: int = opt(3, "N proposals per parent; screening implements only the best.")
    change_mode: Literal["compose", "edit", "rewrite"] = opt("compose", "compose picks registered mechanisms (works with small models); edit and rewrite need a code model.")
    repair_attempts: int = opt(2, "K: bounded repair attempts after a failed verification.")
    use_reflection: bool = opt(True, "Feed reflections into proposals (False = ablation).")
    use_priors: bool = opt(True, "Feed literature priors into proposals (False = ablation).")
