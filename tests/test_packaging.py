"""A non-editable install works: the wheel ships workspace/ and assets/ and the code finds them there.

The wheel is built from a copy of the checkout (git's tracked and untracked-but-not-ignored files), so
stale `build/` output cannot leak into it and nothing is written into the repository. It is then
unzipped, which is what `pip install` does to a pure-Python wheel, and used from a subprocess whose
cwd is outside the repository; each subprocess reports `core.__file__` so the test proves which copy
of the code ran (the venv's editable finder for the checkout stays on sys.meta_path, behind PYTHONPATH).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SKIP_PARTS = {"__pycache__", ".git"}


def _run(args: list[str], cwd: Path, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | (env_extra or {})
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{args[:4]} failed:\n{done.stdout}\n{done.stderr}"
    return done


def _copy_checkout(dest: Path) -> Path:
    """Copy what a fresh clone plus local edits would hold; skip when this is not a git checkout."""
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                                capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (or no git): cannot copy the source tree to build from")
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file():  # deleted-but-tracked files are listed too
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _data_files(tree: Path, under: str) -> set[str]:
    base = tree / under
    return {p.relative_to(base).as_posix() for p in base.rglob("*")
            if p.is_file() and not (set(p.parts) & _SKIP_PARTS) and p.suffix != ".pyc"}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy_checkout(tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module")
def wheel(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
          str(source)], cwd=out)
    (whl,) = out.glob("poise_tui-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel unpacked as pip would lay it out in site-packages."""
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return site


PROBE = """
import json, sys
import core
from core.operators.context import load_prompt
from core.resources import prompts_dir, workspace_dir
print(json.dumps({"core": core.__file__, "sys_path": sys.path, "workspace": str(workspace_dir()),
                  "prompts": str(prompts_dir()), "seed": (workspace_dir() / "algorithm.py").read_text(),
                  "propose": load_prompt("propose")}))
"""


def _probe(site: Path, cwd: Path) -> dict:
    return json.loads(_run([sys.executable, "-c", PROBE], cwd=cwd, env_extra={"PYTHONPATH": str(site)}).stdout)


def test_wheel_ships_every_source_and_data_file(source: Path, wheel: Path) -> None:
    """Guards the explicit package list in pyproject.toml: a new subpackage left out of it fails here."""
    names = set(zipfile.ZipFile(wheel).namelist())
    code = {p.relative_to(source).as_posix() for pkg in ("core", "poise_tui") for p in (source / pkg).rglob("*")
            if p.suffix in (".py", ".tcss") and not (set(p.parts) & _SKIP_PARTS)}
    data = {f"core/_workspace/{f}" for f in _data_files(source, "workspace")}
    data |= {f"core/_assets/{f}" for f in _data_files(source, "assets")}
    assert {"core/_workspace/algorithm.py", "core/_workspace/CONTRACT.md", "core/_assets/prompts/propose.md"} <= data
    assert sorted(code - names) == [] and sorted(data - names) == []
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_installed_wheel_finds_its_own_resources(installed: Path, tmp_path: Path) -> None:
    got = _probe(installed, tmp_path)
    assert Path(got["core"]).is_relative_to(installed), got["core"]
    assert not [p for p in got["sys_path"] if p and Path(p).resolve() == ROOT], "the checkout leaked onto sys.path"
    assert Path(got["workspace"]) == installed / "core" / "_workspace"
    assert Path(got["prompts"]) == installed / "core" / "_assets" / "prompts"
    assert got["seed"] == (ROOT / "workspace" / "algorithm.py").read_text()
    assert got["propose"] == (ROOT / "assets" / "prompts" / "propose.md").read_text().strip()


def test_poise_init_from_installed_wheel(installed: Path, tmp_path: Path) -> None:
    done = _run([sys.executable, "-m", "core.cli", "init", "run"], cwd=tmp_path,
                env_extra={"PYTHONPATH": str(installed)})
    assert "created run" in done.stdout
    repo = tmp_path / "run" / "repo"
    assert (repo / "algorithm.py").read_text() == (ROOT / "workspace" / "algorithm.py").read_text()
    assert (repo / "CONTRACT.md").is_file() and (tmp_path / "run" / "run.toml").is_file()


def test_missing_resources_raise_an_actionable_error(installed: Path, tmp_path: Path) -> None:
    """Neither an installed copy nor a checkout: the error names both places and what to do."""
    broken = tmp_path / "site"
    shutil.copytree(installed, broken, ignore=shutil.ignore_patterns("_assets"))
    code = ("from core.resources import ResourceNotFoundError, prompts_dir\n"
            "try:\n    prompts_dir()\nexcept ResourceNotFoundError as e:\n    print(e)\n")
    msg = _run([sys.executable, "-c", code], cwd=tmp_path, env_extra={"PYTHONPATH": str(broken)}).stdout
    assert "prompt templates not found" in msg and "reinstall" in msg
    assert str(broken / "core" / "_assets" / "prompts") in msg and str(broken / "assets" / "prompts") in msg


def test_editable_install_reads_the_checkout(source: Path, tmp_path: Path) -> None:
    """What `make setup` installs (PEP 660, setuptools' finder) still finds workspace/ and assets/ in the tree."""
    _run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_editable({str(tmp_path)!r})"],
         cwd=source)
    (whl,) = tmp_path.glob("*.editable-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(whl).extractall(site)
    # -S: no venv site-packages, so the only way to `core` is the editable wheel's .pth and finder.
    code = ("import site, sys; site.addsitedir(sys.argv[1])\n"
            "import core; from core.resources import prompts_dir, workspace_dir\n"
            "print(core.__file__); print(workspace_dir()); print(prompts_dir())")
    out = _run([sys.executable, "-S", "-c", code, str(site)], cwd=tmp_path).stdout.split("\n")
    expected = [source / "core" / "__init__.py", source / "workspace", source / "assets" / "prompts"]
    assert out[:3] == [str(p) for p in expected]
