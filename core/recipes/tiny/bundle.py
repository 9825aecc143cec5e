"""Prebuilt warm starts that ship with poise (assets/warm_starts/<model hash>/).

Why ship weights at all: the SFT that builds the warm start is deterministic on one machine, but float
kernels differ between CPUs (AVX2 against AVX-512 paths of the same torch), and 700 SFT steps amplify the
rounding into another model. On one AVX-512 machine, 100 SFT steps of the default config end at loss
1.09192 with torch's AVX-512 kernels and at 1.09224 with ATEN_CPU_CAPABILITY=avx2. Two machines that built the default config got warm starts whose held-out
Overall differed by 0.06 and whose RL gains differed threefold. With the default warm start bundled, every
machine starts from the same model, and a fresh install skips the 1-2 minute build.

A config that is not bundled is built locally as before. Regenerate the bundle after changing a default
model field or BUILD_VERSION (tests/test_tiny_bundle.py fails until then):

    .venv/bin/python -m core.recipes.tiny.bundle        # or: make warm-start
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

from core.errors import CorruptResourceError, ResourceNotFoundError
from core.recipes.tiny.config import TinyConfig
from core.resources import warm_starts_dir

WEIGHTS = "model.safetensors"
# What a bundle holds: the model and tokenizer as transformers saves them, and meta.json.
BUNDLED_FILES = ("config.json", "generation_config.json", "meta.json", WEIGHTS, "tokenizer.json",
                 "tokenizer_config.json")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bundled_model(model_hash: str) -> Path | None:
    """The bundled warm start of this hash, or None when poise ships none (then it is built locally)."""
    try:
        path = warm_starts_dir() / model_hash
    except ResourceNotFoundError:  # an install without assets: building locally still works
        return None
    return path if (path / "meta.json").is_file() else None


def copy_bundled(src: Path, dest: Path) -> None:
    """Copy a bundled warm start into `dest` (a fresh temporary directory), checking its weights first."""
    meta = json.loads((src / "meta.json").read_text())
    want = meta.get("weights_sha256")
    if not (src / WEIGHTS).is_file() or sha256_of(src / WEIGHTS) != want:
        raise CorruptResourceError(
            f"the bundled warm start {src} is damaged: {WEIGHTS} is missing or its sha256 is not {want}; "
            "reinstall poise-tui (or `git checkout assets/warm_starts` in a checkout)")
    for name in BUNDLED_FILES:
        shutil.copy2(src / name, dest / name)


def write_bundle(cfg: TinyConfig, root: Path) -> Path:
    """Build `cfg`'s warm start in a scratch cache and lay it out under `root/<hash>/` with its checksum."""
    from core.recipes.tiny.model import load_or_build, model_hash

    dest = root / model_hash(cfg)
    with tempfile.TemporaryDirectory() as scratch:
        _, _, built = load_or_build(cfg, scratch, bundled=False)
        meta = json.loads((built / "meta.json").read_text())
        meta["weights_sha256"] = sha256_of(built / WEIGHTS)
        (built / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for name in BUNDLED_FILES:
            shutil.copy2(built / name, dest / name)
    return dest


def main() -> int:
    """Rebuild the default config's bundle in the checkout's assets/ and drop bundles of other hashes."""
    root = Path(__file__).resolve().parents[3] / "assets" / "warm_starts"
    dest = write_bundle(TinyConfig(), root)
    for old in root.iterdir():
        if old.is_dir() and old != dest:
            shutil.rmtree(old)
    print(f"wrote {dest} ({json.loads((dest / 'meta.json').read_text())['final_sft_loss']:.4f} final SFT loss)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
