"""The LLM side of the loop, wired to the archive and the workspace: select parents, propose,
screen, implement, repair, reflect. The operators themselves (core/operators/) know nothing of
files; this module turns their results into archive records and commits.

Every LLM output that cannot be used becomes a `rejected` candidate with its reason, so the
archive holds every stage of every attempt and a malformed reply never crashes the engine.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from core.config import RunConfig
from core.engine import fault_point
from core.errors import PoiseError
from core.eval_noise import seeds_on_other_warm_starts
from core.jobspec import read_metrics
from core.rundir import RunPaths

SCORED = ("evaluated", "reflected")


@dataclass
class ChildPlan:
    """One parent's proposals and screening, computed but not yet written (Discovery.plan_child); the
    archive records are made by Discovery.record_child, in the engine's thread."""

    pid: str
    directive: str
    unusable: list = field(default_factory=list)  # Rejection per reply that was no usable proposal
    screened_out: list = field(default_factory=list)  # Screened that failed a gate (never the best)
    best: Any = None  # the Screened to implement, None when every proposal failed a gate
    ranking: list[dict] = field(default_factory=list)  # every Screened.to_dict(), best first
    calls: list = field(default_factory=list)  # CallRecord of every LLM call made
    started: float = 0.0
    finished: float = 0.0

    @property
    def seconds(self) -> float:
        return max(self.finished - self.started, 0.0)

    @property
    def tokens(self) -> int:
        return sum(c.prompt_tokens + c.completion_tokens for c in self.calls)


class Discovery:
    def __init__(self, archive, ws, cfg: RunConfig, paths: RunPaths, should_stop: Any = None) -> None:
        self.archive, self.ws, self.cfg, self.paths = archive, ws, cfg, paths
        self._should_stop = should_stop  # the engine's stop request: ends an LLM call in flight
        self._llm = None
        self._library = None
        self._round = 0
        self._unusable_reflections = 0  # consecutive LLM reflections that fell back (this engine run)
        self._last_reflection_error = ""

    # ---- shared resources, created on first use (the model loads once per engine) ----
    @property
    def llm(self):
        if self._llm is None:
            from core.llm import make_llm
            from core.llm.base import StoppableLLM

            llm = make_llm(self.cfg.llm)
            self._llm = StoppableLLM(llm, self._should_stop) if self._should_stop else llm
        return self._llm

    @property
    def library(self):
        if self._library is None:
            from core.operators.implement import RegistryLibrary

            self._library = RegistryLibrary()
        return self._library

    def check(self):
        from core.operators.implement import default_check

        return default_check()

    # ---- views of archive nodes for prompts ----
    def rows(self, cid: str) -> list[dict]:
        """Training curve of the candidate's first seed with a result (what the prompts summarise)."""
        cand = self.archive.get(cid)
        for seed in sorted(cand.results or {}, key=lambda s: int(s) if s.isdigit() else 0):
            rows = read_metrics(self.paths.job_dir(cid, seed) / "metrics.jsonl")
            if rows:
                return rows
        return []

    def node(self, cid: str, with_source: bool = True):
        from core.operators.context import NodeView

        cand = self.archive.get(cid)
        source = self.ws.read_algorithm(cid) if with_source and cand.commit else ""
        return NodeView.from_candidate(cand, source=source, rows=self.rows(cid))

    def scored(self) -> list:
        return [c for c in self.archive.all() if c.status in SCORED]

    # ---- select ----
    def select_parents(self) -> list[str]:
        import numpy as np

        from core.operators.select import NoEligibleParentError, select_parents

        self._round += 1
        rng = np.random.default_rng(len(self.archive.all()) * 7919 + self._round)
        try:
            picks = select_parents(self.scored(), self.cfg.search.selection, rng)
        except NoEligibleParentError as exc:
            raise PoiseError(f"no parent can be selected: {exc}") from exc
        return [p.id for p in picks]

    # ---- propose + screen: each parent yields at most one new `proposed` candidate ----
    def propose_children(self, parent_ids: list[str], directive: str = "") -> list[str]:
        created = []
        for pid in parent_ids:
            cid = self.propose_one_child(pid, directive)
            if cid:
                created.append(cid)
        return created

    def reference_tiers(self, pid: str) -> tuple[list, list, list]:
        """Pareto-front nodes, structurally contrasting nodes (other mechanism tags), nodes outside the lineage."""
        lineage = {pid, *(a.id for a in self.archive.ancestors(pid))}
        scored = [c for c in self.scored() if c.id != pid]
        keys = self.split_keys()  # none while nothing is scored (e.g. a fork before any evaluation)
        front = self.archive.pareto_front(keys, "selection") if keys else []
        pareto = [c for c in front if c.id != pid][:3]
        from core.features import mechanism_names  # tags minus status tags such as `confirmed`

        parent_mechs = mechanism_names(self.archive.get(pid))
        contrasting = [c for c in scored if mechanism_names(c) - parent_mechs][:2]
        outside = [c for c in scored if c.id not in lineage][:2]
        view = lambda cs: [self.node(c.id, with_source=False) for c in cs]
        return view(pareto), view(contrasting), view(outside)

    def split_keys(self) -> list[str]:
        for c in self.scored():
            keys = [k for k in (c.metrics or {}).get("selection", {}) if k != "overall"]
            if keys:
                return sorted(keys)
        return []

    def propose_one_child(self, pid: str, directive: str) -> str | None:
        return self.record_child(self.plan_child(pid, directive))

    def plan_child(self, pid: str, directive: str) -> ChildPlan:
        """Propose for `pid` and screen the proposals: LLM calls and reads of this Discovery's archive and
        repo only, no writes, so it can run on a snapshot (`reader()`) in a background thread."""
        from core.operators.propose import ProposalContext, propose
        from core.operators.screen import screen

        plan = ChildPlan(pid=pid, directive=directive, started=time.time())
        pareto, contrasting, outside = self.reference_tiers(pid)
        ctx = ProposalContext(parent=self.node(pid), pareto=pareto, contrasting=contrasting, outside=outside,
                              directive=directive, use_reflection=self.cfg.search.use_reflection,
                              use_priors=self.cfg.search.use_priors)
        rnd = propose(self.llm, ctx, n=self.cfg.search.proposals_per_parent, mode=self.cfg.search.change_mode,
                      cfg=self.cfg.llm, library=self.library, seed=self.proposal_seed())
        plan.calls, plan.unusable = list(rnd.calls), list(rnd.rejections)
        if rnd.proposals:
            known = [self.node(c.id) for c in self.archive.all() if c.commit and c.status not in ("rejected", "vetoed")]
            result = screen(self.llm, rnd.proposals, parent=ctx.parent, archive=known, library=self.library,
                            check=self.check(), cfg=self.cfg.llm)
            plan.calls += result.calls
            plan.best, plan.ranking = result.best, [s.to_dict() for s in result.ranking]
            plan.screened_out = [s for s in result.ranking if s is not result.best and not s.passed]
        plan.finished = time.time()
        return plan

    def record_child(self, plan: ChildPlan, waited_s: float | None = None) -> str | None:
        """Write what `plan_child` found: its rejections, then the new `proposed` candidate and its cost.

        `waited_s`: None when the plan was computed just now in the foreground (its whole time is charged);
        else the part of a background plan the engine waited for, and the rest is recorded as overlapped."""
        t0 = time.time()
        pid = plan.pid
        for rej in plan.unusable:
            self.record_rejection(pid, "(unusable proposal)", str(rej), {"stage": rej.stage, "detail": rej.detail})
        if not plan.ranking:
            return None
        for s in plan.screened_out:
            self.record_rejection(pid, s.proposal.title, "screening: " + "; ".join(s.reasons), {"proposal": s.proposal.to_dict()})
        if plan.best is None:
            return None
        cid = self.add_proposed(pid, plan.best.proposal, plan.ranking)
        fault_point("propose:recorded")
        wall = time.time() - plan.started if waited_s is None else waited_s + time.time() - t0
        self.charge(cid, "propose", wall, plan.calls)
        if waited_s is not None:
            self.note_overlap(cid, "propose", plan.seconds - waited_s)
        return cid

    def note_overlap(self, cid: str, stage: str, seconds: float) -> None:
        """Seconds of `stage` that ran in the background while the engine did something else: kept apart
        from costs.wall_s (the engine's own time per stage), so per-stage wall times still sum to the run."""
        costs = dict(self.archive.get(cid).costs)
        costs["overlapped_s"] = {**costs.get("overlapped_s", {}), stage: round(max(seconds, 0.0), 3)}
        self.archive.update(cid, costs=costs)

    def reader(self, llm: Any = None) -> Discovery:
        """A Discovery over a snapshot of the run: its own read-only Archive and Workspace (TinyDB and
        GitPython objects are not shared across threads), sharing this one's mechanism library and model
        (or `llm`, e.g. a wrapper of it; the llama.cpp backend serialises calls with its own lock).
        For `plan_child` in a background thread."""
        from core.archive import Archive
        from core.workspace import Workspace

        view = Discovery(Archive.open(self.paths.root, readonly=True, interval=self.cfg.stats.interval), Workspace.open(self.paths.root), self.cfg, self.paths)
        view._llm, view._library, view._round = llm or self.llm, self.library, self._round
        return view

    @property
    def rounds(self) -> int:
        """Parent selections made so far (part of the selection rng's seed)."""
        return self._round

    def close(self) -> None:
        """Release the snapshot's git helper processes (a reader's; the engine's own live as long as it does)."""
        self.ws.close()
        self.archive.close()

    def record_children(self, plans: list[ChildPlan], waited: list[float], rounds: int) -> list[str]:
        """Record plans made in the background (in parent order, as a foreground round would) and take over
        the reader's round counter, so later rounds draw the same parent-selection rng as without prefetch."""
        self._round = max(self._round, rounds)
        return [cid for plan, w in zip(plans, waited, strict=True) if (cid := self.record_child(plan, w))]

    def proposal_seed(self) -> int:
        """Different seeds every round (a repeated parent gets new proposals), reproducible from the archive size."""
        return self.cfg.llm.seed + 1000 * len(self.archive.all())

    def add_proposed(self, pid: str, prop, ranking: list[dict]) -> str:
        from core.archive import Candidate

        d = prop.to_dict()
        proposal = {**d, "change_mode": d.get("mode"), "screening": ranking}
        comp = (d.get("change") or {}).get("composition") or {}
        cid = self.archive.next_id()
        self.archive.add(Candidate(id=cid, title=prop.title[:80] or "untitled", parent_ids=[pid], origin="llm",
                                   proposal=proposal, status="proposed", seeds=list(self.cfg.seeds),
                                   tags=_tags(comp), created_at=time.time()))
        return cid

    def record_rejection(self, pid: str, title: str, reason: str, proposal: dict[str, Any]) -> str:
        from core.archive import Candidate

        cid = self.archive.next_id()
        self.archive.add(Candidate(id=cid, title=title[:80], parent_ids=[pid], origin="llm", proposal=proposal,
                                   status="proposed", created_at=time.time()))
        self.archive.set_status(cid, "rejected", reason[:500])
        return cid

    def charge(self, cid: str, stage: str, wall_s: float, calls: list) -> None:
        tokens = sum(c.prompt_tokens + c.completion_tokens for c in calls)
        self.archive.add_cost(cid, stage, wall_s=wall_s, llm_tokens=tokens, llm_s=sum(c.seconds for c in calls))

    # ---- implement ----
    def proposal_of(self, cid: str):
        from core.operators.propose import Proposal

        p = dict(self.archive.get(cid).proposal)
        p.setdefault("mode", p.get("change_mode", "compose"))
        return Proposal.from_dict({"motivation": "", "mechanism": "", "hypothesis": "", "expected_signals": "",
                                   "change": {}, **p})

    def implement(self, cid: str) -> None:
        from core.operators import Rejection
        from core.operators.implement import implement

        t0 = time.time()
        cand = self.archive.get(cid)
        pid = cand.parent_ids[0]
        out = implement(self.proposal_of(cid), self.ws.read_algorithm(pid), self.library, self.check())
        if isinstance(out, Rejection):
            self.archive.set_status(cid, "rejected", str(out)[:500])
            return
        commit = self.ws.create_candidate(cid, pid, out, f"{cand.title} [{cid}]")
        fault_point("implement:committed")
        self.archive.update(cid, branch=f"cand/{cid}", commit=commit)
        self.archive.add_cost(cid, "implement", wall_s=time.time() - t0)
        self.archive.set_status(cid, "implemented")

    def repair_fn(self, cid: str):
        from core.operators import Rejection
        from core.operators.implement import repair

        attempt = [0]

        def fix(source: str, error: str) -> str | None:
            t0 = time.time()
            out, record = repair(self.llm, self.proposal_of(cid), source, error, library=self.library,
                                 check=self.check(), cfg=self.cfg.llm, attempt=attempt[0])
            attempt[0] += 1
            self.charge(cid, "repair", time.time() - t0, [record])
            return None if isinstance(out, Rejection) else out

        return fix

    # ---- reflect ----
    def reflect(self, cid: str) -> None:
        cand = self.archive.get(cid)
        if cid == "seed" or not self.cfg.search.use_reflection or not cand.parent_ids:
            self.archive.set_status(cid, "reflected", "no reflection (seed or ablation)")
            return
        from core.operators.reflect import ReflectionInput, fallback_reflection, reflect

        t0 = time.time()
        pid = cand.parent_ids[0]
        inp = ReflectionInput(candidate_id=cid, proposal=dict(cand.proposal), diff=self.ws.diff(cid, against="parent"),
                              rows=self.rows(cid), parent_rows=self.rows(pid), metrics=dict(cand.metrics or {}),
                              parent_metrics=dict(self.archive.get(pid).metrics or {}),
                              baseline_metrics=dict(self.archive.get("seed").metrics or {}), outcome=cand.status,
                              unpaired_seeds=seeds_on_other_warm_starts(cand.results or {}, self.archive.get(pid).results or {}))
        skip = self.reflection_skip_reason()
        if skip:
            refl, calls = dataclasses.replace(fallback_reflection(inp, ""), error=skip), []
        else:
            refl, record = reflect(self.llm, inp, cfg=self.cfg.llm)
            calls = [record]
            self._unusable_reflections = self._unusable_reflections + 1 if refl.fallback else 0
            self._last_reflection_error = record.error
        self.archive.update(cid, reflection=refl.to_dict())
        fault_point("reflect:recorded")
        self.charge(cid, "reflect", time.time() - t0, calls)
        self.archive.set_status(cid, "reflected", "reflection fell back: " + refl.error if refl.fallback else "")

    def reflection_skip_reason(self) -> str:
        """Why the LLM is not asked for this reflection ("" = ask it): its last reflections in this engine
        run were all unusable. Counted per engine run, so a restart with another model asks again."""
        n = self.cfg.search.reflect_giveup_after
        if n <= 0 or self._unusable_reflections < n:
            return ""
        return (f"LLM not asked: its last {self._unusable_reflections} reflections in this run were unusable "
                f"({self._last_reflection_error}); [search] reflect_giveup_after = 0 always asks")


def _tags(composition: dict) -> list[str]:
    """Mechanism names used by a composition, for filtering and features."""
    tags = []
    for value in composition.values():
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            tags.append(value["name"])
        elif isinstance(value, str):
            tags.append(value)
        elif isinstance(value, list):
            tags += [v["name"] if isinstance(v, dict) else str(v) for v in value if isinstance(v, (dict, str))]
    return sorted(set(tags))
