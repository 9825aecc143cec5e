"""poise core: the discovery engine. It never imports the UI, nor torch at import time."""

__version__ = "0.1.0"
