"""`?`: every key of the main screen, generated from its bindings so it cannot drift."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from poise_tui.keys import help_text, key_label


def keys_table(bindings: list[Binding]) -> Table:
    """Key and what it does, one row per binding."""
    table = Table(box=None, expand=True, pad_edge=False, header_style="bold")
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("action", ratio=1)
    for binding in bindings:
        table.add_row(key_label(binding), help_text(binding))
    return table


class HelpScreen(ModalScreen[None]):
    CSS_PATH = "help.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, bindings: list[Binding]) -> None:
        super().__init__()
        self._keys = bindings

    def compose(self) -> ComposeResult:
        # A plain Static inside the scroll: it is as tall as its rows, so the box scrolls to the last one.
        # (A DataTable here was capped at the box's height by its own `max-height: 100%`, and its last rows
        # could not be reached at 80x24.)
        with VerticalScroll(id="help-box"):
            yield Label("Keys · ctrl+p: palette of every action · esc: close", id="help-title")
            yield Static(keys_table(self._keys), id="help-keys")
