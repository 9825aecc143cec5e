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
        ("recipe = 'gpu'", "run.toml: recipe: 'gpu' is not one of"),
        ("seeds = 3", "run.toml: seeds: expected a list"),
        ("seeds = [0, 'one']", "run.toml: seeds[1]: expected int"),
        ("[budget]\ncandidates = 'many'", "run.toml: [budget].candidates: expected int"),
        ("budget = 3", "run.toml: [budget]: expected a table"),
        ("[search.selection]\nw_typo = 1.0", "run.toml: [search.selection]: unknown key 'w_typo'"),
        ("[search.selection]\nmode = 'best'", "run.toml: [search.selection].mode: 'best' is not one of"),
        ("[tiny]\nweights = { mul = 'high' }", "run.toml: [tiny].weights.mul: expected float, got 'high'"),
        ("recipe = ", "not valid TOML"),
    ],
)
def test_errors_name_file_and_key(tmp_path, body, fragment):
    path = tmp_path / "run.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(str(tmp_path))
    assert fragment in str(err.value)


# Values of the right type that no run can use: each is refused at load, naming the key, the value and
# what is allowed (before, `poise check` said "ready" and the mistake surfaced inside a job, or never).
@pytest.mark.parametrize(
    "body, fragment",
    [
        ("[budget]\ncandidates = -3", "[budget].candidates: must be >= 0, got -3"),
        ("[budget]\nwall_hours = -0.5", "[budget].wall_hours: must be >= 0, got -0.5"),
        ("seeds = []", "seeds: expected at least one seed"),
        ("seeds = [0, 1, 0]", "seeds: seed(s) [0] listed more than once"),
        ("[early_kill]\nzero_reward_steps = -1", "[early_kill].zero_reward_steps: must be >= 0, got -1"),
        ("[tiny]\nsteps = 0", "[tiny].steps: must be >= 1, got 0"),
        ("[tiny]\nprompts_per_step = -1", "[tiny].prompts_per_step: must be >= 1, got -1"),
        ("[tiny]\ngroup_size = 1", ("[tiny].group_size: must be >= 2 (GRPO compares the responses to one prompt "
                                    "with each other), got 1")),
        ("[tiny]\ntemperature = 0", "[tiny].temperature: must be > 0, got 0.0"),
        ("[tiny]\ntemperature = nan", "[tiny].temperature: must be > 0, got nan"),
        ("[tiny]\nminibatches = 0", "[tiny].minibatches: must be >= 1, got 0"),
        ("[tiny]\npass_k = 0", "[tiny].pass_k: must be >= 1, got 0"),
        ("[tiny]\neval_size = 0", "[tiny].eval_size: must be >= 1 and <= 116"),
        ("[tiny]\neval_size = 117", "[tiny].eval_size: must be >= 1 and <= 116 (split 'mul' has only 232"),
        ("[tiny]\nsft_steps = 0", "[tiny].sft_steps: must be >= 1, got 0"),
        ("[tiny]\nsft_format_noise = 1.5", "[tiny].sft_format_noise: must be >= 0 and <= 1, got 1.5"),
        ("[tiny]\nhidden_size = 30\nheads = 4", "[tiny].heads: hidden_size 30 is not a multiple of heads 4"),
        ("[tiny]\nweights = { mul = 1.0 }", ("[tiny].weights: no weight for add1, add2, sub, mixed, chain (weights "
                                            "must name exactly the evaluated splits: add1, add2, sub, mul, mixed, chain)")),
        ("[tiny]\ngreedy_splits = ['add1']\npassk_splits = ['mul']\nweights = { add1 = 0.5, mul = 0.5, div = 1.0 }",
         "[tiny].weights: div not in greedy_splits or passk_splits"),
        ("[tiny]\ngreedy_splits = ['add1']\npassk_splits = ['mul']\nweights = { add1 = 0.0, mul = 0.0 }",
         "[tiny].weights: every split has weight 0"),
        ("[tiny]\ngreedy_splits = ['add1']\npassk_splits = ['mul']\nweights = { add1 = -1.0, mul = 1.0 }",
         "[tiny].weights: weights must be >= 0"),
        ("[tiny]\ngreedy_splits = ['add1', 'div']", "[tiny].greedy_splits: unknown split(s) ['div']"),
        ("[tiny]\npassk_splits = ['mul', 'add1']", "[tiny].passk_splits: split(s) ['add1'] are also in greedy_splits"),
        ("[math]\ngroup_size = 1", "[math].group_size: must be >= 2"),
        ("[math]\ntemperature = -1.0", "[math].temperature: must be > 0, got -1.0"),
        ("[math]\npass_k = 0", "[math].pass_k: must be >= 1, got 0"),
        ("[math]\nmicro_batch_size = 0", "[math].micro_batch_size: must be >= 1, got 0"),
        ("[math]\nmicro_batch_size = 7", ("[math].micro_batch_size: 7 does not divide prompts_per_step * group_size "
                                          "= 256 * 8 = 2048")),
        ("[math]\nbenchmarks = []", "[math].benchmarks: expected at least one benchmark"),
        ("[math]\nbenchmarks = ['gsm8k']", "[math].benchmarks: unknown benchmark(s) ['gsm8k']"),
        ("[math]\ntrain_levels = [3, 6]", "[math].train_levels: expected MATH levels among [1, 2, 3, 4, 5]"),
        ("[math]\nvllm_gpu_memory_utilization = 0", "[math].vllm_gpu_memory_utilization: must be > 0 and <= 1"),
        ("[search]\nproposals_per_parent = 0", "[search].proposals_per_parent: must be >= 1, got 0"),
        ("[search]\nconfirm_top_k = -1", "[search].confirm_top_k: must be >= 0, got -1"),
        ("[search.selection]\nparents_per_round = 0", "[search.selection].parents_per_round: must be >= 1, got 0"),
        ("[search.selection]\nbeta = 0", "[search.selection].beta: must be > 0, got 0.0"),
        ("[search.selection]\ngamma = 1.5", "[search.selection].gamma: must be >= 0 and <= 1, got 1.5"),
    ],
)
def test_values_out_of_range_name_key_value_and_range(tmp_path, body, fragment):
    path = tmp_path / "run.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: {fragment}"), str(err.value)


@pytest.mark.parametrize(
    "ok, refused",
    [
        ("[budget]\ncandidates = 0\nwall_hours = 0\nllm_tokens = 0", "[budget]\nllm_tokens = -1"),  # 0 = no limit
        ("[tiny]\nthreads = 0\nweight_decay = 0.0", "[tiny]\nthreads = -1"),  # 0 = keep POISE_THREADS
        ("[tiny]\neval_size = 116", "[tiny]\neval_size = 117"),
        ("[tiny]\nprompts_per_step = 3\ngroup_size = 4\nminibatches = 5",  # the trainer needs no divisibility
         "[tiny]\nminibatches = 0"),
        ("[tiny]\ngreedy_splits = ['add1']\npassk_splits = ['mul']\nweights = { add1 = 0.0, mul = 1.0 }",
         "[tiny]\ngreedy_splits = ['add1']\npassk_splits = ['mul']\nweights = { add1 = 1.0 }"),
        ("[math]\nmax_steps = 0\neval_max_problems = 0\neval_temperature = 0.0",  # 0 = derived, all, greedy
         "[math]\nmax_steps = -1"),
        ("[math]\nprompts_per_step = 2\ngroup_size = 4\nmicro_batch_size = 4", "[math]\nmicro_batch_size = 3"),
        ("[search]\nrepair_attempts = 0\nreflect_giveup_after = 0\nconfirm_top_k = 0",
         "[search]\nrepair_attempts = -1"),
    ],
)
def test_values_at_a_bound_that_mean_something_are_accepted(tmp_path, ok, refused):
    path = tmp_path / "run.toml"
    path.write_text(ok)
    load_config(path)
    path.write_text(refused)
    with pytest.raises(ConfigError):
        load_config(path)


def test_the_test_suites_small_protocol_is_valid_and_a_group_of_one_is_not(tmp_path):
    """The engine tests shrink recipe tiny to seconds (tests/engine_support.py TINY): that stays loadable."""
    from engine_support import TINY

    cfg = RunConfig(seeds=[0])
    for key, value in TINY.items():
        setattr(cfg.tiny, key, value)
    save_config(cfg, tmp_path / "run.toml")
    assert load_config(tmp_path / "run.toml") == cfg
    cfg.tiny.group_size = 1
    save_config(cfg, tmp_path / "run.toml")
    with pytest.raises(ConfigError, match=r"\[tiny\]\.group_size: must be >= 2"):
        load_config(tmp_path / "run.toml")


def test_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="poise init"):
        load_config(tmp_path / "run.toml")


def test_relative_paths_are_relative_to_the_run_directory_wherever_it_is_read_from(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "run.toml").write_text('recipe = "math"\n[math]\nmodel_path = "models/qwen"\ndata_dir = "~/bench"\n'
                                  '[llm]\nmodel_path = "/abs/coder.gguf"\n')
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)  # a job's cwd is its job directory, the engine's anything
    cfg = load_config(run / "run.toml")
    assert cfg.math.model_path == str(run / "models" / "qwen")
    assert cfg.math.data_dir == str(tmp_path / "home" / "bench")
    assert cfg.llm.model_path == "/abs/coder.gguf"
    assert load_config(run / "run.toml").math.data_dir == cfg.math.data_dir  # loading again changes nothing


def test_a_run_toml_that_is_not_a_readable_text_file_is_a_clear_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "run.toml").mkdir()
    with pytest.raises(ConfigError, match=r"run.toml: cannot be read \(Is a directory\)"):
        load_config(tmp_path / "a" / "run.toml")
    (tmp_path / "b.toml").write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"b.toml: not UTF-8 text"):
        load_config(tmp_path / "b.toml")
