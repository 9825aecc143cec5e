"""The single route for worker failures: any failed worker becomes an error dialog."""

from __future__ import annotations

from textual import on
from textual.dom import DOMNode
from textual.worker import Worker, WorkerState

from core.errors import PoiseError


class WorkerErrors(DOMNode):
    """Mixin for the app and screens (Worker.StateChanged does not bubble, so each node that starts workers has it).

    List it after the Textual base (`class X(Screen[None], WorkerErrors)`): Textual takes a class's CSS type
    names and DEFAULT_CSS only through its first DOMNode base, so listed first this mixin would hide `Screen`
    or `App` from CSS, leaving the screen without a background or foreground (text drawn black on black)."""

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        from poise_tui.dialogs.error import ErrorDialog

        error = event.worker.error
        # Our own errors carry a message for the user; anything else is a bug, so say which worker.
        text = str(error) if isinstance(error, PoiseError) else f"{type(error).__name__}: {error}"
        self.app.push_screen(ErrorDialog(f"{event.worker.name or 'worker'} failed", text))
