"""Proposals for the next round, made while the current candidate trains.

Why: on recipe tiny the LLM (proposal + screening calls) took 50-110 s per candidate and training
120-180 s, one after the other (bench/RESULTS.md, "Discovery loop"). The training job is a subprocess
on one torch thread and the engine's thread only polls it, so the LLM can run beside it.

How: when the engine starts training the last unfinished candidate of a round and the budget allows
another round, `start_prefetch` selects the next parents on a snapshot of the archive (its own
read-only Archive and Workspace, opened in the engine's thread) and a daemon thread runs
`Discovery.plan_child` for each: LLM calls and reads, never a write to the archive, the repo or
engine.json. So a kill -9 at any moment loses only the prefetch. At the next round the engine asks
`stale_reason`; a plan still valid is recorded in the engine's thread (`Discovery.record_children`),
else it is discarded and the round is proposed in the foreground as without prefetch.

The price of the overlap: parents are chosen before the training candidate's result is known
(asynchronous evolution, as in AlphaEvolve), and its reflection is not in those prompts.

A plan is valid when:
- the directive is the one it was made for (`set directive` during training discards it);
- the archive has exactly the candidates of the snapshot: a fork's child or a hand-added node would
  make the screening's novelty check stale (a duplicate could slip through), and the proposal seed
  (a function of the archive size) would differ from a foreground round;
- each parent is still scored, and its result on every seed the prompt showed is unchanged (a rerun
  changed what the prompt showed). New seeds do not make it stale: an elite confirmation between rounds
  (confirm_when = "each_round") adds fresh seeds to the very parents a round is likely to pick, and
  discarding for that would discard nearly every prefetched round in that mode.
The candidate trained meanwhile is in the snapshot, so its composition is never proposed again.

Costs: a recorded plan charges its calls' tokens and seconds as usual; costs.wall_s["propose"] is
only what the engine waited for (plus recording), and costs.overlapped_s["propose"] the rest, so the
stages' wall_s still sum to the engine's wall time. overlapped_s is not all saved time: the LLM is one
resource, and a plan that runs on into the trained candidate's reflection makes that reflection wait
for the lock, which shows in its own wall_s["reflect"]. What is saved is the plan's overlap with the
training job, less what the two slow each other down on a small CPU (measured with the embedded model,
tiny test model trained 250 steps, shared 2 cores: c002's wall_s["propose"] fell from 50.5 s to 0.002 s
with overlapped_s 29 s, while c001's training grew from 16 s to 25 s and its reflection from 28 s to 37 s).
A discarded plan's calls are charged to its parent as
stage "propose_discarded" (zero wall time), so the [budget] llm_tokens still counts every token.

Threads and exit: the background thread shares the engine's LLM object (llama.cpp serialises calls
with a lock; a foreground reflection waits for the call in flight). A cancel makes every later call
of the plan fail at once (CancellableLLM), the call in flight ends at its next generated token
(LLMCancelled: both backends ask the stop while the prompt is read and while they generate, or wait
for a server), and `drop` waits for it, bounded by
JOIN_TIMEOUT_S: core/llm/llamacpp.py frees the model at exit (atexit close_all), which must not happen
under a running call.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from core.discovery import SCORED, ChildPlan, Discovery
from core.errors import LLMCancelled, PoiseError
from core.llm.base import StoppableLLM

log = logging.getLogger("poise.prefetch")
# The longest wait for the call in flight when a prefetch is dropped or the engine exits. One proposal
# call of the embedded model on CPU takes 10-60 s (1024 prompt tokens at ~40-190 tok/s, <= 512 completion
# tokens); past this the engine exits anyway and says so in its log.
JOIN_TIMEOUT_S = 120.0


class PrefetchCancelled(PoiseError):
    """Raised into a background plan's LLM calls once the engine no longer wants the plan."""


class CancellableLLM(StoppableLLM):
    """The engine's LLM, for a background plan: after `cancelled` is set every call fails at once
    (the operators turn the PoiseError into a rejection), so a dropped plan ends after its call in flight,
    which itself ends at its next token (LLMCancelled), so a drop does not wait for a whole generation."""

    def __init__(self, llm: Any, cancelled: threading.Event) -> None:
        super().__init__(llm, cancelled.is_set)
        self._cancelled = cancelled

    def chat(self, messages: list, **kwargs: Any) -> Any:
        if self._cancelled.is_set():
            raise PrefetchCancelled("the engine dropped this background proposal; nothing to do")
        return super().chat(messages, **kwargs)


def fingerprint(cand: Any) -> dict[str, tuple]:
    """What a parent's prompt was built from: its result (outcome and Overall) on each seed it had."""
    return {seed: (r.get("outcome"), r.get("overall")) for seed, r in (cand.results or {}).items()}


def changed_seeds(before: dict[str, tuple], now: dict[str, tuple]) -> list[str]:
    """Seeds whose result is no longer the one the prompt showed (gone or different); new ones do not count."""
    return sorted(seed for seed, shown in before.items() if now.get(seed) != shown)


@dataclass
class Prefetch:
    """One background proposal round: its inputs (for the validity check) and what it produced."""

    directive: str
    parents: list[str]
    known_ids: frozenset[str]
    parent_prints: dict[str, dict[str, tuple]]
    rounds: int  # the reader's parent-selection round counter after it selected
    started: float = field(default_factory=time.time)
    plans: list[ChildPlan] = field(default_factory=list)
    dropped_calls: dict[str, list] = field(default_factory=dict)  # parent -> calls of a plan cut by a cancel
    error: str = ""
    cancelled: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def stale_reason(self, archive: Any, directive: str) -> str:
        """Why the plans no longer fit the archive as it is now; "" when they do."""
        if directive != self.directive:
            return f"the directive changed to {directive!r}"
        now = {c.id for c in archive.all()}
        if now != self.known_ids:
            new = sorted(now - self.known_ids) or sorted(self.known_ids - now)
            return f"the archive changed meanwhile ({', '.join(new[:5])})"
        for pid in self.parents:
            c = archive.get(pid)
            changed = changed_seeds(self.parent_prints[pid], fingerprint(c))
            if c.status not in SCORED or changed:
                what = f"seeds {changed} rerun" if changed else c.status
                return f"parent {pid} changed meanwhile ({what})"
        return ""

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the background thread has ended."""
        if self.thread is not None:
            self.thread.join(timeout)
        return not self.running

    def cancel(self) -> None:
        self.cancelled.set()

    def spent(self) -> dict[str, list]:
        """Every call made so far, per parent (plans done and a plan cut by a cancel)."""
        out = {pid: list(calls) for pid, calls in self.dropped_calls.items()}
        for plan in self.plans:
            out.setdefault(plan.pid, []).extend(plan.calls)
        return out


def start_prefetch(discovery: Discovery, directive: str, slots: int | None) -> Prefetch | None:
    """Select up to `slots` parents (None = no cap) on a snapshot and plan their children in a daemon
    thread; None when nothing can be selected yet (nothing scored). Called in the engine's thread."""
    if not discovery.scored():
        return None  # no parent yet (the seed is the one training)
    cancelled = threading.Event()
    # discovery.llm loads the model here, in the engine's thread, when it is not loaded yet.
    reader = discovery.reader(CancellableLLM(discovery.llm, cancelled))
    try:
        parents = reader.select_parents()[:slots]
    except PoiseError:
        parents = []
    if not parents:
        reader.close()
        return None
    pf = Prefetch(directive=directive, parents=parents, known_ids=frozenset(c.id for c in reader.archive.all()),
                  parent_prints={p: fingerprint(reader.archive.get(p)) for p in parents}, rounds=reader.rounds,
                  cancelled=cancelled)
    pf.thread = threading.Thread(target=_plan_all, args=(pf, reader), name="poise-prefetch", daemon=True)
    pf.thread.start()
    log.info("proposing children of %s in the background", ", ".join(parents))
    return pf


def _plan_all(pf: Prefetch, reader: Discovery) -> None:
    try:
        for pid in pf.parents:
            if pf.cancelled.is_set():
                break
            plan = reader.plan_child(pid, pf.directive)
            if pf.cancelled.is_set():  # its later calls failed on purpose: not a plan to record
                pf.dropped_calls[pid] = plan.calls
                break
            pf.plans.append(plan)
    except LLMCancelled:  # dropped (or the engine stops) in the middle of a call: nothing to record
        log.info("background proposal cancelled in the middle of an LLM call")
    except Exception as exc:  # a bug here must not kill the engine: the round is proposed again
        pf.error = f"{type(exc).__name__}: {exc}"
        log.exception("background proposal failed; the next round is proposed in the foreground")
    finally:
        reader.close()


def waited_parts(plans: list[ChildPlan], since: float) -> list[float]:
    """Seconds of each plan that fell after `since` (when the engine began to wait for them)."""
    return [max(0.0, p.finished - max(p.started, since)) for p in plans]


def take(pf: Prefetch, discovery: Discovery, directive: str, slots: int | None,
         should_stop: Any = lambda: False) -> list[str] | None:
    """Record the prefetched round in the engine's thread: the ids created (maybe none), or None when the
    plans are stale or failed (dropped and charged) and the round must be proposed in the foreground.
    Waits for a plan still running; `should_stop()` (stop/SIGTERM) cancels the rest of it meanwhile."""
    reason = pf.stale_reason(discovery.archive, directive)
    if reason:
        log.info("discarding the proposals made during training: %s", reason)
        drop(pf, discovery)
        return None
    since = time.time()
    while not pf.wait(0.5):
        if should_stop():
            pf.cancel()  # the plans finished so far are still recorded; the engine stops after this round
    if pf.error:
        log.info("discarding the proposals made during training: the background proposal failed: %s", pf.error)
        drop(pf, discovery)
        return None
    keep = len(pf.plans) if slots is None else slots
    plans, extra = pf.plans[:keep], pf.plans[keep:]
    _charge_discarded(discovery, {p.pid: p.calls for p in extra})
    _charge_discarded(discovery, pf.dropped_calls)
    return discovery.record_children(plans, waited_parts(plans, since), pf.rounds)


def drop(pf: Prefetch, discovery: Discovery, timeout: float = JOIN_TIMEOUT_S) -> None:
    """Cancel a prefetch, wait for its call in flight, charge what it spent to its parents."""
    pf.cancel()
    if not pf.wait(timeout):
        log.warning("a background LLM call is still running after %.0f s; going on without waiting for it", timeout)
        return
    _charge_discarded(discovery, pf.spent())


def _charge_discarded(discovery: Discovery, spent: dict[str, list]) -> None:
    for pid, calls in spent.items():
        if calls and pid in discovery.archive:
            discovery.charge(pid, "propose_discarded", 0.0, calls)
