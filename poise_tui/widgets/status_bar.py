"""One line of engine status: state, stage with a progress bar, budget, LLM speed, queue."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import ProgressBar, Static

from core.runstate import EngineState


def budget_text(st: EngineState) -> str:
    total = str(st.candidates_budget) if st.candidates_budget else "∞"
    return f"{st.candidates_done}/{total} cand"


class StatusBar(Horizontal):
    def compose(self) -> ComposeResult:
        yield Static("engine: ?", id="engine-state")
        yield Static("", id="stage")
        yield ProgressBar(total=100, show_eta=False, show_percentage=True, id="stage-progress")
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
        bar.display = st.state in ("running", "paused", "stopping") and st.stage != "idle"
        queue = f" q:{','.join(st.queue[:3])}{'…' if len(st.queue) > 3 else ''}" if st.queue else ""
        info = f"{budget_text(st)} {st.llm_tokens_per_s:.0f}tok/s{queue}"
        self.query_one("#budget", Static).update(info)
