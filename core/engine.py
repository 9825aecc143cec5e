"""The engine: the single writer of a run. It drives every candidate through its lifecycle,
applies inbox commands, enforces budgets and resumes after a crash.

Crash safety comes from the shape of the loop, not from cleanup code: every step reads the
archive to decide what to do next, each stage is idempotent given the recorded status, and
the archive is written (atomically) after each transition. After kill -9 at any moment,
`poise run` picks the first unfinished candidate and redoes only its interrupted stage.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.config import RunConfig, load_config, stats_interval
from core.elites import CONFIRM_REASON, fresh_seeds, mark_confirmed, to_confirm
from core.errors import LLMCancelled, PoiseError, UnknownCandidateError
from core.inbox import mark_done, pending_commands
from core.lock import EngineLock
from core.rundir import RunPaths, require_run
from core.runstate import EngineState, save_directive, saved_directive, write_state
from core.workqueue import WorkQueue

log = logging.getLogger("poise.engine")
# Statuses from which the engine still has work to do on a candidate, in pipeline order.
UNFINISHED = ("proposed", "implemented", "verified", "training", "evaluated")
MAX_EMPTY_ROUNDS = 5
RERUNNABLE = ("reflected", "evaluated", "diverged", "crashed", "timed_out", "cancelled")
DONE = ("reflected", "rejected", "diverged", "crashed", "timed_out", "cancelled", "vetoed")
# Test hook: `POISE_FAULT=<point>` makes the engine SIGKILL itself when it reaches that named point
# (a crash between two writes that a polling test could not hit reliably). Points: propose:recorded,
# implement:committed, verify:recorded, train:result, reflect:recorded, confirm:evaluated. Unset in normal use.
FAULT_ENV = "POISE_FAULT"


def fault_point(name: str) -> None:
    """Die here, as kill -9 would, when the POISE_FAULT test hook names this point."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def reap_orphan_jobs(jobs_dir: Path) -> list[int]:
    """Kill the process groups of jobs that a killed engine left running under `jobs_dir`.

    Jobs run in their own session, so they survive a kill -9 of the engine and would keep writing
    into job directories that the resumed engine reuses. Found through /proc (their cwd is the
    job dir) and the sandbox's marker in their environment (a user's shell or `tail -f` in a job dir
    has none); Linux only, elsewhere nothing is found. Called under the engine lock, so no live
    engine owns them; a concurrent `poise eval`/`poise verify` on the same run would be killed too."""
    from core.sandbox import JOB_MARKER_ENV

    root = str(Path(jobs_dir).resolve())
    marker = f"{JOB_MARKER_ENV}=1".encode()
    own, killed = os.getpgrp(), []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cwd = os.readlink(entry / "cwd").removesuffix(" (deleted)")
            pgid = os.getpgid(int(entry.name))
            in_jobs = cwd == root or cwd.startswith(root + os.sep)
            is_job = in_jobs and marker in (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue  # gone, or not ours to inspect
        if is_job and pgid != own and pgid not in killed:
            try:
                os.killpg(pgid, signal.SIGKILL)
                killed.append(pgid)
            except OSError:
                pass
    return killed


class Engine:
    # The next round's proposals, made in the background while a candidate trains (core/prefetch.py).
    _prefetch = None

    def __init__(self, run_dir: Path) -> None:
        from core.archive import Archive
        from core.workspace import Workspace

        self.paths: RunPaths = require_run(run_dir)
        self.cfg: RunConfig = load_config(self.paths.config)
        saved = saved_directive(self.paths.root)
        if saved is not None:  # set from the TUI or `poise send` since run.toml was written
            self.cfg.directive = saved
        self.archive = Archive.open(self.paths.root, interval=self.cfg.stats.interval)
        self.ws = Workspace.open(self.paths.root)
        self.queue = WorkQueue(self.paths.root)
        self.state = EngineState(pid=os.getpid(), candidates_budget=self.cfg.budget.candidates)
        self.started = time.time()
        self._discovery = None
        self._stop_requested = False
        self._empty_rounds = 0

    # ---- the lazily created LLM side (proposal, screening, repair, reflection) ----
    @property
    def discovery(self):
        if self._discovery is None:
            from core.discovery import Discovery

            self._discovery = Discovery(self.archive, self.ws, self.cfg, self.paths, should_stop=self.cancel_requested)
        return self._discovery

    # ---- published state ----
    def publish(self, stage: str | None = None, candidate: str | None = None, progress: float | None = None,
                message: str | None = None) -> None:
        st = self.state
        if stage is not None:
            st.stage = stage
        if candidate is not None:
            st.candidate = candidate
        if progress is not None:
            st.progress = progress
        if message is not None:
            st.message = message
        st.wall_s = time.time() - self.started
        st.candidates_done = self.new_candidates_done()
        st.llm_tokens = self.llm_tokens_used()
        st.llm_tokens_per_s = self.llm_tokens_per_s()
        st.queue = self.queue.describe()
        st.directive = self.cfg.directive
        write_state(self.paths.root, st)

    def new_candidates_done(self) -> int:
        """Candidates (not the seed) whose training reached an outcome: what the budget counts."""
        trained = {"evaluated", "reflected", "diverged", "crashed", "timed_out"}
        confirming = self.reevaluating_ids()  # trained before; back in `training` only for their fresh seeds
        return sum(1 for c in self.archive.all() if c.id != "seed" and (c.status in trained or c.id in confirming))

    def llm_tokens_per_s(self) -> float:
        """Throughput of the LLM over the run: tokens / seconds spent inside LLM calls."""
        cands = self.archive.all()
        seconds = sum(float((c.costs or {}).get("llm_s", 0.0)) for c in cands)
        tokens = sum(int((c.costs or {}).get("llm_tokens", 0)) for c in cands)
        return round(tokens / seconds, 1) if seconds > 0 else 0.0

    def llm_tokens_used(self) -> int:
        return sum(int((c.costs or {}).get("llm_tokens", 0)) for c in self.archive.all())

    def budget_left(self, budget: int | None) -> bool:
        b = self.cfg.budget
        limit = b.candidates if budget is None else budget
        if limit and self.new_candidates_done() >= limit:
            return False
        if b.wall_hours and time.time() - self.started > b.wall_hours * 3600:
            return False
        return not (b.llm_tokens and self.llm_tokens_used() >= b.llm_tokens)

    def slots_left(self, budget: int | None) -> int | None:
        """How many candidates a new round may still create (None: no candidate budget): the budget minus
        those trained and those still on their way, so a round never overshoots it (2 parents, 1 left)."""
        limit = self.cfg.budget.candidates if budget is None else budget
        if not limit:
            return None
        confirming = self.reevaluating_ids()  # already counted as done
        pending = sum(1 for c in self.archive.all() if c.id != "seed" and c.id not in confirming
                      and c.status in ("proposed", "implemented", "verified", "training"))
        return max(0, limit - self.new_candidates_done() - pending)

    # ---- inbox ----
    def apply_inbox(self) -> None:
        for cmd in pending_commands(self.paths.root):
            try:
                outcome = self.apply_command(cmd)
                mark_done(self.paths.root, cmd, outcome, ok=True)
                log.info("command %s: %s", cmd.get("name"), outcome)
            except PoiseError as exc:
                mark_done(self.paths.root, cmd, str(exc), ok=False)
                log.warning("command %s refused: %s", cmd.get("name"), exc)

    def apply_command(self, cmd: dict) -> str:
        name, args = cmd.get("name"), cmd.get("args", {})
        if name == "pause":
            self.state.state = "paused"
            return "paused: the current stage finishes, then nothing new starts"
        if name == "resume":
            self.state.state = "running"
            return "resumed"
        if name == "stop":
            self._stop_requested = True
            return "stopping: the job or LLM call in flight ends, and is redone on resume"
        if name == "set_directive":
            self.cfg.directive = str(args.get("directive", ""))
            save_directive(self.paths.root, self.cfg.directive)  # outlives this engine; run.toml stays the user's
            self.publish()
            return f"directive set to {self.cfg.directive!r}"
        if name == "veto":
            return self.veto(str(args.get("id", "")))
        if name == "rerun":
            return self.queue_rerun(cmd["id"], str(args.get("id", "")), args.get("seeds"))
        if name == "fork":
            cid = str(args.get("id", ""))
            self.archive.get(cid)  # unknown id -> error outcome
            self.queue.push(name, cmd["id"], **args)
            return f"{name} of {cid} queued"
        if name == "<malformed>":
            raise PoiseError(f"malformed command file: {cmd.get('error', '')}")
        raise PoiseError(f"unknown command {name!r}")

    def veto(self, cid: str) -> str:
        c = self.archive.get(cid)
        if c.status not in ("proposed", "implemented", "verified"):
            raise PoiseError(f"cannot veto {cid}: it is {c.status}; only proposed, implemented or verified candidates can be vetoed")
        self.archive.set_status(cid, "vetoed", "vetoed by the user")
        return f"{cid} vetoed"

    # ---- the loop ----
    def run(self, budget: int | None = None) -> int:
        # Uncommitted edits in <run>/repo were meant for something; refuse rather than run past them.
        self.ws.ensure_clean()
        lock = EngineLock(self.paths.root).acquire()
        if lock.stale_note:
            log.warning(lock.stale_note)
        self.state.state = "running"
        if budget is not None:
            self.state.candidates_budget = budget
        self.publish(stage="idle", message=lock.stale_note or "started")
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_stop_requested", True))
        try:
            if not self._recovered():
                return 1
            while True:
                self.apply_inbox()
                if self._stop_requested:
                    self.state.state = "stopped"
                    break
                if self.state.state == "paused":
                    self.publish(stage="idle", message="paused")
                    time.sleep(0.5)
                    continue
                try:
                    more = self.step(budget)
                except LLMCancelled as exc:  # a stop request ended an LLM call; the stage is redone on resume
                    log.info("%s", exc)
                    continue
                except PoiseError as exc:  # a condition the user must act on: stop cleanly and say why
                    self._stop_on(exc)
                    break
                if not more:
                    self.state.state = "finished"
                    break
        except BaseException as exc:  # a bug or kill: never leave engine.json claiming "running"
            self.state.state = "stopped"
            self.state.message = f"error: engine crashed: {type(exc).__name__}: {exc}"[:300]
            raise
        finally:
            self.drop_prefetch()
            failed = self.state.message.startswith("error")
            if not failed:
                self.state.message = f"engine {self.state.state}"
            self.publish(stage="idle", candidate="", progress=0.0)  # nothing is in progress any more
            lock.release()
        return 1 if failed else 0  # scripts driving `poise run` see that it stopped on a problem

    def _stop_on(self, exc: PoiseError) -> None:
        log.error("engine stopped: %s", exc)
        self.state.state = "stopped"
        self.publish(message=f"error: {exc}")

    def _recovered(self) -> bool:
        try:
            self.recover()
        except PoiseError as exc:
            self._stop_on(exc)
            return False
        return True

    def step(self, budget: int | None) -> bool:
        """Do one unit of work; False when there is nothing left to do within the budget."""
        cand = self.next_unfinished()
        if cand is not None:
            self.advance(cand)
            return True
        item = self.queue.peek()
        if item is not None:
            self.do_queued(item)
            return True
        if self.queue_confirmations(budget):
            return True
        if not self.budget_left(budget):
            return False
        self.new_round(budget)
        return True

    def next_unfinished(self):
        confirming = self.reevaluating_ids()
        cands = [c for c in self.archive.all() if c.status in UNFINISHED and c.id not in confirming]
        # The seed first (everything is compared with it), then oldest first.
        cands.sort(key=lambda c: (c.id != "seed", c.created_at))
        return cands[0] if cands else None

    def advance(self, cand) -> None:
        from core.evaluate import evaluate
        from core.verify import verify

        cid = cand.id
        if cand.status == "proposed":
            self.publish("implement", cid, 0.0, f"implementing {cid}")
            self.discovery.implement(cid)
        elif cand.status == "implemented":
            self.publish("verify", cid, 0.0, f"verifying {cid}")
            repair = self.discovery.repair_fn(cid) if cand.origin == "llm" else None
            verify(self.archive, self.ws, self.paths, self.cfg, cid, repair, self.cfg.search.repair_attempts,
                   should_cancel=self.cancel_requested)
        elif cand.status in ("verified", "training"):
            self.publish("train", cid, 0.0, f"training {cid}")
            self.prefetch_next_round(cid)
            evaluate(self.archive, self.ws, self.paths, self.cfg, cid,
                     on_progress=lambda m, f: self.publish(message=m, progress=f),
                     should_cancel=self.cancel_requested)
        elif cand.status == "evaluated":
            self.publish("reflect", cid, 0.0, f"reflecting on {cid}")
            self.discovery.reflect(cid)
        log_transition(cand, self.archive.get(cid))

    def cancel_requested(self) -> bool:
        """Checked while a job runs: SIGTERM or a stop command cancels the job (it is rerun on resume)."""
        if self._stop_requested:
            return True
        for cmd in pending_commands(self.paths.root):
            if cmd.get("name") == "stop":
                return True
        return False

    def do_queued(self, item: dict) -> None:
        cid = item.get("id", "")
        if item["kind"] == "rerun" and not self.rerun(item):
            return  # stopped before every seed had a result: the item stays queued for the next run
        elif item["kind"] == "fork":
            self.publish("propose", cid, 0.0, f"forking from {cid}")
            self.discovery.propose_children([cid], directive=item.get("directive") or self.cfg.directive)
        elif item["kind"] == "confirm" and not self.confirm(item):
            return  # stopped before every fresh seed had a result: the item stays queued for the next run
        self.queue.pop(item)

    # ---- elite confirmation (core/elites.py): fresh seeds before a candidate counts as the run's best ----
    def queue_confirmations(self, budget: int | None) -> bool:
        """Queue a `confirm` item per elite to confirm now; True when any was queued. Called only with
        nothing unfinished and nothing queued, so every elite is reflected and no stage of it is pending.
        Confirmation counts against no budget; core/elites.py says why it ends."""
        search = self.cfg.search
        if search.confirm_when == "end" and self.budget_left(budget):
            return False
        todo = to_confirm(self.archive, search.confirm_top_k)
        baseline = self.confirmation_baseline()
        for c in todo:
            # The seeds are fixed here, in the persistent item, so a resumed confirmation reuses them.
            self.queue.push("confirm", f"confirm-{c.id}", id=c.id, seeds=fresh_seeds(c, self.cfg.seeds),
                            **({"baseline": baseline[0], "baseline_was": baseline[1]} if baseline else {}))
        return bool(todo)

    def confirmation_baseline(self) -> tuple[str, str] | None:
        """(id, status) of the seed when it is scored: a confirmation evaluates it on the same fresh seeds, so
        the paired difference to the baseline also has pairs that selection never saw (core/elites.py)."""
        try:
            seed = self.archive.get("seed")
        except UnknownCandidateError:
            return None  # a run without a seed candidate (added by hand) has nothing to pair with
        return (seed.id, seed.status) if seed.status in ("evaluated", "reflected") else None

    def reevaluating_ids(self) -> set[str]:
        """Candidates with a queued re-evaluation (confirm, or a user's rerun): they were trained before, and
        their stages belong to that item (resumed on its seeds after a crash), not to the pipeline, which
        would train them on the run's seeds and reflect on them again."""
        items = [x for x in self.queue.items if x.get("kind") in ("confirm", "rerun")]
        return {str(x.get(key)) for x in items for key in ("id", "baseline") if x.get(key)}

    def confirm(self, item: dict) -> bool:
        """Evaluate an elite on its fresh seeds, keep it reflected, tag it confirmed; idempotent after a
        crash at any point. False when stopped before every fresh seed has a result."""
        cid, seeds = str(item["id"]), [int(s) for s in item["seeds"]]
        self.publish("confirm", cid, 0.0, f"confirming {cid} on fresh seeds {seeds}")
        c = self.reevaluate(cid, seeds, "confirm")
        if c is None:
            return False
        fault_point("confirm:evaluated")
        outcomes = {s: (c.results or {}).get(str(s), {}).get("outcome", "missing") for s in seeds}
        failed = {s: o for s, o in outcomes.items() if o != "evaluated"}
        if c.status != "reflected":  # evaluated, or the worst outcome over its seeds: it stays scored
            note = "" if not failed else f" (not confirmed: {', '.join(f'seed {s} {o}' for s, o in failed.items())})"
            self.archive.set_status(cid, "reflected", f"{CONFIRM_REASON} {seeds}{note}")
        if failed:
            # its mean would rest on the seeds that selected it: a failed fresh seed is no confirmation
            log.warning("%s not confirmed: fresh seed(s) %s did not evaluate (%s)", cid, sorted(failed), failed)
        else:
            mark_confirmed(self.archive, cid)
        return self.evaluate_baseline(item, seeds)

    def evaluate_baseline(self, item: dict, seeds: list[int]) -> bool:
        """The confirmation's baseline on the same fresh seeds (none when it has them already, from an earlier
        confirmation); False when a stop interrupted it. The baseline keeps the status it had."""
        bid = item.get("baseline")
        if not bid:
            return True  # an item queued before confirmations evaluated the baseline
        b = self.reevaluate(str(bid), seeds, "confirm")
        if b is None:
            return False
        self.restore_status(b, str(item.get("baseline_was", "reflected")),
                            f"evaluated on seeds {seeds} as the baseline of {item['id']}'s confirmation")
        return True

    def restore_status(self, c, was: str, reason: str) -> None:
        """A re-evaluated reflected node stays reflected (and scored) whatever its new seeds did: one diverged
        seed must not drop the baseline out of selection. The seed's outcome is in results[seed]."""
        if was == "reflected" and c.status != "reflected":
            note = "" if c.status == "evaluated" else f" (a new seed ended {c.status})"
            self.archive.set_status(c.id, "reflected", reason + note)

    def queue_rerun(self, cmd_id: str, cid: str, seeds: list[int] | None) -> str:
        """Queue a re-evaluation of a finished candidate. Its seeds (fresh ones unless given) and status are
        fixed in the persistent item, so a rerun interrupted by a crash resumes on the same seeds."""
        c = self.archive.get(cid)  # unknown id -> error outcome
        if c.status not in RERUNNABLE:
            raise PoiseError(f"cannot rerun {cid}: it is {c.status}; a rerun adds seeds to a candidate whose "
                             "evaluation has finished (wait for it, or fork it instead)")
        if cid in self.reevaluating_ids():
            raise PoiseError(f"cannot rerun {cid}: a re-evaluation of it is already queued")
        seeds = [int(s) for s in seeds] if seeds else self.fresh_seeds(cid)
        self.queue.push("rerun", cmd_id, id=cid, seeds=seeds, was=c.status)
        return f"rerun of {cid} on seeds {seeds} queued"

    def rerun(self, item: dict) -> bool:
        """Evaluate the candidate on the item's seeds; False when stopped part-way (resumed later)."""
        cid = str(item["id"])
        seeds = [int(s) for s in item.get("seeds") or []] or self.fresh_seeds(cid)  # items queued before seeds were fixed
        self.publish("train", cid, 0.0, f"rerunning {cid} on seeds {seeds}")
        c = self.reevaluate(cid, seeds, "rerun")
        if c is None:
            return False
        self.restore_status(c, item.get("was", "reflected"), f"re-evaluated on seeds {seeds}")
        return True

    def reevaluate(self, cid: str, seeds: list[int], cost_stage: str):
        """Train and evaluate `cid` on those of `seeds` it has no result for yet (none left when a crash came
        after the last was recorded); the Candidate, or None when a stop interrupted it (the item stays queued)."""
        from core.evaluate import evaluate

        c = self.archive.get(cid)
        if c.status == "training" or any(str(s) not in c.results for s in seeds):
            c = evaluate(self.archive, self.ws, self.paths, self.cfg, cid, seeds,
                         on_progress=lambda m, f: self.publish(message=m, progress=f),
                         should_cancel=self.cancel_requested, cost_stage=cost_stage)
        return None if c.status == "training" else c

    def fresh_seeds(self, cid: str) -> list[int]:
        used = set(self.archive.get(cid).seeds) | set(self.cfg.seeds)
        start = max(used) + 1 if used else 0
        return list(range(start, start + len(self.cfg.seeds)))

    def new_round(self, budget: int | None = None) -> None:
        slots = self.slots_left(budget)  # >= 1 here: step() checked the budget and nothing is unfinished
        created = self.take_prefetch(slots)
        if created is None:
            self.publish("select", "", 0.0, "selecting parents")
            parents = self.discovery.select_parents()[:slots]
            self.publish("propose", ",".join(parents), 0.0, f"proposing children of {', '.join(parents)}")
            created = self.discovery.propose_children(parents, directive=self.cfg.directive)
        for cid in created or []:
            c = self.archive.get(cid)
            log.info("%s proposed: %r, child of %s", cid, c.title, ", ".join(c.parent_ids))
        self._empty_rounds = 0 if created else self._empty_rounds + 1
        if self._empty_rounds >= MAX_EMPTY_ROUNDS:
            raise PoiseError(f"{MAX_EMPTY_ROUNDS} rounds in a row produced no usable proposal; "
                             "see the rejected candidates' reasons, or use a stronger model ([llm] model_path)")

    # ---- the next round's proposals, made while a candidate trains (core/prefetch.py) ----
    def prefetch_next_round(self, cid: str) -> None:
        """Start proposing the next round in the background while `cid` trains, when `cid` is the last
        unfinished candidate (the others' results are then known to parent selection) and the budget
        allows another round after it. [search] prefetch_proposals = false turns this off."""
        if not self.cfg.search.prefetch_proposals or self._prefetch is not None:
            return
        if any(c.id != cid and c.status in UNFINISHED for c in self.archive.all()):
            return
        limit = self.state.candidates_budget  # --budget when given, else [budget] candidates
        slots = self.slots_left(limit)
        if slots == 0 or not self.budget_left(limit):
            return
        from core.prefetch import start_prefetch

        self._prefetch = start_prefetch(self.discovery, self.cfg.directive, slots)

    def take_prefetch(self, slots: int | None) -> list[str] | None:
        """The ids a prefetched round created, or None when there was none or it no longer fits."""
        pf, self._prefetch = self._prefetch, None
        if pf is None:
            return None
        from core.prefetch import take

        self.publish("propose", ",".join(pf.parents), 0.0,
                     f"proposing children of {', '.join(pf.parents)} (started while the last candidate trained)")
        return take(pf, self.discovery, self.cfg.directive, slots, self.cancel_requested)

    def drop_prefetch(self) -> None:
        """On exit: a background round still running is cancelled and waited for (core/prefetch.py says why)."""
        pf, self._prefetch = self._prefetch, None
        if pf is not None:
            from core.prefetch import drop

            if pf.running:
                self.publish(message="stopping: waiting for the background proposal's LLM call to end")
            drop(pf, self.discovery)

    # ---- crash recovery ----
    def _sweep_job_leftovers(self) -> None:
        """A supervisor killed with the engine never deleted its job's policy (a full checkpoint on recipe
        math); no job runs now, so every policy/ left under jobs/ is one nobody keeps."""
        from core.evaluate import recipe_config, sweep_checkpoints
        from core.recipes.policy import policy_kept, sweep_policies

        if not policy_kept(recipe_config(self.cfg)):
            swept = sweep_policies(self.paths.jobs)
            if swept:
                log.warning("deleted %d trained polic(ies) that killed jobs left under %s", swept, self.paths.jobs)
        # Checkpoints of jobs that can no longer resume (their candidate was cancelled for good, or the seed
        # has a result) would hold ~12 bytes a parameter each forever.
        resumable = {(c.id, str(seed)) for c in self.archive.all() if c.status == "training"
                     for seed in c.seeds if str(seed) not in (c.results or {})}
        swept = sweep_checkpoints(self.paths.jobs, resumable)
        if swept:
            log.info("deleted %d checkpoint(s) of jobs that will not resume", swept)

    def recover(self) -> None:
        """Make the repo and the archive agree after a crash: a `proposed` candidate's branch (killed
        between git commit and archive write) is removed so it is implemented again; an `implemented` one
        whose branch is gone is rejected. A branch the archive does not know at all cannot come from a crash
        (the record is always written before the branch), so the archive lost records: the branch is set
        aside as lost/<id>-<time>, never deleted."""
        self._reap_orphans()
        self._sweep_job_leftovers()
        rewritten = self.archive.store_recomputed_intervals()
        if rewritten:
            log.info("stored %d candidate(s)' intervals under [stats] interval = %s", rewritten, self.cfg.stats.interval)
        branches = self.ws.candidate_branches()
        known = {c.id: c for c in self.archive.all()}
        unknown = sorted(set(branches) - set(known))
        if "seed" in unknown:
            raise PoiseError(f"{self.archive.path} has no record of the seed, but the repo has cand/seed and "
                             f"{len(branches) - 1} other candidate branch(es): the archive is not this run's (emptied, "
                             "or restored from elsewhere). Nothing was changed; restore archive.json from a backup.")
        for cid in unknown:
            aside = self.ws.set_aside(cid)
            log.warning("cand/%s is not in the archive (records lost?); its branch is kept as %s", cid, aside)
        for cid, c in known.items():
            if c.status == "proposed" and cid in branches:
                self.ws.delete_candidate(cid)  # the implementation is redone from the recorded proposal
            elif c.status == "implemented" and cid not in branches:
                # Cannot happen through the engine (the archive is written after the commit); a branch
                # deleted by hand is reported, not silently rebuilt.
                self.archive.set_status(cid, "rejected", f"branch cand/{cid} missing from the repo")

    def _reap_orphans(self) -> None:
        """Under the lock: jobs a killed engine, `poise eval` or `poise verify` left running would write into the
        job dirs the next attempt reuses."""
        orphans = reap_orphan_jobs(self.paths.jobs)
        if orphans:
            log.warning("killed %d job(s) left running by a killed engine or CLI: process groups %s", len(orphans),
                        orphans)

    # ---- used by the CLI outside the loop: each holds the run's lock, so no engine writes meanwhile ----
    def verify_candidate(self, cid: str, repair: bool = False):
        with EngineLock(self.paths.root, task=f"poise verify {cid}"):
            self._reap_orphans()
            return self._verify(cid)

    def _verify(self, cid: str):
        from core.verify import verify

        return verify(self.archive, self.ws, self.paths, self.cfg, cid, None, 0)

    def evaluate_candidate(self, cid: str, seeds: list[int] | None = None, echo: bool = False):
        with EngineLock(self.paths.root, task=f"poise eval {cid}"):
            self._reap_orphans()
            return self._evaluate(cid, seeds, echo)

    def _evaluate(self, cid: str, seeds: list[int] | None, echo: bool):
        from core.evaluate import evaluate

        c = self.archive.get(cid)
        was = c.status
        if c.status in ("implemented", "proposed"):
            v = self._verify(cid)
            if not v.ok:
                raise PoiseError(f"{cid} failed verification ({v.stage}): {v.reason}")

        def show(msg: str, frac: float) -> None:
            if echo:
                print(f"\r{msg:<70} {frac * 100:5.1f}%", end="", file=sys.stderr, flush=True)

        out = evaluate(self.archive, self.ws, self.paths, self.cfg, cid, seeds, on_progress=show)
        if echo:
            print(file=sys.stderr)
        if was == "reflected" and out.status in ("evaluated", "diverged", "crashed", "timed_out"):  # as rerun() does:
            # a finished node stays reflected (and scored) whatever the new seeds did; no second reflection
            note = "" if out.status == "evaluated" else f"; a new seed ended {out.status}"
            ran = seeds or list(self.cfg.seeds)
            out = self.archive.set_status(cid, "reflected", f"re-evaluated on seeds {ran} (poise eval{note})")
        return out


def log_transition(before, after) -> None:
    """One engine.log line per stage a candidate went through: what a user tailing the log follows."""
    if after.status == before.status:
        return
    reason = (after.history[-1].get("reason") or "") if after.history else ""
    if after.status == "evaluated" and after.metrics:
        overall = (after.metrics.get("selection") or {}).get("overall") or {}
        if "mean" in overall:
            reason = f"selection Overall {overall['mean']:.3f} over {overall.get('n', '?')} seed(s)"
    log.info("%s: %s -> %s%s", after.id, before.status, after.status, f" ({reason[:300]})" if reason else "")


def add_human_candidate(run_dir: Path, source: str, parent_id: str, title: str) -> str:
    """A researcher's hand-written algorithm.py becomes a node with its own branch, like any other."""
    paths = require_run(run_dir)
    with EngineLock(paths.root, task=f"poise add {title!r}"):
        return _add_locked(paths, source, parent_id, title)


def _add_locked(paths: RunPaths, source: str, parent_id: str, title: str) -> str:
    from git import GitCommandError

    from core.archive import Archive, Candidate
    from core.workspace import Workspace

    archive = Archive.open(paths.root, interval=stats_interval(paths.root))
    archive.get(parent_id)
    ws = Workspace.open(paths.root)
    cid = archive.next_id()
    # The code is part of the record before any commit: a proposed candidate's branch is redone from its
    # proposal on recovery, so a kill, a full disk or a stale git lock here loses nothing.
    archive.add(Candidate(id=cid, title=title, parent_ids=[parent_id], origin="human", status="proposed",
                          proposal={"title": title, "change_mode": "rewrite", "mechanism": "hand-written by a researcher",
                                    "change": {"code": source}},
                          seeds=list(load_config(paths.config).seeds), created_at=time.time()))
    try:
        commit = ws.create_candidate(cid, parent_id, source, f"{title} [{cid}]")
        archive.update(cid, branch=f"cand/{cid}", commit=commit)
        archive.set_status(cid, "implemented", "added by hand")
    except (OSError, GitCommandError) as exc:
        said = " ".join((getattr(exc, "stderr", "") or str(exc)).replace("stderr:", "").split()).strip("' ")
        raise PoiseError(f"{cid} is recorded with its code, but committing it failed ({said[:300]}); "
                         f"the next `poise run` implements it from the record") from None
    return cid


def run_engine(run_dir: Path, budget: int | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return Engine(run_dir).run(budget)


def spawn_detached(run_dir: Path, budget: int | None = None) -> int:
    """Start `poise run` in its own session, output to <run>/engine.log: it survives the terminal."""
    paths = require_run(run_dir)
    cmd = [sys.executable, "-m", "core.cli", "run", str(paths.root)]
    if budget is not None:
        cmd += ["--budget", str(budget)]
    with open(paths.engine_log, "ab") as log_fh:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_fh, stderr=log_fh,
                                start_new_session=True, cwd=str(paths.root),
                                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    return proc.pid
