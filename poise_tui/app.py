"""The poise-tui App: attaches to a run (or offers the demo run); screens do the rest."""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import App

from poise_tui.commands import SteeringCommands
from poise_tui.launcher import (
    engine_command,
    init_demo_run,
    needs_engine,
    resume_budget,
    runs_home,
    start_engine,
    started_note,
)
from poise_tui.screens.common import WorkerErrors
from poise_tui.screens.main import MainScreen


class PoiseApp(App[None], WorkerErrors):
    TITLE = "poise"
    CSS_PATH = "app.tcss"
    COMMANDS = App.COMMANDS | {SteeringCommands}

    def __init__(self, run_dir: Path | None, *, start_engine: bool = True, poll_s: float = 0.25,
                 read_only: bool = False, home: Path | None = None) -> None:
        super().__init__()
        self.run_dir = Path(run_dir) if run_dir else None
        self.start_engine = start_engine
        self.poll_s = poll_s
        self.read_only = read_only
        self.home = home or runs_home()

    def on_mount(self) -> None:
        if self.run_dir is not None:
            self.attach(self.run_dir)
        else:
            self.offer_demo()

    def attach(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.sub_title = str(run_dir)
        self.push_screen(MainScreen(run_dir, poll_s=self.poll_s, read_only=self.read_only))
        if self.start_engine and not self.read_only:
            self.ensure_engine(run_dir)

    def offer_demo(self) -> None:
        from poise_tui.dialogs.confirm import ConfirmDialog

        def answered(yes: bool | None) -> None:
            if yes:
                self.notify("creating the demo run…")
                self.create_demo()
            else:
                self.exit()

        self.push_screen(ConfirmDialog("No runs yet", f"No poise run under {self.home}.\n\nCreate the demo run "
                                       "(recipe tiny, embedded model, CPU) and start its engine?",
                                       yes="Create demo", no="Quit"), answered)

    @work(thread=True, group="engine", exit_on_error=False, name="demo run creator")
    def create_demo(self) -> None:
        run_dir = init_demo_run(self.home)
        self.call_from_thread(self.attach, run_dir)

    @work(thread=True, group="engine", exit_on_error=False, name="engine starter")
    def ensure_engine(self, run_dir: Path) -> None:
        """Start a detached engine when none is alive, the run is not finished and its archive is readable;
        a stopped run resumes with the budget its last engine had."""
        if needs_engine(run_dir):
            budget = resume_budget(run_dir)
            pid = start_engine(run_dir, engine_command(run_dir, budget))
            self.call_from_thread(self.notify, started_note(pid, budget))
