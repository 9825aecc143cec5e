"""Contract probes: run a candidate on synthetic RolloutBatches and check what it returns.

Runs INSIDE the sandbox (it executes untrusted code):

    python -m core.probes <algorithm.py> <out.json>

`core.jobs.run_probe` starts it. The batches are deterministic, so the report's
`fingerprint` (a hash of the rounded advantages, losses, gradients and
filter masks over all probes, plus HPARAMS) identifies a candidate's behaviour:
the same fingerprint as its parent means the change is a no-op, the same as
any archived candidate means a duplicate. `outputs.behaviour_fingerprint`
leaves HPARAMS out, so "only hyperparameters changed" is visible too.

Each probe checks: advantages are a finite tensor [B] or [B, T]; the loss is a
finite scalar with a gradient; d loss / d logprobs is finite, exactly zero on
padding, and non-zero where the rewards vary; metrics is a dict of finite
floats; filter_groups (if defined) returns bool [B]; nothing in the batch is
modified in place. A probe that passes is then replayed with the batch on a
simulated accelerator (core/accelsim.py): code that would break on a GPU (a
tensor made on the CPU and mixed with the batch's, .numpy(), outputs left on
the CPU) is a problem here too, before any GPU job starts.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from core.accelsim import SimulatedAccelerator, batch_to_accelerator, on_accelerator, to_accelerator
from core.contract import RolloutBatch, load_algorithm
from core.jobspec import write_json_atomic

GROUPS, GROUP_SIZE, T = 4, 4, 8
B = GROUPS * GROUP_SIZE
TOTAL_STEPS = 10


@dataclass
class ProbeCase:
    """One synthetic batch plus the current-policy log-probs the loss is evaluated at."""

    name: str
    batch: RolloutBatch
    logprobs: torch.Tensor      # [B, T], 0 on padding
    expect_gradient: bool       # rewards vary within some group: a policy gradient must exist


@dataclass
class ProbeOutcome:
    problems: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    fingerprint_parts: list[Any] = field(default_factory=list)


# --- building the probes ---------------------------------------------------

def build_probes(seed: int = 0) -> list[ProbeCase]:
    """The fixed probe set; the same seed gives bit-identical batches."""
    makers: list[Callable[[torch.Generator], ProbeCase]] = [
        _all_correct, _all_wrong, _mixed, _invalid, _truncated, _padding, _extreme_ratios, _no_ref,
        _continuous, _last_step,
    ]
    return [make(torch.Generator().manual_seed(seed * 1000 + i)) for i, make in enumerate(makers)]


def _batch(gen: torch.Generator, rewards: torch.Tensor, name: str, *, lengths: torch.Tensor | None = None,
           valid: torch.Tensor | None = None, truncated: torch.Tensor | None = None, ref: bool = True,
           spread: float = 0.1, step: int = 3, parts: dict[str, torch.Tensor] | None = None) -> ProbeCase:
    if truncated is None:
        truncated = torch.zeros(B, dtype=torch.bool)
    if lengths is None:
        lengths = torch.randint(2, T + 1, (B,), generator=gen)
    lengths = torch.where(truncated, torch.full_like(lengths, T), lengths)     # [B]
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()             # [B, T]
    old = -(torch.rand(B, T, generator=gen) * 3 + 0.05) * mask              # [B, T] log-probs <= 0
    new = (old + spread * torch.randn(B, T, generator=gen)).clamp(max=0.0) * mask  # [B, T]
    ref_lp = (old + 0.05 * torch.randn(B, T, generator=gen)).clamp(max=0.0) * mask if ref else None
    entropy = (torch.rand(B, T, generator=gen) * 2.0) * mask               # [B, T]
    batch = RolloutBatch(
        rewards=rewards.float(), group_ids=torch.arange(GROUPS).repeat_interleave(GROUP_SIZE),
        valid=valid if valid is not None else torch.ones(B, dtype=torch.bool), truncated=truncated,
        response_mask=mask, old_logprobs=old, lengths=lengths.long(), ref_logprobs=ref_lp, step=step,
        total_steps=TOTAL_STEPS, reward_parts=parts or {}, max_response_len=T, entropy=entropy,
    )
    varies = bool((rewards.view(GROUPS, GROUP_SIZE).std(dim=1) > 0).any())
    return ProbeCase(name, batch, new, varies)


def _binary(gen: torch.Generator) -> torch.Tensor:
    """0/1 rewards where every group has at least one of each."""
    r = (torch.rand(GROUPS, GROUP_SIZE, generator=gen) > 0.5).float()   # [G, S]
    r[:, 0], r[:, 1] = 1.0, 0.0
    return r.flatten()                                                   # [B]


def _all_correct(gen: torch.Generator) -> ProbeCase:
    return _batch(gen, torch.ones(B), "all_correct")


def _all_wrong(gen: torch.Generator) -> ProbeCase:
    return _batch(gen, torch.zeros(B), "all_wrong")


def _mixed(gen: torch.Generator) -> ProbeCase:
    return _batch(gen, _binary(gen), "mixed")


def _invalid(gen: torch.Generator) -> ProbeCase:
    correct = _binary(gen)
    valid = torch.arange(B) % 3 != 0                         # every third response unparseable
    correct = correct * valid.float()
    fmt = valid.float() * 0.1
    return _batch(gen, correct + fmt, "invalid", valid=valid, parts={"correct": correct, "format": fmt})


def _truncated(gen: torch.Generator) -> ProbeCase:
    truncated = torch.arange(B) % 4 == 1
    rewards = _binary(gen) * (~truncated).float()
    return _batch(gen, rewards, "truncated", truncated=truncated, valid=~truncated)


def _padding(gen: torch.Generator) -> ProbeCase:
    lengths = torch.randint(1, 3, (B,), generator=gen)      # mostly padding
    return _batch(gen, _binary(gen), "padding", lengths=lengths)


def _extreme_ratios(gen: torch.Generator) -> ProbeCase:
    case = _batch(gen, _binary(gen), "extreme_ratios")
    mask = case.batch.response_mask
    case.logprobs = -(torch.rand(B, T, generator=gen) * 8.0) * mask      # [B, T] ratios up to e^8 either way
    return case


def _no_ref(gen: torch.Generator) -> ProbeCase:
    return _batch(gen, _binary(gen), "no_ref", ref=False)


def _continuous(gen: torch.Generator) -> ProbeCase:
    return _batch(gen, torch.rand(B, generator=gen), "continuous")


def _last_step(gen: torch.Generator) -> ProbeCase:
    return _batch(gen, _binary(gen), "last_step", step=TOTAL_STEPS)


# --- running one probe -----------------------------------------------------

def run_probes(module: ModuleType, algorithm_path: str) -> dict[str, Any]:
    """The report for a loaded candidate: ok, problems, fingerprint, outputs."""
    problems: list[str] = []
    outputs: dict[str, Any] = {}
    parts: list[Any] = []
    cases = build_probes()
    for case in cases:
        outcome = _run_case(module, case, algorithm_path)
        problems += [f"probe {case.name}: {p}" for p in outcome.problems]
        outputs[case.name] = outcome.summary
        parts.append([case.name, outcome.fingerprint_parts])
    if not problems:  # the first probe that would fail on a GPU, once the CPU behaviour is right
        problems += next(([f"probe {c.name} on a GPU (simulated): {p}" for p in found] for c in cases
                          if (found := _accelerator_problems(module, c, algorithm_path))), [])
    behaviour = _digest(parts)
    hparams = json.dumps(getattr(module, "HPARAMS", {}), sort_keys=True, default=repr)
    outputs["behaviour_fingerprint"] = behaviour
    return {"ok": not problems, "problems": problems, "fingerprint": _digest([behaviour, hparams]),
            "outputs": outputs}


def _run_case(module: ModuleType, case: ProbeCase, path: str) -> ProbeOutcome:
    out = ProbeOutcome()
    torch.manual_seed(0)  # candidates that sample (random masks) stay deterministic
    snapshot = _snapshot(case.batch)
    try:
        _exercise(module, case, out)
    except Exception as exc:  # noqa: BLE001  (the candidate's bug is a finding, not our crash)
        out.problems.append(_describe_exception(exc, path))
    if not out.problems:
        out.problems += _mutations(case.batch, snapshot)
    return out


def _accelerator_problems(module: ModuleType, case: ProbeCase, path: str) -> list[str]:
    """The probe replayed with the batch on the simulated accelerator; what would fail on a GPU."""
    torch.manual_seed(0)
    batch = batch_to_accelerator(case.batch)
    hp = copy.deepcopy(module.HPARAMS)
    try:
        with SimulatedAccelerator():
            fg = getattr(module, "filter_groups", None)
            keep = fg(batch, hp) if fg is not None else torch.ones(batch.batch_size, dtype=torch.bool)
            if not bool(keep.any()):
                return []
            if not bool(keep.all()):
                batch = batch.select(keep)
            made = [("filter_groups' mask", keep)] if fg is not None else []
            made.append(("the advantages", module.compute_advantages(batch, hp)))
            if all(on_accelerator(t) for _, t in made):  # else the loss would fail on the stray tensor first
                logprobs = to_accelerator(case.logprobs)[keep].clone().requires_grad_(True)  # [B', T]
                made.append(("the loss", module.compute_policy_loss(logprobs, batch, made[-1][1], hp)[0]))
                made[-1][1].backward()
    except Exception as exc:  # noqa: BLE001  (the candidate's bug is a finding, not our crash)
        return [_describe_exception(exc, path)]
    stray = [what for what, t in made if not on_accelerator(t)]
    why = f"{', '.join(stray)} came back on the CPU; make them from the batch's tensors or with device=batch.rewards.device"
    return [why] if stray else []


def _exercise(module: ModuleType, case: ProbeCase, out: ProbeOutcome) -> None:
    hp = copy.deepcopy(module.HPARAMS)
    keep = _filter_mask(module, case.batch, hp, out)
    if keep is None or not keep.any():
        return  # invalid mask (reported), or nothing kept: the trainer would skip this step
    batch = case.batch if keep.all() else case.batch.select(keep)
    adv = module.compute_advantages(batch, hp)
    if not _check_advantages(adv, batch, out):
        return
    logprobs = case.logprobs[keep].clone().requires_grad_(True)          # [B', T] leaf
    result = module.compute_policy_loss(logprobs, batch, adv, hp)
    loss = _check_loss_result(result, out)
    if loss is None:
        return
    loss.backward()
    _check_gradient(logprobs.grad, batch.response_mask, case.expect_gradient, out)
    out.summary.update(loss=_q(loss.item()), adv_mean=_q(adv.float().mean().item()),
                       adv_absmax=_q(adv.float().abs().max().item()))
    out.fingerprint_parts += [_rounded(adv), _q(loss.item()), _rounded(logprobs.grad)]


def _filter_mask(module: ModuleType, batch: RolloutBatch, hp: dict, out: ProbeOutcome) -> torch.Tensor | None:
    """filter_groups' bool [B] mask (all True when the candidate has none); None when it is malformed."""
    fg = getattr(module, "filter_groups", None)
    if fg is None:
        return torch.ones(batch.batch_size, dtype=torch.bool)
    keep = fg(batch, hp)
    if not (isinstance(keep, torch.Tensor) and keep.dtype == torch.bool and tuple(keep.shape) == (batch.batch_size,)):
        out.problems.append(f"filter_groups must return a bool tensor of shape [{batch.batch_size}], got "
                            f"{_describe(keep)}")
        return None
    out.fingerprint_parts.append(keep.int().tolist())
    out.summary["kept"] = int(keep.sum())
    return keep


# --- checks ----------------------------------------------------------------

def _check_advantages(adv: Any, batch: RolloutBatch, out: ProbeOutcome) -> bool:
    shapes = [(batch.batch_size,), (batch.batch_size, batch.num_tokens)]
    if not isinstance(adv, torch.Tensor) or tuple(adv.shape) not in shapes:
        out.problems.append(f"compute_advantages must return a tensor of shape [B] or [B, T] = {shapes}, "
                            f"got {_describe(adv)}")
        return False
    if not bool(torch.isfinite(adv).all()):
        out.problems.append("compute_advantages returned NaN or inf values; guard divisions (add an epsilon)")
        return False
    return True


def _check_loss_result(result: Any, out: ProbeOutcome) -> torch.Tensor | None:
    if not (isinstance(result, tuple) and len(result) == 2):
        out.problems.append(f"compute_policy_loss must return (loss, metrics), got {_describe(result)}")
        return None
    loss, metrics = result
    out.problems += _metric_problems(metrics)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        out.problems.append(f"loss must be a scalar tensor (shape []), got {_describe(loss)}")
        return None
    if not bool(torch.isfinite(loss)):
        out.problems.append(f"loss is {loss.item()}; it must be finite (check log/exp/divisions)")
        return None
    if not loss.requires_grad:
        out.problems.append("loss has no gradient; it must be computed from `logprobs` without .detach()")
        return None
    return loss


def _metric_problems(metrics: Any) -> list[str]:
    if not isinstance(metrics, dict):
        return [f"metrics must be a dict[str, float], got {_describe(metrics)}"]
    bad = [k for k, v in metrics.items()
           if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)]
    if bad:
        return [f"metrics values must be finite Python floats (use .item()); bad keys: {bad[:5]}"]
    return []


def _check_gradient(grad: torch.Tensor | None, mask: torch.Tensor, expect: bool, out: ProbeOutcome) -> None:
    if grad is None:
        out.problems.append("the loss does not depend on logprobs (no gradient reaches them)")
        return
    if not bool(torch.isfinite(grad).all()):
        out.problems.append("gradient w.r.t. logprobs has NaN or inf; clip ratios or guard exp/log")
        return
    leak = float((grad * (1.0 - mask)).abs().max())                    # [B, T] padding part
    if leak != 0.0:
        out.problems.append(f"padding positions get gradient (max |grad| = {leak:.3g}); multiply by "
                            f"batch.response_mask before reducing")
    norm = float(grad.norm())
    out.summary["grad_norm"] = _q(norm)
    if expect and norm == 0.0:
        out.problems.append("gradient w.r.t. logprobs is all zero although rewards differ within groups")


def _snapshot(batch: RolloutBatch) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in vars(batch).items() if isinstance(v, torch.Tensor)}


def _mutations(batch: RolloutBatch, snapshot: dict[str, torch.Tensor]) -> list[str]:
    changed = [k for k, v in snapshot.items() if not torch.equal(getattr(batch, k), v)]
    return [f"the candidate modified batch.{k} in place; work on a copy" for k in changed]


# --- reporting ---------------------------------------------------------------

def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {list(value.shape)} and dtype {value.dtype}"
    return type(value).__name__


def _describe_exception(exc: BaseException, path: str) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == Path(path)]
    where = f" at line {frames[-1].lineno} of algorithm.py" if frames else ""
    return f"raised {type(exc).__name__}{where}: {exc}"


def _q(value: float) -> float:
    """Round so that float noise between equivalent implementations does not change the fingerprint."""
    rounded = float(f"{round(value, 6):.5g}")
    return rounded + 0.0  # -0.0 -> 0.0


def _rounded(t: torch.Tensor) -> list[float]:
    return [_q(v) for v in t.detach().double().flatten().tolist()]


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def probe_file(algorithm_path: str) -> dict[str, Any]:
    """Load and probe a candidate file; import failures become a not-ok report."""
    try:
        module = load_algorithm(algorithm_path)
    except Exception as exc:  # noqa: BLE001  (ContractError, or anything the candidate raised at import)
        tail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return {"ok": False, "problems": [f"load: {tail}"], "fingerprint": "", "outputs": {}}
    return run_probes(module, algorithm_path)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m core.probes <algorithm.py> <out.json>", file=sys.stderr)
        return 2
    algorithm_path, out_path = argv
    from core.sandbox import install_guard

    install_guard([str(Path(out_path).resolve().parent)])  # no-op when the sandbox bootstrap already did it
    write_json_atomic(Path(out_path), probe_file(algorithm_path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
