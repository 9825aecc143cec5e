"""Two marked candidates side by side: curves overlaid, paired metric differences, and the diff between them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from rich.syntax import Syntax
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Label, Static, TabbedContent, TabPane

from poise_tui.messages import CurvesUpdated, DiffLoaded
from poise_tui.rundata import RunReader
from poise_tui.screens.common import WorkerErrors
from poise_tui.widgets.curves import CurvesView
from poise_tui.widgets.metrics_table import MetricsTable


class CompareScreen(Screen[None], WorkerErrors):
    CSS_PATH = "compare.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "dismiss", "Back"),
        Binding("left_square_bracket", "metric(-1)", "Prev metric", key_display="["),
        Binding("right_square_bracket", "metric(1)", "Next metric", key_display="]"),
    ]

    def __init__(self, run_dir: Path, a: Any, b: Any) -> None:
        super().__init__()
        self.run_dir, self.a, self.b = Path(run_dir), a, b

    def compose(self) -> ComposeResult:
        yield Label(f"{self.a.id} {self.a.title}  vs  {self.b.id} {self.b.title}", id="compare-title")
        with TabbedContent(id="compare-tabs"):
            with TabPane("Curves", id="cmp-curves"):
                yield CurvesView(id="cmp-plot")
            with TabPane(f"Metrics ({self.a.id} − {self.b.id})", id="cmp-metrics"):
                yield MetricsTable(id="cmp-table")
            with TabPane("Diff", id="cmp-diff"):
                # The diff is directional: say which side its + and - lines come from.
                yield Static(f"{self.b.id} → {self.a.id}  (+ lines: {self.a.id}, - lines: {self.b.id})",
                             id="cmp-diff-header")
                with VerticalScroll():
                    yield Static("loading…", id="cmp-diff-text")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(MetricsTable).show(self.a, {self.b.id: self.b})
        self.load()

    @work(thread=True, group="compare", exit_on_error=False, name="compare loader")
    def load(self) -> None:
        reader = RunReader(self.run_dir)
        self.post_message(CurvesUpdated(self.a.id, {self.a.id: reader.curve(self.a.id),
                                                    self.b.id: reader.curve(self.b.id)}))
        self.post_message(DiffLoaded(self.a.id, self.b.id, reader.diff(self.a.id, against=self.b.id)))

    @on(CurvesUpdated)
    def curves_loaded(self, message: CurvesUpdated) -> None:
        self.query_one(CurvesView).show(message.curves)

    @on(DiffLoaded)
    def diff_loaded(self, message: DiffLoaded) -> None:
        self.query_one("#cmp-diff-text", Static).update(Syntax(message.text, "diff", theme="ansi_dark"))

    def action_metric(self, step: int) -> None:
        self.query_one(TabbedContent).active = "cmp-curves"
        self.query_one(CurvesView).cycle(step)
