"""run.toml round trip and errors that name the file and the key."""

from __future__ import annotations

import dataclasses

import pytest

from core.config import RunConfig, load_config, save_config
from core.errors import ConfigError


def test_defaults_round_trip_through_toml(tmp_path):
    cfg = RunConfig(name="x", seeds=[3, 4], directive='say "hi"\nthere')
    cfg.search.selection.w_div = 0.5
    save_config(cfg, tmp_path / "run.toml")
    assert load_config(tmp_path / "run.toml") == cfg


def test_every_field_is_documented(tmp_path):
    def walk(obj):
        for f in dataclasses.fields(obj):
            assert f.metadata.get("help"), f"{type(obj).__name__}.{f.name} has no help text"
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value)

    walk(RunConfig())
    text = (save_config(RunConfig(), tmp_path / "r.toml"), (tmp_path / "r.toml").read_text())[1]
    assert "# Seeds every candidate is trained with" in text


@pytest.mark.parametrize(
    "body, fragment",
    [
        ("recipe = 'gpu'", "run.toml.recipe: 'gpu' is not one of"),
        ("seeds = 3", "run.toml.seeds: expected a list"),
        ("[budget]\ncandidates = 'many'", "run.toml.budget.candidates: expected int"),
        ("[search.selection]\nw_typo = 1.0", "run.toml.search.selection: unknown key 'w_typo'"),
        ("recipe = ", "not valid TOML"),
    ],
)
def test_errors_name_file_and_key(tmp_path, body, fragment):
    path = tmp_path / "run.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert fragment in str(err.value)


def test_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="poise init"):
        load_config(tmp_path / "run.toml")
