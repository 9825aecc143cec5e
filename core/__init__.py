"""poise core: the discovery engine. Never imports textual, poise_tui, or torch at import time."""

__version__ = "0.1.0"
