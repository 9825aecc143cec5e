"""The typed run config, loaded from `<run>/run.toml`. Every field is documented in its owner module."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from core.configlib import from_dict, opt, to_toml
from core.errors import ConfigError
from core.llm.config import LLMConfig
from core.recipes.math.config import MathConfig
from core.recipes.tiny.config import TinyConfig
from core.search_config import SearchConfig
from core.stats import DEFAULT_INTERVAL

CONFIG_FILE = "run.toml"


@dataclass
class BudgetConfig:
    candidates: int = opt(8, "Stop after this many new candidates have been evaluated (0 = no limit).", at_least=0)
    wall_hours: float = opt(0.0, "Stop after this many hours of wall time (0 = no limit).", at_least=0)
    llm_tokens: int = opt(0, "Stop after this many LLM tokens, prompt plus completion (0 = no limit).", at_least=0)


@dataclass
class LimitsConfig:
    """Any limit <= 0 means no limit (a CUDA job needs memory_mb = 0: CUDA reserves far more address space than it uses)."""

    timeout_s: float = opt(1800.0, "Wall-clock limit of one training+evaluation job; then it is killed (timed_out).")
    memory_mb: int = opt(8192, "Address-space limit of a job (RLIMIT_AS) in MiB; a runaway allocation fails inside the job.")
    data_mb: int = opt(0, "Private writable memory limit of a job (RLIMIT_DATA) in MiB (0 = none). Unlike memory_mb it "
                       "does not count address space reserved without access, which is what CUDA reserves, so it can cap "
                       "a recipe math job, whose memory_mb must be 0. Shared mappings escape it. Not yet tried with CUDA.")
    cpu_s: int = opt(7200, "CPU-time limit of a job (RLIMIT_CPU) in seconds.")
    file_mb: int = opt(512, "Largest file a job may write (RLIMIT_FSIZE) in MiB.")
    nproc: int = opt(512, "Process/thread limit of the job's user (RLIMIT_NPROC); stops fork bombs.")
    disk_mb: int = opt(4096, "Most a job may write under its job dir, all files together, in MiB (0 = no cap): "
                       "file_mb caps one file, not their number. Measured twice a second; a job over it is stopped as "
                       "crashed and what it wrote is deleted (its logs keep their tails). Recipe math writes ~28 bytes "
                       "a parameter with checkpoints, 4 without (preflight says what the model needs).")
    probe_timeout_s: float = opt(120.0, "Wall-clock limit of the contract-probe job at verification (the candidate's "
                                 "functions on small batches take seconds): an endless loop is caught this fast, "
                                 "not after timeout_s.", above=0)


@dataclass
class EarlyKillConfig:
    max_kl: float = opt(5.0, "Kill as diverged when KL to the reference exceeds this.")
    min_entropy: float = opt(1e-4, "Kill as diverged when mean token entropy falls below this (collapse).")
    zero_reward_steps: int = opt(20, "Kill as diverged after this many consecutive steps with mean reward 0 "
                                 "(0 = never).", at_least=0)
    no_update_steps: int = opt(10, "Kill as diverged after this many consecutive steps in which filter_groups kept "
                               "nothing, so the policy was not updated (0 = never).", at_least=0)


@dataclass
class StatsConfig:
    interval: Literal["t", "bootstrap"] = opt(
        DEFAULT_INTERVAL, "Confidence interval over seeds of every stored metric and paired difference: t (Student's, "
        "right coverage at 3-6 seeds) or bootstrap (percentile; covers ~75% at 3 seeds, bench/RESULTS.md). "
        "Changing it recomputes every candidate's intervals from its per-seed values when read. The interval that "
        "also counts the eval problems as a sample (core.eval_noise) is a closed-form t interval in both cases.")


@dataclass
class RunConfig:
    name: str = opt("poise-run", "A label for this run, shown in the TUI and reports.")
    recipe: Literal["tiny", "math"] = opt("tiny", "tiny runs on CPU in minutes; math is the paper's GPU protocol.")
    seeds: list[int] = opt([0, 1, 2], "Seeds every candidate is trained with; paired with the parent's and the baseline's.")
    directive: str = opt("", "Optional natural-language goal that steers proposals (e.g. shorter responses at equal accuracy).")
    budget: BudgetConfig = opt(BudgetConfig(), "When the engine stops by itself.")
    limits: LimitsConfig = opt(LimitsConfig(), "Resource limits of every sandboxed job.")
    early_kill: EarlyKillConfig = opt(EarlyKillConfig(), "Thresholds that end a training job early as diverged.")
    stats: StatsConfig = opt(StatsConfig(), "How results over seeds are summarized.")
    search: SearchConfig = opt(SearchConfig(), "The discovery loop: selection, proposal, verification.")
    llm: LLMConfig = opt(LLMConfig(), "The local language model that proposes and reflects.")
    tiny: TinyConfig = opt(TinyConfig(), "Recipe tiny (CPU).")
    math: MathConfig = opt(MathConfig(), "Recipe math (GPU, the paper's protocol).")

    def config_problems(self) -> list[tuple[str, str]]:
        """Checks across fields (see core/configlib.py): (key, what is wrong)."""
        if not self.seeds:
            return [("seeds", "expected at least one seed; every candidate is trained once per seed")]
        repeated = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
        if repeated:  # results are stored per seed: a repeated seed would be trained twice and counted once
            return [("seeds", f"seed(s) {repeated} listed more than once")]
        return []


def load_config(path: Path) -> RunConfig:
    """Read run.toml; every problem names the file and the key."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; create a run with `poise init <dir>`") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:  # a directory, no permission, an I/O error
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc}); it must be the run's TOML file") from None
    try:
        cfg = from_dict(RunConfig, data, "")
    except ConfigError as exc:  # "run.toml: [tiny].steps: ...": the file, then the key as run.toml spells it
        raise ConfigError(f"{path}: {exc}") from None
    return _paths_from(cfg, Path(path).resolve().parent)


def _paths_from(cfg: RunConfig, run_dir: Path) -> RunConfig:
    """Relative paths in run.toml are relative to the run directory, wherever a process reads them from:
    the engine, the TUI and a job (whose cwd is its job directory) must all find the same files."""
    for section, key in (("math", "model_path"), ("math", "data_dir"), ("llm", "model_path")):
        part = getattr(cfg, section)
        value = getattr(part, key)
        if value:
            setattr(part, key, str(run_dir / Path(value).expanduser()))  # an absolute path stays as it is
    return cfg


def save_config(cfg: RunConfig, path: Path) -> None:
    header = "# poise run config. Every key is documented above it. Changing it mid-run breaks comparability.\n\n"
    Path(path).write_text(header + to_toml(cfg))


def stats_interval(run_dir: Path) -> str:
    """The run's [stats] interval, for readers that open its archive (CLI, report, TUI). The default when
    run.toml cannot be read: a run with a broken config still shows its numbers, and the engine, which
    loads the config strictly, reports the problem."""
    try:
        return load_config(Path(run_dir) / CONFIG_FILE).stats.interval
    except ConfigError:
        return DEFAULT_INTERVAL
