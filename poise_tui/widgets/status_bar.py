"""One line of engine status: state, stage with a progress bar, a run problem, budget, LLM speed, queue."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import ProgressBar, Static

from core.runstate import EngineState

WORKING = ("running", "paused", "stopping")
# Stages that call the LLM (verify: its repair loop). In the others the engine's tok/s, an average over
# the whole run, says nothing about what the engine does now.
LLM_STAGES = ("propose", "screen", "implement", "verify", "reflect")


def budget_text(st: EngineState) -> str:
    total = str(st.candidates_budget) if st.candidates_budget else "∞"
    return f"{st.candidates_done}/{total} cand"


def speed_text(st: EngineState) -> str:
    in_llm_stage = st.state == "running" and st.stage in LLM_STAGES
    return f" {st.llm_tokens_per_s:.0f} tok/s" if in_llm_stage and st.llm_tokens_per_s else ""


def waiting_work(st: EngineState) -> list[str]:
    """The engine's queue ("rerun c004", ...) without the item it is doing now: that one stays at the
    head of the queue until it is done, and the stage already shows it."""
    queue = list(st.queue)
    busy = st.state in WORKING and st.stage != "idle" and st.candidate
    if busy and queue and queue[0].split()[-1] == st.candidate:
        return queue[1:]
    return queue


def queue_text(st: EngineState) -> str:
    waiting = waiting_work(st)
    return f" q:{','.join(waiting[:3])}{'…' if len(waiting) > 3 else ''}" if waiting else ""


class StatusBar(Horizontal):
    def compose(self) -> ComposeResult:
        yield Static("engine: ?", id="engine-state")
        yield Static("", id="stage")
        yield ProgressBar(total=100, show_eta=False, show_percentage=True, id="stage-progress")
        yield Static("", id="problem")
        yield Static("", id="budget")

    def show(self, st: EngineState, read_only: bool) -> None:
        state = self.query_one("#engine-state", Static)
        state.update(f"{st.state}{' (read-only)' if read_only else ''}")
        state.set_classes(f"state-{st.state}")
        stage = f"{st.stage} {st.candidate}".strip()
        self.query_one("#stage", Static).update(stage)
        bar = self.query_one("#stage-progress", ProgressBar)
        bar.update(progress=round(st.progress * 100))
        # a bar only means something while a stage runs; "idle 0%" on a finished run reads as stuck
        bar.display = st.state in WORKING and st.stage != "idle"
        self.query_one("#budget", Static).update(f"{budget_text(st)}{speed_text(st)}{queue_text(st)}")

    def show_problem(self, text: str) -> None:
        """A problem with the run itself (an unreadable archive), in red until it is gone; "" hides it."""
        problem = self.query_one("#problem", Static)
        problem.update(text)
        problem.display = bool(text)
