"""A simulated accelerator: replays candidate code as if the batch lived on a GPU, on a CPU-only machine.

Why: on recipe `math` the RolloutBatch is on CUDA. A candidate that makes a tensor without `device=`
(`torch.zeros(n).index_add(0, idx, x)`) passes every CPU check and every tiny-recipe run, then crashes
on the first GPU step, after the job has loaded a model. The contract probes (core/probes.py) run
each probe again under `SimulatedAccelerator`, so verification catches that on any machine.

How: the batch's tensors are marked as being on the accelerator (`OnAccelerator`, a plain CPU tensor
underneath, so every value is the CPU probe's value bit for bit). A TorchFunctionMode sees every torch
call and applies CUDA's rules:
- an op may not mix an accelerator tensor with a CPU tensor of one or more dimensions (0-dim CPU
  tensors and Python numbers are allowed, as on CUDA; CPU index tensors may index an accelerator tensor);
- `.device` of an accelerator tensor is cuda:0 and `.is_cuda` is True; whatever is made with that
  device (factories, `.to`, `.cuda()`, `new_*`, `*_like`) is on the accelerator, `.cpu()` leaves it;
- `.numpy()` of an accelerator tensor fails.
It checks the usual mistakes, not every CUDA rule: a call it does not know passes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

ACCELERATOR = torch.device("cuda", 0)
# Calls whose tensor arguments may legally sit on different devices.
_CROSS_DEVICE = {"to", "copy_", "backward", "__setstate__", "__reduce_ex__", "__deepcopy__"}
# Calls on an accelerator tensor whose result is not on it (Python values, a string).
_LEAVES_ACCELERATOR = {"tolist", "item", "__bool__", "__int__", "__float__", "__index__", "__len__", "__repr__",
                       "__format__", "__hash__", "dim", "size", "numel"}


class DeviceMismatch(RuntimeError):
    """What CUDA would have raised; the message says what to change."""


class OnAccelerator(torch.Tensor):
    """A CPU tensor that stands for one on the simulated accelerator (only `SimulatedAccelerator` reads it)."""

    __torch_function__ = torch._C._disabled_torch_function_impl


def to_accelerator(t: torch.Tensor) -> torch.Tensor:
    return t.as_subclass(OnAccelerator)


def on_accelerator(value: Any) -> bool:
    return isinstance(value, OnAccelerator)


def _mark(out: Any) -> Any:
    """Every tensor in a call's result (a tensor, tuple, list or dict of them), marked as on the accelerator."""
    return tree_map(lambda v: to_accelerator(v) if isinstance(v, torch.Tensor) else v, out)


def _is_accelerator_device(value: Any) -> bool:
    if isinstance(value, torch.device):
        return value.type == "cuda"
    return isinstance(value, str) and value.split(":")[0] == "cuda"


class SimulatedAccelerator(TorchFunctionMode):
    """Inside `with SimulatedAccelerator():`, OnAccelerator tensors behave as CUDA tensors do (see module doc)."""

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if func is torch.device:  # naming a device makes no tensor
            return func(*args, **kwargs)
        if name == "__get__":
            return self._property(func, args)
        flat = tree_flatten((args, kwargs))[0]
        on_acc = [t for t in flat if on_accelerator(t)]
        if name == "numpy" and on_acc:
            raise DeviceMismatch("can't convert a tensor on the accelerator (cuda:0) to numpy; "
                                 "stay in torch, or call .cpu() first")
        if name == "cuda" or any(_is_accelerator_device(v) for v in flat):
            return self._made_on_accelerator(func, name, args, kwargs)
        if on_acc and name not in _CROSS_DEVICE:
            self._check_same_device(name, args, flat)
        out = func(*args, **kwargs)
        if name.endswith("_") and not name.startswith("__"):
            return out  # in place: the result is args[0], already marked or not
        if name == "cpu" or (name == "to" and _moves_to_cpu(args, kwargs)):
            return out.as_subclass(torch.Tensor)  # a CPU tensor's .cpu() returns itself: unmark it
        return _mark(out) if on_acc and name not in _LEAVES_ACCELERATOR else out

    @staticmethod
    def _property(func: Callable, args: tuple) -> Any:
        descriptor = getattr(func, "__self__", None)
        if args and on_accelerator(args[0]):
            if descriptor is torch.Tensor.device:
                return ACCELERATOR
            if descriptor is torch.Tensor.is_cuda:
                return True
            out = func(*args)  # .T, .mT, .data, .real: a view stays where its tensor is
            return to_accelerator(out) if isinstance(out, torch.Tensor) else out
        return func(*args)

    @staticmethod
    def _made_on_accelerator(func: Callable, name: str, args: tuple, kwargs: dict) -> Any:
        """A factory or move to the accelerator: run it on the CPU and mark what it made."""
        if name == "cuda":
            return _mark(args[0])

        def cpu(v: Any) -> Any:
            return torch.device("cpu") if _is_accelerator_device(v) else v

        return _mark(func(*tree_map(cpu, args), **tree_map(cpu, kwargs)))

    @staticmethod
    def _check_same_device(name: str, args: tuple, flat: list) -> None:
        if name in ("__getitem__", "__setitem__", "index_put_", "index_put"):
            # Index tensors may stay on the CPU. A value set through tensor indices (index_put) must be on
            # the indexed tensor's device; through slices and ints it is a copy_, which may cross devices.
            indices = tree_flatten(args[1])[0] if len(args) > 1 else []
            advanced = any(isinstance(i, torch.Tensor) for i in indices)
            flat = [args[0]] + ([args[2]] if name == "__setitem__" and advanced and len(args) > 2 else [])
            if not on_accelerator(args[0]):
                flat += [t for t in indices if on_accelerator(t)]
        cpu = [t for t in flat if isinstance(t, torch.Tensor) and not on_accelerator(t) and t.dim() > 0]
        if cpu and any(on_accelerator(t) for t in flat):
            shapes = ", ".join(str(list(t.shape)) for t in cpu[:3])
            raise DeviceMismatch(
                f"{name}: a CPU tensor (shape {shapes}) meets the batch's tensors, which are on the accelerator "
                "(cuda:0) in recipe math. Create tensors on the batch's device: torch.zeros(n, device=x.device), "
                "x.new_zeros(n), torch.zeros_like(x)")


def batch_to_accelerator(batch: Any) -> Any:
    """A copy of a RolloutBatch whose tensors (reward_parts too) are on the simulated accelerator."""

    def move(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return to_accelerator(v.clone())
        if isinstance(v, dict):
            return {k: move(x) for k, x in v.items()}
        return v

    return dataclasses.replace(batch, **{f.name: move(getattr(batch, f.name)) for f in dataclasses.fields(batch)})


def _moves_to_cpu(args: tuple, kwargs: dict) -> bool:
    target = kwargs.get("device", args[1] if len(args) > 1 else None)
    if isinstance(target, torch.Tensor):
        return not on_accelerator(target)
    return isinstance(target, (str, torch.device)) and str(target).split(":")[0] == "cpu"
