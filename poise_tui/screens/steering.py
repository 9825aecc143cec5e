"""Steering actions of the main screen: each one becomes an inbox command, and its outcome a notification."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work

from core.engine import RERUNNABLE
from core.inbox import send_command
from core.runstate import EngineState
from poise_tui.rundata import TuiError
from poise_tui.widgets.status_bar import budget_text

VETOABLE = ("proposed", "implemented", "verified")


class SteeringActions:
    """Mixin for MainScreen; expects run_dir, watch_only, read_only, engine_state, tree, notify, app."""

    run_dir: Path
    watch_only: bool
    read_only: bool
    engine_state: EngineState
    _sent: dict[str, str]  # command id -> name, for commands this screen sent and awaits

    def steering_refusal(self, name: str) -> str | None:
        """Why `name` cannot be sent now (None when it can), with what to do instead."""
        if self.watch_only:
            return f"{name}: this TUI was opened with --read-only; reopen it without --read-only to steer"
        st = self.engine_state
        if st.state == "finished":
            larger = f" (N > {st.candidates_budget})" if st.candidates_budget else ""
            return (f"{name}: the run is finished ({budget_text(st)}, read-only); to steer, resume it with a "
                    f"larger budget: poise run {self.run_dir} --budget N{larger}")
        return None

    def _refused(self, name: str) -> bool:
        """Say why `name` cannot be sent, if it cannot; True then."""
        why = self.steering_refusal(name)
        if why is not None:
            self.notify(why, severity="warning", markup=False)
        return why is not None

    def _send(self, name: str, **args: Any) -> str | None:
        """Queue a command; its outcome arrives later as an OutcomesUpdated message."""
        if self._refused(name):
            return None
        cmd_id = send_command(self.run_dir, name, **args)
        self._sent[cmd_id] = name
        self.notify(f"{name} sent{' for ' + args['id'] if 'id' in args else ''}; waiting for the engine")
        return cmd_id

    def show_outcomes(self, outcomes: list[dict[str, Any]]) -> None:
        """Notify the outcome of each command this screen sent (other TUIs' commands are theirs to show)."""
        for outcome in outcomes:
            name = self._sent.pop(outcome.get("id", ""), None)
            if name is not None:
                ok = bool(outcome.get("ok"))
                self.notify(f"{name}: {outcome.get('outcome', '')}", title="engine",
                            severity="information" if ok else "error")

    def _selected(self) -> Any:
        cand = self.tree.candidate(self.tree.selected_id)  # type: ignore[attr-defined]
        if cand is None:
            self.notify("select a candidate first", severity="warning")
        return cand

    # `p` is bound to both; MainScreen.check_action leaves only the one that applies active.
    def action_pause(self) -> None:
        self._send("pause")

    def action_resume(self) -> None:
        self._send("resume")

    def action_rerun(self) -> None:
        # Refused here, as veto is, rather than hidden with check_action: a key that silently does nothing on
        # some nodes explains nothing, and the engine would refuse it anyway (Engine.queue_rerun), a round trip later.
        cand = self._selected()
        if cand is not None and cand.status not in RERUNNABLE:
            self.notify(f"{cand.id} is {cand.status}; only a candidate whose evaluation has finished can be rerun "
                        f"({', '.join(RERUNNABLE)})", severity="warning")
        elif cand is not None:
            used = [int(s) for s in (cand.seeds or [])] or [0]
            count = max(1, len(cand.seeds or []))
            self._send("rerun", id=cand.id, seeds=[max(used) + 1 + i for i in range(count)])

    def action_fork(self) -> None:
        # Refused before the dialog: a directive typed into it would only be thrown away.
        if self._refused("fork"):
            return
        cand = self._selected()
        if cand is None:
            return
        from poise_tui.dialogs.text_input import TextDialog

        def done(directive: str | None) -> None:
            if directive is not None:
                self._send("fork", id=cand.id, **({"directive": directive} if directive else {}))

        self.app.push_screen(TextDialog(f"Fork {cand.id}: optional directive for its children",
                                        "e.g. reduce response length at equal accuracy"), done)

    def action_veto(self) -> None:
        cand = self._selected()
        if cand is None:
            return
        if cand.status not in VETOABLE:
            self.notify(f"{cand.id} is {cand.status}; only {', '.join(VETOABLE)} candidates can be vetoed",
                        severity="warning")
            return
        self._send("veto", id=cand.id)

    def action_directive(self) -> None:
        if self._refused("set_directive"):  # before the dialog, as for fork
            return
        from poise_tui.dialogs.text_input import TextDialog

        def done(directive: str | None) -> None:
            if directive is not None:
                self._send("set_directive", directive=directive)

        self.app.push_screen(TextDialog("Run directive for later proposals (empty clears it)"), done)

    def action_mark(self) -> None:
        cand = self._selected()
        if cand is not None:
            marked = self.tree.toggle_mark(cand.id)  # type: ignore[attr-defined]
            self.notify(f"marked: {', '.join(marked) or 'none'}" + ("; press c to compare" if len(marked) == 2 else ""))

    def action_compare(self) -> None:
        marked = list(self.tree.marked)  # type: ignore[attr-defined]
        if len(marked) != 2:
            self.notify("mark two candidates with m first", severity="warning")
            return
        from poise_tui.screens.compare import CompareScreen

        cands = self.tree.candidates  # type: ignore[attr-defined]
        self.app.push_screen(CompareScreen(self.run_dir, cands[marked[0]], cands[marked[1]]))

    def action_detach(self) -> None:
        self.app.exit()

    def action_quit_and_stop(self) -> None:
        if not self.read_only:
            send_command(self.run_dir, "stop")
        self.app.exit(message=None)

    def action_report(self) -> None:
        self.notify("building the report (poise report)…")
        self.build_report()

    @work(thread=True, group="report", exclusive=True, exit_on_error=False, name="poise report")
    def build_report(self) -> None:
        text = run_report(self.run_dir)
        self.app.call_from_thread(self._show_report, text)

    def _show_report(self, text: str) -> None:
        from poise_tui.screens.report import ReportScreen

        self.app.push_screen(ReportScreen(text))

    if TYPE_CHECKING:  # provided by Screen / MainScreen
        app: Any
        tree: Any

        def notify(self, *args: Any, **kwargs: Any) -> None: ...


def run_report(run_dir: Path) -> str:
    """Run `poise report <dir>`; returns its Markdown (stdout, or the report.md it wrote)."""
    cmd = [sys.executable, "-m", "core.cli", "report", str(run_dir)]
    root = str(Path(__file__).resolve().parents[2])
    done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=root, timeout=300, check=False)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise TuiError(f"`poise report {run_dir}` failed: {last[0]}; run it in a shell to see everything")
    # `poise report` prints the path of the Markdown file it wrote.
    lines = done.stdout.strip().splitlines()
    path = Path(lines[-1].strip()) if lines else Path(run_dir) / "report.md"
    if not path.is_file():
        raise TuiError(f"`poise report` said it wrote {path}, but there is no such file; run it in a shell")
    return path.read_text()
