"""The mechanism library: registered GRPO-family mechanisms, compositions and the algorithm.py renderer.

Importing this package imports torch (the mechanisms are torch code); the TUI
must import it lazily. `list_mechanisms()` is what `poise mechanisms` prints.
"""

from core.mechanisms import advantages, aggregation, filters, helpers, kl, losses  # noqa: F401  (registration)
from core.mechanisms.compose import Composition, Step, run_advantages, run_filter, run_policy_loss
from core.mechanisms.presets import PRESETS, preset
from core.mechanisms.probe import advantages_agree, probe_batches
from core.mechanisms.registry import KINDS, MechanismInfo, get, list_mechanisms, names, register
from core.mechanisms.render import render

__all__ = [
    "KINDS", "PRESETS", "Composition", "MechanismInfo", "Step", "advantages_agree", "get", "list_mechanisms",
    "names", "preset", "probe_batches", "register", "render", "run_advantages", "run_filter", "run_policy_loss",
]
