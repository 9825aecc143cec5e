"""Where the files that ship with poise live: the seed template, the prompt templates and the bundled
warm starts of recipe tiny.

All are top-level directories of the repository (`workspace/`, `assets/prompts/`). A wheel ships
them inside the `core` package: pyproject.toml maps them to the data-only packages `core._workspace`
and `core._assets`, so an installed copy has them at `<site-packages>/core/_workspace` and
`core/_assets/prompts`. An editable install (`make setup`) and a plain checkout have no such copies
(setuptools' editable finder does not resolve data-only subpackages, checked with setuptools 84), so
there they are read from the source tree. The installed copy wins when both exist.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from core.errors import ResourceNotFoundError

_SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the checkout that holds core/, when there is one


def workspace_dir() -> Path:
    """The seed template directory (algorithm.py, CONTRACT.md) that `poise init` copies into a run's repo."""
    return _locate("seed template", "_workspace", Path("workspace"), "algorithm.py")


def prompts_dir() -> Path:
    """The directory of the LLM prompt templates (`<name>.md`, read by `core.operators.context.load_prompt`)."""
    return _locate("prompt templates", "_assets/prompts", Path("assets/prompts"), "propose.md")


def warm_starts_dir() -> Path:
    """The directory of prebuilt tiny warm starts (`<model hash>/`, read by `core.recipes.tiny.model`)."""
    return _locate("bundled warm starts", "_assets/warm_starts", Path("assets/warm_starts"), "README.md")


def _locate(what: str, packaged: str, source: Path, marker: str) -> Path:
    """The first of (installed copy, source tree) that holds `marker`; a ResourceNotFoundError naming both if none."""
    candidates = [_packaged_path(packaged), _SOURCE_ROOT / source]
    for path in candidates:
        if path is not None and (path / marker).is_file():
            return path
    looked = ", ".join(str(p) for p in candidates if p is not None)
    raise ResourceNotFoundError(
        f"{what} not found (no {marker} in {looked}); reinstall poise-tui from a full checkout "
        "(`pip install .` ships them) or run it from the checkout with `make setup`"
    )


def _packaged_path(rel: str) -> Path | None:
    """`core/<rel>` inside the installed package, or None when the package is not on a real file system."""
    root = files("core")
    # Workspace.init walks the template with rglob, so only a real directory will do; a zip import
    # (unsupported) yields another Traversable and falls through to the error.
    return root.joinpath(rel) if isinstance(root, Path) else None
