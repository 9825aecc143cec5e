"""Every key of the main screen, in one list: the screen binds it, the help screen and the palette list it.

One source, so help, palette and tests cannot drift from what the keys do. `description` is the
short footer text; `tooltip` is the longer line the help screen and the palette show.
"""

from __future__ import annotations

from textual.binding import Binding


def _b(key: str, action: str, short: str, long: str, show: bool = False, display: str | None = None) -> Binding:
    return Binding(key, action, short, show=show, key_display=display, tooltip=long)


MAIN_BINDINGS: list[Binding] = [
    _b("question_mark", "help", "Help", "this list of keys", True, "?"),
    _b("q", "detach", "Quit", "quit the TUI; the engine keeps running", True),
    _b("Q", "quit_and_stop", "Quit+stop", "quit and ask the engine to stop after its current stage", display="Q"),
    # Two bindings, one key: MainScreen.check_action keeps only the one that applies, so the footer says which.
    _b("p", "pause", "Pause", "pause the engine", True),
    _b("p", "resume", "Resume", "resume the paused engine", True),
    _b("f", "fork", "Fork", "fork from the selected node (optional directive)", True),
    _b("r", "rerun", "Rerun", "rerun the selected node on new seeds", True),
    _b("v", "veto", "Veto", "veto the selected proposed/verified node", True),
    _b("m", "mark", "Mark", "mark the selected node for comparison (two at most)", True),
    _b("c", "compare", "Compare", "compare the two marked nodes", True),
    _b("d", "directive", "Directive", "set the run's directive for later proposals"),
    _b("o", "report", "Report", "build and open the run report (poise report)"),
    _b("b", "best", "Best", "jump to the best node (confirmed on fresh seeds first)"),
    _b("slash", "filter", "Filter", "filter the tree: status:<s> tag:<t> words", display="/"),
    _b("s", "sort", "Sort", "sort children by time or by Overall"),
    _b("x", "toggle_node", "Fold", "expand or collapse the selected node"),
    _b("t", "diff_against", "Diff vs", "diff against the parent or the seed"),
    _b("left_square_bracket", "metric(-1)", "Prev metric", "previous curve metric", display="["),
    _b("right_square_bracket", "metric(1)", "Next metric", "next curve metric", display="]"),
    _b("1", "tab('curves')", "Curves", "Curves tab"),
    _b("2", "tab('diff')", "Diff", "Diff tab"),
    _b("3", "tab('proposal')", "Proposal", "Proposal & Reflection tab"),
    _b("4", "tab('metrics')", "Metrics", "Metrics tab"),
    _b("5", "tab('logs')", "Logs", "Logs tab"),
]


def key_label(binding: Binding) -> str:
    return binding.key_display or binding.key


def help_text(binding: Binding) -> str:
    return binding.tooltip or binding.description
