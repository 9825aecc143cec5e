"""Command palette provider: every main-screen action, under the same names as in the help screen."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from poise_tui.keys import MAIN_BINDINGS, help_text, key_label


class SteeringCommands(Provider):
    def _entries(self) -> list[tuple[str, str, str]]:
        """(description, action, key) for the main screen; nothing on other screens (their actions differ)."""
        from poise_tui.screens.main import MainScreen

        if not isinstance(self.screen, MainScreen):
            return []
        # Only the actions the screen has active now (pause or resume, not both).
        return [(help_text(b), b.action, key_label(b)) for b in MAIN_BINDINGS
                if self.screen.check_action(b.action, ()) is not False]

    async def discover(self) -> Hits:
        for description, action, key in self._entries():
            yield DiscoveryHit(description, partial(self.screen.run_action, action), help=f"key: {key}")

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for description, action, key in self._entries():
            score = matcher.match(description)
            if score > 0:
                yield Hit(score, matcher.highlight(description), partial(self.screen.run_action, action),
                          help=f"key: {key}")
