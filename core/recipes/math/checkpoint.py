"""Resumable checkpoints of a math training job.

A job of the paper's recipe trains for hours. When it is interrupted without an outcome of its own (the
engine was killed, the machine rebooted, the user stopped the run), core.evaluate keeps `<job>/checkpoints/`
and the next attempt of the same job resumes from its latest checkpoint instead of step 0, through
transformers' own resume path (the same data order, learning-rate schedule and RNG streams).

Written with our own files instead of the Trainer's, for two reasons: the sandbox caps every file a job
writes (`[limits] file_mb`), and the Trainer writes the optimizer state of a 1.5B model as one 12 GB
torch.save file; and loading a pickle would run code. So a checkpoint is:

    checkpoints/checkpoint-N/weights/   model tensors, safetensors shards (core.recipes.policy)
                            optimizer/ the optimizer's tensors, same format
                            rng/       torch's RNG states (CPU, CUDA), same format
                            state.json the optimizer's other state, the scheduler, Python's and NumPy's
                                       RNG states, the tensors' shapes, and the library versions
                            trainer_state.json  the Trainer's, written last

It is written as checkpoint-N.partial and renamed, so a kill -9 mid-write leaves no checkpoint that looks
complete; older checkpoints are deleted after the rename. The supervisor deletes the directory when the job
ends with an outcome (core.jobs), so only interrupted jobs leave one.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from core.jobspec import CHECKPOINT_DIR, remove_path
from core.recipes.policy import load_weights, read_shards, unique_tensors, write_shards

STATE_FILE = "state.json"
TRAINER_STATE = "trainer_state.json"  # transformers' TRAINER_STATE_NAME
NAME_RE = re.compile(r"checkpoint-(\d+)")
PARTIAL = ".partial"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from."""


def checkpoint_root(job_dir: str | Path) -> Path:
    return Path(job_dir) / CHECKPOINT_DIR


def versions() -> dict[str, str]:
    """Libraries whose state formats a checkpoint depends on; another version starts the job afresh."""
    import torch
    import transformers
    import trl

    return {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__}


def latest_checkpoint(job_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of this job that this software can resume; everything else under
    checkpoints/ is deleted (a torn .partial write, an older checkpoint, one from other library versions)."""
    root = checkpoint_root(job_dir)
    if not root.is_dir():
        return None
    usable = sorted((c for c in root.iterdir() if _complete(c)), key=_step)
    best = usable[-1] if usable else None
    for entry in root.iterdir():
        if entry != best:
            remove_path(entry)
    return best


def _step(path: Path) -> int:
    return int(NAME_RE.fullmatch(path.name)[1])  # type: ignore[index]


def _complete(path: Path) -> bool:
    """A directory named checkpoint-N whose trainer state says step N and whose versions are ours."""
    if not (path.is_dir() and NAME_RE.fullmatch(path.name)):
        return False
    try:
        trainer_state = json.loads((path / TRAINER_STATE).read_text())
        state = _state(path)
    except (OSError, ValueError):
        return False
    return trainer_state.get("global_step") == _step(path) and state.get("versions") == versions()


def logged_steps(checkpoint: Path) -> list[dict[str, Any]]:
    """The Trainer's log entries up to the checkpoint (to replay the metrics of the steps it covers)."""
    return list(json.loads((checkpoint / TRAINER_STATE).read_text()).get("log_history", []))


# ---- saving --------------------------------------------------------------------------------------------

DISK_MARGIN = 1 << 30  # free space left beside a checkpoint: the engine, the archive and the logs need some


def save_checkpoint(trainer: Any, final: Path, disk_usage: Any = shutil.disk_usage) -> bool:
    """Write the trainer's whole training state to `final` (a checkpoint-N path), atomically, and delete the
    other checkpoints beside it. Best effort: without the disk space for it, or when a write fails, the
    checkpoint is skipped with a note on stderr and training goes on (the previous one stays), because
    a full disk is not the candidate's crash. Returns whether it was written."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    weights = unique_tensors(model)
    opt_tensors, opt_rest = split_tensors(trainer.optimizer.state_dict())
    needed = sum(t.numel() * t.element_size() for t in [*weights.values(), *opt_tensors.values()])
    final.parent.mkdir(parents=True, exist_ok=True)
    free = disk_usage(final.parent).free
    if free < needed + DISK_MARGIN:
        _skipped(final, f"it needs {needed / 2**30:.1f} GiB and {free / 2**30:.1f} GiB are free")
        return False
    tmp = final.with_name(final.name + PARTIAL)
    try:
        _write(trainer, tmp, weights, opt_tensors, opt_rest)
    except OSError as exc:
        remove_path(tmp)
        _skipped(final, f"writing it failed: {exc}")
        return False
    remove_path(final)
    tmp.rename(final)
    for entry in final.parent.iterdir():
        if entry != final:
            remove_path(entry)
    return True


def _skipped(final: Path, why: str) -> None:
    print(f"poise: {final.name} not saved ({why}); training goes on", file=sys.stderr, flush=True)


def _write(trainer: Any, tmp: Path, weights: dict[str, Any], opt_tensors: dict[str, Any], opt_rest: Any) -> None:
    remove_path(tmp)
    tmp.mkdir(parents=True)
    write_shards(weights, tmp / "weights")
    rng_tensors, rng_rest = rng_state()
    write_shards(opt_tensors, tmp / "optimizer")
    write_shards(rng_tensors, tmp / "rng")
    shapes = {part: {k: list(v.shape) for k, v in tensors.items()}
              for part, tensors in (("optimizer", opt_tensors), ("rng", rng_tensors))}
    state = {"optimizer": opt_rest, "scheduler": trainer.lr_scheduler.state_dict(), "rng": rng_rest,
             "shapes": shapes, "versions": versions()}
    (tmp / STATE_FILE).write_text(json.dumps(state))
    trainer.state.save_to_json(str(tmp / TRAINER_STATE))  # last: its presence marks a complete write


TENSOR = "__tensor__"  # marks where a tensor was taken out of a nested state


def split_tensors(obj: Any, prefix: str = "") -> tuple[dict[str, Any], Any]:
    """(tensors by path, the same structure as JSON with each tensor replaced by {TENSOR: path})."""
    import torch

    if isinstance(obj, torch.Tensor):
        # Left on its device: write_shards copies one tensor at a time to the host, not AdamW's 12 GB at once.
        return {prefix: obj.detach()}, {TENSOR: prefix}
    if isinstance(obj, dict):
        tensors, out = {}, {}
        for key, value in obj.items():
            t, out[str(key)] = split_tensors(value, f"{prefix}{key}.")
            tensors.update(t)
        return tensors, {"dict": out, "int_keys": all(isinstance(k, int) for k in obj)}
    if isinstance(obj, (list, tuple)):
        tensors, out_list = {}, []
        for i, value in enumerate(obj):
            t, item = split_tensors(value, f"{prefix}{i}.")
            tensors.update(t)
            out_list.append(item)
        return tensors, {"list": out_list, "tuple": isinstance(obj, tuple)}
    return {}, {"value": obj}


def join_tensors(tensors: dict[str, Any], tree: Any) -> Any:
    """The inverse of split_tensors."""
    if TENSOR in tree:
        return tensors[tree[TENSOR]]
    if "dict" in tree:
        items = {(int(k) if tree["int_keys"] else k): join_tensors(tensors, v) for k, v in tree["dict"].items()}
        return items
    if "list" in tree:
        items = [join_tensors(tensors, v) for v in tree["list"]]
        return tuple(items) if tree["tuple"] else items
    return tree["value"]


def rng_state() -> tuple[dict[str, Any], dict[str, Any]]:
    """The RNG streams a resumed run must continue: torch (CPU, CUDA) as tensors, Python and NumPy as JSON."""
    import numpy as np
    import torch

    tensors = {"cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.random.get_rng_state()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return tensors, {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss]}


# ---- loading -------------------------------------------------------------------------------------------

def _state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / STATE_FILE).read_text())


def _tensors(checkpoint: Path, state: dict[str, Any], part: str, place: Any = None) -> dict[str, Any]:
    """The tensors of one part ("optimizer" or "rng"), as their shapes in state.json say."""
    return read_shards(checkpoint / part, state["shapes"][part], place)


def onto(device: Any):  # -> a `place` for read_shards
    """Moves each optimizer tensor to the parameters' device as it is read. Scalars (AdamW's `step`) stay
    where they were saved: torch keeps `step` on the CPU unless the optimizer is fused or capturable, and
    load_state_dict moves it itself when it must."""
    return lambda tensor: tensor.to(device) if tensor.dim() else tensor


def parameters_device(model: Any) -> Any:
    return next(model.parameters()).device


def load_model_weights(model: Any, checkpoint: Path) -> None:
    try:
        load_weights(model, checkpoint / "weights")
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{checkpoint}: the weights do not load: {exc}") from exc


def load_optimizer_and_scheduler(trainer: Any, checkpoint: Path) -> None:
    try:
        state = _state(checkpoint)
        tensors = _tensors(checkpoint, state, "optimizer", onto(parameters_device(trainer.model)))
        trainer.optimizer.load_state_dict(join_tensors(tensors, state["optimizer"]))
        trainer.lr_scheduler.load_state_dict(state["scheduler"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{checkpoint}: the optimizer state does not load: {exc}") from exc


def load_rng_state(checkpoint: Path) -> None:
    import numpy as np
    import torch

    try:
        state = _state(checkpoint)
        rest, tensors = state["rng"], _tensors(checkpoint, state, "rng")
        version, keys, gauss = rest["python"]
        random.setstate((version, tuple(keys), gauss))
        kind, mt, pos, has_gauss, cached = rest["numpy"]
        np.random.set_state((kind, np.array(mt, dtype=np.uint32), pos, has_gauss, cached))
        torch.random.set_rng_state(tensors["cpu"])
        if "cuda" in tensors and torch.cuda.is_available():
            torch.cuda.random.set_rng_state(tensors["cuda"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{checkpoint}: the RNG state does not load: {exc}") from exc


class ResumableCheckpoints:
    """Mixin for a transformers Trainer: checkpoints in the format above, through the Trainer's own save and
    resume hooks (transformers 4.56-5.x names them so)."""

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        root = Path(self._get_output_dir(trial=trial))  # type: ignore[attr-defined]
        save_checkpoint(self, root / f"checkpoint-{self.state.global_step}")  # type: ignore[attr-defined]

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        target = self.accelerator.unwrap_model(model if model is not None else self.model)  # type: ignore[attr-defined]
        load_model_weights(target, Path(resume_from_checkpoint))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is not None:
            load_optimizer_and_scheduler(self, Path(checkpoint))

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint is not None:
            load_rng_state(Path(checkpoint))


def every_n_steps(n: int):  # -> transformers.TrainerCallback
    """A callback that saves exactly at multiples of n (the Trainer also saves at the last step: the policy
    is written right after, so that would only double the disk a job needs)."""
    from transformers import TrainerCallback

    class EveryNSteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            control.should_save = state.global_step % n == 0
            return control

    return EveryNSteps()

