"""The core never knows the UI, and light modules stay light (the TUI must start instantly)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "trl", "llama_cpp", "sklearn", "matplotlib", "vllm")


def imported_after(stmt: str) -> set[str]:
    code = f"import sys; {stmt}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_core_pulls_neither_textual_nor_torch():
    mods = imported_after("import core, core.config, core.contract, core.jobspec, core.runstate, core.inbox, core.cli")
    assert not {m for m in mods if m.split(".")[0] in ("textual", "poise_tui", *HEAVY)}


def test_core_sources_never_import_the_ui():
    offenders = []
    for path in (ROOT / "core").rglob("*.py"):
        text = path.read_text()
        if "import textual" in text or "from textual" in text or "poise_tui" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_store_modules_stay_light():
    mods = imported_after("import core.archive, core.workspace, core.stats")
    assert not {m for m in mods if m.split(".")[0] in HEAVY}
