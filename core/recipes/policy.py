"""The trained policy between a job's two processes: the training process (candidate code) saves it, the
scoring process (core.recipes.eval_job, no candidate code) loads it into a model it built itself.

Format: `<job>/policy/shard-NNNNN.safetensors`. safetensors, not torch.save: reading it runs no code (no
pickle). Shards, because the sandbox caps every file a job writes (RLIMIT_FSIZE, `[limits] file_mb`, 512 MiB
by default) and a 1.5B model is 6 GB in float32, its embedding alone 0.9 GB: each shard stays under the cap,
and a tensor larger than a shard is stored flat in parts `name#i/k`. Loading is strict: exactly the model's
tensors (tied ones once), each of its shape and dtype, or the reason why not.
"""

from __future__ import annotations

import math
import re
import resource
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.jobspec import POLICY_DIR, JobResult

SHARD = "shard-{:05d}.safetensors"
SHARD_RE = re.compile(r"shard-\d{5}\.safetensors")
PART_RE = re.compile(r"(?P<name>.+)#(?P<i>\d+)/(?P<k>\d+)")
MAX_SHARD_BYTES = 1 << 30
HEADER_ROOM = 1 << 20  # a shard's JSON header, beside its tensors' bytes


def policy_dir(job_dir: str | Path) -> Path:
    return Path(job_dir) / POLICY_DIR


def remove_policy(job_dir: str | Path) -> None:
    shutil.rmtree(policy_dir(job_dir), ignore_errors=True)


def policy_kept(recipe_config: dict[str, Any]) -> bool:
    """Whether a job's policy outlives it: `keep_policy` of recipes that have the option (math: a full
    checkpoint per candidate and seed); recipe tiny's 0.4 MB policy is always kept."""
    return bool(recipe_config.get("keep_policy", True))


def sweep_policies(jobs_dir: str | Path) -> int:
    """Delete the policy/ of every job dir under jobs_dir (policies nobody keeps, left by a supervisor
    that was killed); call it only while no job runs there. Returns how many were deleted."""
    found = [d for d in Path(jobs_dir).glob(f"**/{POLICY_DIR}") if d.is_dir()]
    for folder in found:
        shutil.rmtree(folder, ignore_errors=True)
    return len(found)


def shard_budget() -> int:
    """Bytes of tensor data a shard may hold: under this process's file-size limit, at most 1 GiB."""
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft == resource.RLIM_INFINITY:
        return MAX_SHARD_BYTES
    return max(1 << 16, min(MAX_SHARD_BYTES, soft - HEADER_ROOM))


def save_policy(model: Any, job_dir: str | Path, budget: int | None = None) -> Path:
    """Write the model's weights to <job_dir>/policy/ in shards of at most `budget` bytes of tensor data."""
    out = policy_dir(job_dir)
    remove_policy(job_dir)
    write_shards(unique_tensors(model), out, budget)
    return out


def write_shards(tensors: dict[str, Any], out: Path, budget: int | None = None) -> None:
    """Write named tensors to a new directory `out` in shards of at most `budget` bytes of tensor data (the
    format above; a tensor larger than a shard is stored flat in parts)."""
    from safetensors.torch import save_file

    budget = budget or shard_budget()
    out.mkdir(parents=True)
    shard: dict[str, Any] = {}
    used, index = 0, 0
    for name, tensor in _pieces(tensors, budget):
        size = tensor.numel() * tensor.element_size()
        if shard and used + size > budget:
            save_file(shard, str(out / SHARD.format(index)))
            shard, used, index = {}, 0, index + 1
        shard[name], used = tensor, used + size
    save_file(shard, str(out / SHARD.format(index)))


def read_shards(folder: Path, shapes: dict[str, list[int]], place: Any = None) -> dict[str, Any]:
    """The tensors write_shards stored in `folder`, exactly those named in `shapes` and of those shapes (a
    split tensor is stored flat: `shapes` restores it). Raises ValueError on anything else.

    `place(tensor)`, when given, is applied to each tensor as soon as it is complete (say, a move to the GPU),
    so the host holds one tensor at a time rather than all of them (AdamW's state of 1.5B is 12 GB)."""
    from safetensors import safe_open

    targets = {name: _Shape(shape) for name, shape in shapes.items()}
    found: dict[str, Any] = {}
    parts: dict[str, dict[int, Any]] = {}
    for path in sorted(folder.iterdir()):
        if not SHARD_RE.fullmatch(path.name):
            raise ValueError(f"unexpected file {path.name}")
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open is not iterable
                match = PART_RE.fullmatch(key)
                name = match["name"] if match else key
                if name not in targets or name in found:
                    raise ValueError(f"tensor {name!r} is not expected here, or is stored twice")
                value = fh.get_tensor(key)
                if match:
                    value = _join_part(name, int(match["i"]), int(match["k"]), value, targets[name], parts)
                    if value is None:
                        continue
                if list(value.shape) != list(shapes[name]):
                    raise ValueError(f"{name}: shape {list(value.shape)}, expected {list(shapes[name])}")
                found[name] = place(value) if place is not None else value
    missing = sorted(set(targets) - set(found))
    if missing or parts:
        raise ValueError(f"tensors missing or incomplete: {(missing + sorted(parts))[:5]}")
    return found


class _Shape:
    """What _join_part needs of a target tensor: its element count and shape."""

    def __init__(self, shape: list[int]) -> None:
        self.shape = tuple(shape)

    def numel(self) -> int:
        return math.prod(self.shape)


def load_policy(model: Any, job_dir: str | Path) -> str:
    """'' once the saved tensors replace the model's; otherwise why the trained weights are unusable."""
    folder = policy_dir(job_dir)
    if not (folder.is_dir() and any(folder.iterdir())):
        return f"training wrote no {POLICY_DIR}/: nothing to evaluate"
    try:
        load_weights(model, folder)
    except Exception as exc:  # noqa: BLE001 - files the candidate's process wrote: any defect is its outcome
        return f"{POLICY_DIR}/ is not the recipe's model: {type(exc).__name__}: {str(exc)[:300]}"
    return ""


def unusable_policy(model: Any, job_dir: str | Path, extra: dict[str, Any] | None = None) -> JobResult | None:
    """Load the saved policy into `model`; None when it loaded and is finite, else the job's outcome:
    crashed (no usable file) or diverged (NaN/inf weights), with `extra` kept."""
    problem = load_policy(model, job_dir)
    if problem:
        return JobResult("crashed", problem, extra=dict(extra or {}))
    if not finite_weights(model):
        return JobResult("diverged", "weights contain NaN/inf after training", extra=dict(extra or {}))
    return None


def finite_weights(model: Any) -> bool:
    return all(math.isfinite(float(p.detach().abs().sum())) for p in model.parameters())


def unique_tensors(model: Any) -> dict[str, Any]:
    """The state dict with each storage once: a tied head and embedding are one tensor (the first name)."""
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    out = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            out[name] = tensor
    return out


def _pieces(tensors: dict[str, Any], budget: int) -> Iterator[tuple[str, Any]]:
    """(name, tensor) to store: whole, or flat parts of at most `budget` bytes named name#i/k."""
    for name, tensor in tensors.items():
        t = tensor.detach().cpu().contiguous()
        size = t.numel() * t.element_size()
        if size <= budget:
            yield name, t
            continue
        parts = t.flatten().split(max(1, budget // t.element_size()))
        for i, part in enumerate(parts):
            yield f"{name}#{i}/{len(parts)}", part.clone()  # clone: safetensors refuses views of one storage


def load_weights(model: Any, folder: Path) -> None:
    """Copy the tensors stored in `folder` into the model's, one shard at a time (a second copy of a 6 GB
    model never sits in memory); exactly the model's tensors, each of its shape and dtype, or ValueError."""
    import torch
    from safetensors import safe_open

    targets = unique_tensors(model)
    done: set[str] = set()
    parts: dict[str, dict[int, Any]] = {}
    with torch.no_grad():
        for path in sorted(folder.iterdir()):
            if not SHARD_RE.fullmatch(path.name):
                raise ValueError(f"unexpected file {path.name}")
            with safe_open(str(path), framework="pt") as fh:
                for key in fh.keys():  # noqa: SIM118 - safe_open is not iterable
                    _place(key, fh.get_tensor(key), targets, done, parts)
    missing = sorted(set(targets) - done)
    if missing or parts:
        raise ValueError(f"tensors missing or incomplete: {(missing + sorted(parts))[:5]}")


def _place(key: str, value: Any, targets: dict[str, Any], done: set[str], parts: dict[str, dict[int, Any]]) -> None:
    """Copy one stored tensor (or, once all its parts are in, a split one) into the model's tensor."""
    match = PART_RE.fullmatch(key)
    name = match["name"] if match else key
    if name not in targets or name in done:
        raise ValueError(f"tensor {name!r} is not the model's, or is stored twice")
    target = targets[name]
    if value.dtype != target.dtype:
        raise ValueError(f"{name}: dtype {value.dtype}, the model's is {target.dtype}")
    if match:
        value = _join_part(name, int(match["i"]), int(match["k"]), value, target, parts)
        if value is None:
            return  # more parts to come
    if tuple(value.shape) != tuple(target.shape):
        raise ValueError(f"{name}: shape {tuple(value.shape)}, the model's is {tuple(target.shape)}")
    target.copy_(value)
    done.add(name)


def _join_part(name: str, i: int, k: int, value: Any, target: Any, parts: dict[str, dict[int, Any]]) -> Any:
    """The whole tensor once part i of k completes it, else None; a part must be flat and new."""
    import torch

    got = parts.setdefault(name, {})
    if i >= k or i in got or value.dim() != 1:
        raise ValueError(f"{name}#{i}/{k}: a part out of range, repeated or not flat")
    got[i] = value
    if len(got) < k:
        return None
    del parts[name]
    if sum(p.numel() for p in got.values()) != target.numel():
        raise ValueError(f"{name}: its parts hold the wrong number of elements")
    return torch.cat([got[j] for j in range(k)]).view(target.shape)
