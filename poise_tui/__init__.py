"""poise-tui: the Textual application over a POISE run."""
