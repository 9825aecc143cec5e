"""The simulated accelerator (core/accelsim.py) and the probes' replay on it.

The rule cases run twice: on the simulation (every machine) and on real CUDA (`gpu` mark), where CUDA
itself is the oracle for which code must fail. The probe tests check that every mechanism of the library
passes, that the replay changes no value, and that the usual GPU mistakes of candidate code are caught.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_render import COMPOSITIONS

from core.accelsim import DeviceMismatch, SimulatedAccelerator, batch_to_accelerator, on_accelerator, to_accelerator
from core.contract import load_algorithm
from core.mechanisms import Composition, render
from core.mechanisms.probe import synthetic_batch
from core.probes import probe_file

ROOT = Path(__file__).resolve().parents[1]

# (name, code, fails on a GPU). `code(dev, on)` gets `dev(t)`, which puts a CPU tensor on the device, and
# `on(t)`, which says whether a tensor is there; it returns what must hold when nothing was raised.
Case = tuple[str, Callable[[Callable, Callable], bool], bool]
x4 = torch.arange(4.0)
CASES: list[Case] = [
    ("factory without device, then index_add", lambda dev, on: torch.zeros(3).index_add(0, dev(torch.tensor([0, 1, 1, 2])), dev(x4)) is not None, True),
    ("factory with device=x.device", lambda dev, on: on(torch.zeros(3, device=dev(x4).device).index_add(0, dev(torch.tensor([0, 1, 1, 2])), dev(x4))), False),
    ("new_zeros and zeros_like", lambda dev, on: on(dev(x4).new_zeros(2)) and on(torch.zeros_like(dev(x4))), False),
    ("0-dim CPU tensor times device tensor", lambda dev, on: on(torch.tensor(0.5) * dev(x4)), False),
    ("Python float times device tensor", lambda dev, on: on(2.0 * dev(x4)), False),
    ("1-dim CPU tensor times device tensor", lambda dev, on: (dev(x4) * torch.ones(4)) is not None, True),
    ("device tensor indexed by CPU indices", lambda dev, on: on(dev(x4)[torch.tensor([0, 2])]), False),
    ("CPU tensor indexed by device indices", lambda dev, on: torch.ones(4)[dev(torch.tensor([0, 2]))] is not None, True),
    ("numpy of a device tensor", lambda dev, on: dev(x4).numpy() is not None, True),
    ("cpu() leaves the device", lambda dev, on: not on(dev(x4).cpu()), False),
    ("cpu() result mixed with device tensor", lambda dev, on: (dev(x4).cpu() + dev(x4)) is not None, True),
    ("to(dtype) stays on the device", lambda dev, on: on(dev(x4).to(torch.float64)), False),
    ("to(x.device) moves there", lambda dev, on: on(torch.ones(4).to(dev(x4).device)), False),
    ("stack of device and CPU tensors", lambda dev, on: torch.stack([dev(x4), torch.ones(4)]) is not None, True),
    ("where with a scalar", lambda dev, on: on(torch.where(dev(x4) > 1, dev(x4), 0.0)), False),
    ("item and tolist work", lambda dev, on: dev(x4).sum().item() == 6.0 and dev(x4).tolist() == [0, 1, 2, 3], False),
    ("a transpose property stays on the device", lambda dev, on: on(dev(torch.ones(2, 3)).T @ dev(torch.ones(2, 3)))
     and on(dev(torch.ones(2, 3)).mT) and on(dev(x4).data), False),
    ("device and is_cuda", lambda dev, on: dev(x4).device == torch.device("cuda", 0) and dev(x4).is_cuda, False),
    ("slice assignment of a CPU tensor is a copy", lambda dev, on: on(_set(dev(torch.zeros(4)), slice(0, 2), torch.ones(2))), False),
    ("setitem of a CPU value into a device tensor", lambda dev, on: dev(torch.zeros(4)).__setitem__(dev(x4) > 1, torch.ones(2)) is None, True),
]


def _set(t: torch.Tensor, index: object, value: object) -> torch.Tensor:
    t[index] = value
    return t


def _run_case(code: Callable, dev: Callable, on: Callable, mode: contextlib.AbstractContextManager) -> bool:
    with mode:
        return bool(code(dev, on))


@pytest.mark.parametrize(("name", "code", "fails"), CASES, ids=[c[0] for c in CASES])
def test_simulated_accelerator_follows_cudas_rules(name: str, code: Callable, fails: bool) -> None:
    if fails:
        with pytest.raises(DeviceMismatch):
            _run_case(code, to_accelerator, on_accelerator, SimulatedAccelerator())
    else:
        assert _run_case(code, to_accelerator, on_accelerator, SimulatedAccelerator())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("name", "code", "fails"), CASES, ids=[c[0] for c in CASES])
def test_cuda_agrees_with_the_simulation(name: str, code: Callable, fails: bool) -> None:
    """The oracle: the same code on a real GPU fails exactly where the simulation says it does."""
    def run() -> bool:
        return _run_case(code, lambda t: t.cuda(), lambda t: t.is_cuda, contextlib.nullcontext())

    if fails:
        with pytest.raises((RuntimeError, TypeError)):
            run()
    else:
        assert run()


# ------------------------------------------------------------------------------------------------ probes


def _write(tmp_path: Path, source: str, name: str = "algorithm.py") -> str:
    path = tmp_path / name
    path.write_text(source)
    return str(path)


@pytest.mark.parametrize("key", sorted(COMPOSITIONS))
def test_every_library_mechanism_runs_on_the_simulated_gpu(key: str, tmp_path: Path) -> None:
    report = probe_file(_write(tmp_path, render(Composition.from_dict(COMPOSITIONS[key]))))
    assert report["ok"], report["problems"]


def test_the_seed_runs_on_the_simulated_gpu() -> None:
    report = probe_file(str(ROOT / "workspace" / "algorithm.py"))
    assert report["ok"], report["problems"]


@pytest.mark.parametrize("key", ["preset-grpo", "preset-dapo", *sorted(COMPOSITIONS)[:6]])
def test_the_replay_gives_the_cpu_values_bit_for_bit(key: str, tmp_path: Path) -> None:
    module = load_algorithm(_write(tmp_path, render(Composition.from_dict(COMPOSITIONS[key]))))
    batch = synthetic_batch(0, binary=True)
    batch.entropy = torch.rand(batch.response_mask.shape, generator=torch.Generator().manual_seed(0),
                               dtype=torch.float64) * 0.4
    lp = batch.old_logprobs + 0.1

    def run(b, logprobs):
        adv = module.compute_advantages(b, module.HPARAMS)
        logprobs = logprobs.clone().requires_grad_(True)
        loss, _ = module.compute_policy_loss(logprobs, b, adv, module.HPARAMS)
        loss.backward()
        return adv.detach(), loss.detach(), logprobs.grad

    torch.manual_seed(0)
    cpu = run(batch, lp)
    torch.manual_seed(0)
    with SimulatedAccelerator():
        sim = run(batch_to_accelerator(batch), to_accelerator(lp))
    assert on_accelerator(sim[0]) and on_accelerator(sim[1])
    for a, b in zip(cpu, sim):
        assert torch.equal(a, b.as_subclass(torch.Tensor))


SEED = (ROOT / "workspace" / "algorithm.py").read_text()


def test_the_old_seed_code_is_caught_with_its_line(tmp_path: Path) -> None:
    """The seed as it was before session 5: fine on CPU, an index_add across devices on CUDA."""
    old = SEED.replace("rewards.new_zeros(n_groups)", "torch.zeros(n_groups, dtype=rewards.dtype)")
    assert old != SEED
    path = _write(tmp_path, old)
    report = probe_file(path)
    line = next(i for i, t in enumerate(old.splitlines(), 1) if "torch.zeros(n_groups" in t)
    assert not report["ok"] and len(report["problems"]) == 1, report["problems"]
    assert "on a GPU (simulated)" in report["problems"][0] and f"line {line} of algorithm.py" in report["problems"][0]
    assert report["fingerprint"] == probe_file(_write(tmp_path, SEED, "seed.py"))["fingerprint"]  # same values


@pytest.mark.parametrize(("what", "edit", "expected"), [
    ("advantages made from a Python list", ("    return (batch.rewards - mean) / (std + hp[\"std_eps\"])",
     "    return torch.tensor(((batch.rewards - mean) / (std + hp[\"std_eps\"])).tolist())"), "the advantages came back on the CPU"),
    ("numpy in the loss", ("    mask = batch.response_mask  # [B, T], 0 on padding",
     "    mask = batch.response_mask  # [B, T], 0 on padding\n    _ = batch.rewards.numpy().mean()"), "numpy"),
    ("a CPU constant vector", ("    mask = batch.response_mask  # [B, T], 0 on padding",
     "    mask = batch.response_mask * torch.ones(batch.response_mask.shape[1])  # [B, T]"), "a CPU tensor"),
])
def test_gpu_mistakes_of_candidate_code_are_problems(what: str, edit: tuple[str, str], expected: str,
                                                      tmp_path: Path) -> None:
    assert edit[0] in SEED, what
    report = probe_file(_write(tmp_path, SEED.replace(edit[0], edit[1])))
    assert not report["ok"] and any(expected in p and "on a GPU (simulated)" in p for p in report["problems"]), report


def test_a_filter_mask_left_on_the_cpu_is_a_problem(tmp_path: Path) -> None:
    src = SEED + textwrap.dedent("""

        def filter_groups(batch, hp):
            return torch.tensor([True] * batch.rewards.shape[0])
    """)
    report = probe_file(_write(tmp_path, src))
    assert not report["ok"] and "filter_groups' mask came back on the CPU" in report["problems"][0], report
