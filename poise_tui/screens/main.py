"""The main screen: archive tree, detail tabs of the selected node, engine status bar; watches the run live."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from rich.syntax import Syntax
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Log, Markdown, Static, TabbedContent, TabPane, Tree
from textual.worker import get_current_worker

from core.errors import ArchiveError
from core.runstate import EngineState
from poise_tui.keys import MAIN_BINDINGS
from poise_tui.messages import (
    ArchiveUnreadable,
    ArchiveUpdated,
    CurvesUpdated,
    DiffLoaded,
    EngineUpdated,
    LogsUpdated,
    OutcomesUpdated,
)
from poise_tui.rundata import BASELINE_ID, RunReader, parent_id, why_not_run
from poise_tui.screens.common import WorkerErrors
from poise_tui.screens.proposal import proposal_markdown
from poise_tui.screens.steering import SteeringActions
from poise_tui.watch import ChangeTracker, dir_stamp, stamp
from poise_tui.widgets.archive_tree import ArchiveTree
from poise_tui.widgets.curves import CurvesView
from poise_tui.widgets.filter_box import FilterBox
from poise_tui.widgets.metrics_table import MetricsTable
from poise_tui.widgets.status_bar import StatusBar

ENGINE_RECHECK_S = 2.0
DETAIL_DELAY_S = 0.06  # cursor rest time before the detail pane follows the selection  # a dead engine changes no file, so its state is re-read on a clock too


def diff_header(cand: Any, against: str) -> str:
    """What the Diff tab compares, and how to switch: `c003 vs parent c001  (t: vs seed)`."""
    other = "seed" if against == "parent" else "parent"
    base = f"parent {parent_id(cand) or '(none)'}" if against == "parent" else "seed"
    return f"{cand.id} vs {base}  (t: vs {other})"


class MainScreen(SteeringActions, Screen[None], WorkerErrors):
    CSS_PATH = "main.tcss"
    BINDINGS = MAIN_BINDINGS

    def __init__(self, run_dir: Path, poll_s: float = 0.25, read_only: bool = False) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.poll_s = poll_s
        self.watch_only = read_only  # opened with --read-only: never steers, whatever the engine does
        self.engine_state = EngineState()
        self._error_shown = ""  # the engine's last "error: ..." message, shown once as a notification
        self._archive_error = ""  # why archive.json is unreadable, shown once as a dialog; "" while it reads
        self.diff_against = "parent"
        self._target: tuple[str, ...] = ()  # (selected, parent, baseline) the watcher loads curves for
        self._poke = threading.Event()
        self._sent: dict[str, str] = {}
        self._filled: set[str] = set()  # detail tabs already filled for shown_id
        self._log_text: str | None = None  # latest log tail of shown_id (None: not read yet); written into the
        # Log only while its tab is open
        self._detail_timer: Timer | None = None
        self.shown_id: str | None = None
        self.diff_shown: tuple[str, str, str] = ("", "", "")  # (candidate, against, text) on screen

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield FilterBox(placeholder="filter: status:evaluated tag:kl text  (Esc clears)", id="filter")
                yield Static("", id="no-match")
                yield ArchiveTree(id="tree")
            with TabbedContent(id="detail", initial="curves"):
                with TabPane("Curves", id="curves"):
                    yield CurvesView(id="curves-plot")
                with TabPane("Diff", id="diff"):
                    yield Static("", id="diff-header")
                    with VerticalScroll():
                        yield Static("select a candidate", id="diff-text")
                with TabPane("Proposal", id="proposal"), VerticalScroll():
                    yield Markdown("select a candidate", id="proposal-md")
                with TabPane("Metrics", id="metrics"):
                    yield Static("", id="metrics-note")
                    yield MetricsTable(id="metrics-table")
                with TabPane("Logs", id="logs"):
                    yield Log(id="log", max_lines=2000)
        yield Footer()

    def on_mount(self) -> None:
        self.title = self.run_dir.name
        self.query_one(ArchiveTree).focus()
        self.watch_run()

    @property
    def tree(self) -> ArchiveTree:
        return self.query_one(ArchiveTree)

    @property
    def read_only(self) -> bool:
        """Steering is off: opened watch-only, or the engine finished the run. Follows the engine: a finished
        run resumed with a larger budget (`poise run RUN --budget N`) can be steered again."""
        return self.watch_only or self.engine_state.state == "finished"

    # ---- the watcher (a thread; talks to the UI only through messages) ------
    @work(thread=True, group="watch", exit_on_error=False, name="run watcher")
    def watch_run(self) -> None:
        worker = get_current_worker()
        reader, tracker = RunReader(self.run_dir), ChangeTracker()
        last_engine = 0.0
        while not worker.is_cancelled:
            last_engine = self._poll(reader, tracker, last_engine)
            self._poke.wait(self.poll_s)
            self._poke.clear()

    def _poll(self, reader: RunReader, tracker: ChangeTracker, last_engine: float) -> float:
        run = self.run_dir
        if tracker.changed("archive", stamp(run / "archive.json")):
            self.post_message(self._read_archive(reader))
        now = time.monotonic()
        if tracker.changed("engine", stamp(run / "engine.json")) or now - last_engine > ENGINE_RECHECK_S:
            self.post_message(EngineUpdated(reader.engine()))
            last_engine = now
        if tracker.changed("outcomes", dir_stamp(run / "inbox" / "done", "*.json")):
            self.post_message(OutcomesUpdated(reader.outcomes()))
        self._poll_target(reader, tracker)
        return last_engine

    @staticmethod
    def _read_archive(reader: RunReader) -> ArchiveUpdated | ArchiveUnreadable:
        # A corrupt archive.json must not end the watcher: the engine state still has to show, and the
        # file may be restored while the TUI is open.
        try:
            return ArchiveUpdated(reader.candidates())
        except ArchiveError as exc:
            return ArchiveUnreadable(str(exc))

    def _poll_target(self, reader: RunReader, tracker: ChangeTracker) -> None:
        target = self._target
        if not target:
            return
        key = "|".join(target)
        curves = tuple(dir_stamp(self.run_dir / "jobs" / i, "*/metrics.jsonl") for i in target if i)
        if tracker.changed(f"curves:{key}", (hash(curves), 0)):
            labels = [target[0], f"parent {target[1]}", "baseline"]
            loaded = {label: reader.curve(i) for label, i in zip(labels, target) if i}
            self.post_message(CurvesUpdated(target[0], loaded))
        if tracker.changed(f"logs:{target[0]}", dir_stamp(self.run_dir / "jobs" / target[0], "*/*.log")):
            self.post_message(LogsUpdated(target[0], reader.log_tail(target[0])))

    def _set_target(self, cand: Any) -> None:
        pid = parent_id(cand) or ""
        baseline = BASELINE_ID if BASELINE_ID not in (cand.id, pid) else ""
        self._target = (cand.id, pid, baseline)
        self._poke.set()

    # ---- handlers: the only places widgets change ---------------------------
    @on(ArchiveUpdated)
    def archive_updated(self, message: ArchiveUpdated) -> None:
        self._archive_error = ""
        self.query_one(StatusBar).show_problem("")
        tree = self.tree
        tree.sync(message.candidates)
        if tree.cursor_node is None or tree.selected_id is None:
            tree.cursor_line = 0
        self._show_selected(force=True)

    @on(ArchiveUnreadable)
    def archive_unreadable(self, message: ArchiveUnreadable) -> None:
        self.query_one(StatusBar).show_problem("archive.json unreadable")
        if message.error != self._archive_error:
            from poise_tui.dialogs.error import ErrorDialog

            self._archive_error = message.error
            self.app.push_screen(ErrorDialog("archive.json cannot be read", message.error))

    @on(EngineUpdated)
    def engine_updated(self, message: EngineUpdated) -> None:
        was_paused = self.engine_state.state == "paused"
        st = self.engine_state = message.state
        if was_paused != (st.state == "paused"):
            self.refresh_bindings()  # p flips between Pause and Resume (check_action)
        self.query_one(StatusBar).show(st, self.read_only)
        training = st.candidate if st.stage == "train" and st.state in ("running", "paused", "stopping") else ""
        self.tree.set_training(training, st.progress)
        self._show_engine_error(st)

    def _show_engine_error(self, st: EngineState) -> None:
        """Why the engine stopped (a run.toml problem, a missing model): the status bar says only "stopped"."""
        if st.message.startswith("error:") and st.message != self._error_shown:
            self._error_shown = st.message
            self.notify(st.message.removeprefix("error:").strip(), title="engine stopped", severity="error",
                        timeout=60, markup=False)

    @on(CurvesUpdated)
    def curves_updated(self, message: CurvesUpdated) -> None:
        if message.cand_id == self.tree.selected_id:
            self.query_one(CurvesView).show(message.curves)

    @on(LogsUpdated)
    def logs_updated(self, message: LogsUpdated) -> None:
        if message.cand_id == self.tree.selected_id:
            self._log_text = message.text
            self._filled.discard("logs")
            self._fill_tab(self.query_one(TabbedContent).active)

    @on(DiffLoaded)
    def diff_loaded(self, message: DiffLoaded) -> None:
        if message.cand_id == self.tree.selected_id and message.against == self.diff_against:
            self.diff_shown = (message.cand_id, message.against, message.text)
            self.query_one("#diff-text", Static).update(Syntax(message.text, "diff", word_wrap=False,
                                                               theme="ansi_dark"))

    @on(OutcomesUpdated)
    def outcomes_updated(self, message: OutcomesUpdated) -> None:
        self.show_outcomes(message.outcomes)

    @on(Tree.NodeHighlighted)
    def node_highlighted(self) -> None:
        # Debounced: holding a key down repaints only the tree; the detail pane follows when the cursor rests.
        if self._detail_timer is not None:
            self._detail_timer.stop()
        self._detail_timer = self.set_timer(DETAIL_DELAY_S, self._show_selected)

    @on(FilterBox.Changed, "#filter")
    def filter_changed(self, event: FilterBox.Changed) -> None:
        self.tree.set_filter(event.value)
        self._show_filter_result()

    @on(FilterBox.Submitted, "#filter")
    def filter_submitted(self) -> None:
        self.tree.focus()

    @on(FilterBox.Closed)
    def filter_closed(self) -> None:
        self.tree.focus()

    def _show_filter_result(self) -> None:
        """With nothing matching, say so and hide the detail pane: it would show a node the tree no longer has."""
        empty = bool(self.tree.filter_text) and not self.tree.visible_ids()
        note = self.query_one("#no-match", Static)
        note.update(f"no candidate matches {self.tree.filter_text!r}" if empty else "")
        note.display = empty
        self.query_one("#detail", TabbedContent).display = not empty
        if empty:
            self.shown_id = None
            self._target = ()

    def _show_selected(self, force: bool = False) -> None:
        """Point the detail pane at the node under the cursor (when it changed, or on new archive data)."""
        cand = self.tree.candidate(self.tree.selected_id)
        if cand is None or (cand.id == self.shown_id and not force):
            return
        if cand.id != self.shown_id:
            # The old curves stay until the new ones arrive (their legend names the node): one redraw, not two.
            self._log_text = None
            self._set_target(cand)
        self.shown_id = cand.id
        self._filled.clear()
        self._fill_tab(self.query_one(TabbedContent).active)

    def _fill_tab(self, tab: str) -> None:
        """Fill one tab for the shown node; only the visible tab is filled (the others when they are opened)."""
        cand = self.tree.candidate(self.shown_id)
        if cand is None or tab in self._filled:
            return
        self._filled.add(tab)
        if tab == "proposal":
            self.query_one("#proposal-md", Markdown).update(proposal_markdown(cand))
        elif tab == "metrics":
            cands = self.tree.candidates
            refs = {"parent": cands.get(parent_id(cand) or ""), "baseline": cands.get(BASELINE_ID)}
            self.query_one(MetricsTable).show(cand, refs)
            note = self.query_one("#metrics-note", Static)
            note.update(why_not_run(cand))
            note.display = bool(why_not_run(cand))
        elif tab == "diff":
            self.query_one("#diff-header", Static).update(diff_header(cand, self.diff_against))
            self.load_diff(cand.id, self.diff_against)
        elif tab == "logs":
            log = self.query_one(Log)
            log.clear()
            # Log does not wrap: the placeholder (a rejection reason can be long) is wrapped to the pane.
            text = self._log_text or textwrap.fill(self._log_placeholder(cand), width=max(30, log.size.width - 2))
            log.write(text)

    def _log_placeholder(self, cand: Any) -> str:
        """What the Logs tab says while the node has no job log: for a rejected or vetoed node, why it never ran."""
        if self._log_text is None:
            return "waiting for job logs…"
        return why_not_run(cand) or f"no job logs yet for {cand.id} (jobs/{cand.id}/<seed>/stdout.log)"

    @on(TabbedContent.TabActivated, "#detail")
    def tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self._fill_tab(event.pane.id or "")

    @work(thread=True, group="diff", exclusive=True, exit_on_error=False, name="diff loader")
    def load_diff(self, cand_id: str, against: str) -> None:
        text = RunReader(self.run_dir).diff(cand_id, against=against)
        self.post_message(DiffLoaded(cand_id, against, text))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # `p` is bound twice: only the one that applies is active, so the footer reads Pause or Resume.
        if action == "pause":
            return self.engine_state.state != "paused"
        if action == "resume":
            return self.engine_state.state == "paused"
        return True

    # ---- view actions (steering actions live in SteeringActions) ------------
    def action_help(self) -> None:
        from poise_tui.screens.help import HelpScreen

        self.app.push_screen(HelpScreen(MAIN_BINDINGS))

    def action_best(self) -> None:
        """The run's best: the best candidate confirmed on fresh seeds, else the best by selection Overall."""
        from core.elites import best_confirmed
        from poise_tui.rundata import score_of

        confirmed = best_confirmed(list(self.tree.candidates.values()))
        scored = [(s.mean, c.id) for c in self.tree.candidates.values() if (s := score_of(c)) is not None]
        if confirmed is None and not scored:
            self.notify("no evaluated candidate yet", severity="warning")
            return
        best = confirmed.id if confirmed is not None else max(scored)[1]
        if confirmed is None:
            self.notify(f"{best} leads on selection Overall (unconfirmed: not yet re-evaluated on fresh seeds)")
        if not self.tree.select_id(best):
            self.notify(f"best is {best}, hidden by the filter", severity="warning")

    def action_filter(self) -> None:
        self.query_one(FilterBox).open()

    def action_sort(self) -> None:
        self.notify(f"children sorted by {self.tree.toggle_sort()}")

    def action_toggle_node(self) -> None:
        node = self.tree.cursor_node
        if node is not None and node.allow_expand:
            node.toggle()

    def action_diff_against(self) -> None:
        self.diff_against = "seed" if self.diff_against == "parent" else "parent"
        self.notify(f"diff against {self.diff_against}")
        self._filled.discard("diff")
        tabs = self.query_one(TabbedContent)
        if tabs.active == "diff":
            self._fill_tab("diff")
        else:
            tabs.active = "diff"  # TabActivated fills it

    def action_metric(self, step: int) -> None:
        self.query_one(TabbedContent).active = "curves"
        self.query_one(CurvesView).cycle(step)

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
