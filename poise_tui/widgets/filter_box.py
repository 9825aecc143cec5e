"""The tree's filter box: Escape clears and hides it, `/` inside it selects the query instead of typing a slash."""

from __future__ import annotations

from typing import ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Input


class FilterBox(Input):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Clear filter", show=False)]

    class Closed(Message):
        """The user dismissed the filter: the screen clears it and gives the focus back to the tree."""

    def open(self) -> None:
        """Show and focus the box with its query selected, so typing replaces it (`/` again, or a first `/`)."""
        self.display = True
        self.focus()
        self.select_all()

    def action_close(self) -> None:
        self.value = ""
        self.display = False
        self.post_message(self.Closed())

    async def _on_key(self, event: events.Key) -> None:
        # The filter syntax has no slash, so `/` pressed here means "filter again", as it does from the tree.
        if event.character == "/":
            event.stop()
            event.prevent_default()
            self.select_all()
            return
        await super()._on_key(event)
