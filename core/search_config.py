"""Config of the discovery loop (section [search] of run.toml): selection, proposal, verification."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.configlib import opt


@dataclass
class SelectionConfig:
    mode: Literal["acquisition", "random", "greedy"] = opt("acquisition", "acquisition is the paper's score; random and greedy are ablations.")
    parents_per_round: int = opt(3, "Parents selected per round (paper: 3).", at_least=1)
    w_pareto: float = opt(0.3, "Weight of Pareto-front strength across benchmarks.", at_least=0)
    w_perf: float = opt(0.3, "Weight of normalised utility.", at_least=0)
    w_div: float = opt(0.2, "Weight of diversity (distance to other nodes).", at_least=0)
    w_bayes: float = opt(0.2, "Weight of the GP-UCB estimate of descendant gain.", at_least=0)
    top_k: int = opt(3, "K in the discounted top-K descendant gain.", at_least=1)
    gamma: float = opt(0.8, "Depth discount of descendant gain.", at_least=0, at_most=1)
    beta: float = opt(0.02, "Scale of tanh((U(c) - U(d)) / beta).", above=0)
    ucb_kappa: float = opt(1.0, "UCB exploration coefficient: mean + kappa * std.", at_least=0)


@dataclass
class SearchConfig:
    selection: SelectionConfig = opt(SelectionConfig(), "How parents are chosen each round.")
    proposals_per_parent: int = opt(3, "N proposals per parent; screening implements only the best.", at_least=1)
    change_mode: Literal["compose", "edit", "rewrite"] = opt("compose", "compose picks registered mechanisms (works with small models); edit and rewrite need a code model.")
    repair_attempts: int = opt(2, "K: bounded repair attempts after a failed verification.", at_least=0)
    use_reflection: bool = opt(True, "Feed reflections into proposals (False = ablation).")
    reflect_giveup_after: int = opt(3, "After this many unusable LLM reflections in a row (one engine run), store the numeric summary without asking the LLM: a 135M model's reflections are noise and cost 20-40 s each on CPU. 0 = always ask.",
                                     at_least=0)
    use_priors: bool = opt(True, "Feed literature priors into proposals (False = ablation).")
    prefetch_proposals: bool = opt(True, "Propose the next round in the background while the last candidate of a round "
                                         "trains, hiding the LLM's time behind training. The price: those parents are "
                                         "chosen before that candidate's result is known (asynchronous evolution). "
                                         "False = propose only after it is reflected.")
    confirm_top_k: int = opt(2, "How many of the best candidates are re-evaluated on fresh seeds before they count "
                                "as the run's best (winner's curse); 0 = off.", at_least=0)
    confirm_when: Literal["end", "each_round"] = opt("end", "end confirms once the candidate budget is spent, before "
                                                     "the engine finishes; each_round as soon as a candidate enters the top k.")
