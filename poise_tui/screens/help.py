"""`?`: every key of the main screen, generated from its bindings so it cannot drift."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label

from poise_tui.keys import help_text, key_label


class HelpScreen(ModalScreen[None]):
    CSS_PATH = "help.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, bindings: list[Binding]) -> None:
        super().__init__()
        self._keys = bindings

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Label("Keys · ctrl+p: palette of every action · esc: close", id="help-title")
            table: DataTable[str] = DataTable(id="help-table", cursor_type="none", show_cursor=False)
            table.add_columns("key", "action")
            for binding in self._keys:
                table.add_row(key_label(binding), help_text(binding))
            yield table
