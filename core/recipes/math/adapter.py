"""TRL GRPOTrainer adapter: TRL generates and scores, the CANDIDATE decides advantages, filtering and loss.

Written against trl 1.16.0 (trl/trainer/grpo_trainer.py). Override points:

* `_calculate_rewards` - calls TRL's, keeps the per-function reward columns [B, F] so reward_parts,
  validity and the scalar reward reach the RolloutBatch (TRL itself only keeps its advantages).
* `_generate_and_score_completions` - runs once per generation batch (one optimizer step: we set
  steps_per_generation = gradient_accumulation_steps, num_iterations = 1), BEFORE TRL shuffles and splits it
  into micro-batches. Here we build the full RolloutBatch (all groups intact), call the candidate's
  `filter_groups` and `compute_advantages`, and replace TRL's advantages. TRL skips old log-probs when
  training is on-policy; the contract needs them, so we compute them with TRL's own function (one no-grad
  forward). Filtered rows are kept in the tensors with keep=False, because TRL's split needs equal chunks.
* `_compute_loss` - per micro-batch: TRL's `_get_per_token_logps_and_entropies` gives log-probs and
  entropies (with grad). The candidate's `compute_policy_loss` is then called on the WHOLE generation batch
  (its kept rows), with this micro-batch's rows live and every other row at its value from the no-grad
  forward after generation. Within one optimizer step the weights do not change, so those values are what
  the other rows' live log-probs would be: the loss is the whole batch's, and its gradient flows through
  this micro-batch's rows only. Summed over the micro-batches, the gradient is exactly that of the
  candidate's loss on one big batch, whatever it aggregates (token-mean over the batch's tokens, as TRL's
  dapo; per-sequence means; statistics across rows) and however filtering spread the kept rows.
* `_save_checkpoint` and the three resume loaders: core/recipes/math/checkpoint.py's format (no pickle).
* A step in which `filter_groups` kept nothing makes no optimizer update (grads are dropped before AdamW,
  so its momentum does not move the weights either), as in the tiny trainer.

No mechanism logic lives here: no normalisation, no clipping, no KL. `beta` in GRPOConfig is only a switch
that makes TRL build the reference model and its log-probs (`batch.ref_logprobs`); the candidate adds any KL.
Single process only (TRL gathers rewards across ranks; this adapter does not gather the other fields).
"""

from __future__ import annotations

import math
from dataclasses import replace
from types import ModuleType
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing

from core.contract import RolloutBatch
from core.errors import ContractError, PoiseError
from core.recipes.math.checkpoint import ResumableCheckpoints

BATCH_KEYS = ("rewards", "group_ids", "valid", "truncated", "keep")
PART_PREFIX = "reward_part/"
# HPARAMS keys that are optimizer settings, and the GRPOConfig field each one sets.
HPARAM_TO_GRPO = {
    "max_grad_norm": "max_grad_norm",
    "weight_decay": "weight_decay",
    "adam_beta1": "adam_beta1",
    "adam_beta2": "adam_beta2",
    "adam_epsilon": "adam_epsilon",
    "warmup_ratio": "warmup_ratio",
}
KL_HPARAMS = ("kl_coef", "beta")  # nonzero -> the run needs a reference model


class AdapterError(PoiseError):
    """The TRL adapter was set up in a way it cannot translate faithfully."""


def kl_coef(hp: dict[str, Any]) -> float:
    """The candidate's KL coefficient (0 when it asks for no reference model)."""
    return float(next((hp[k] for k in KL_HPARAMS if k in hp), 0.0))


def hparams_to_grpo(hp: dict[str, Any], lr: float) -> dict[str, Any]:
    """GRPOConfig keyword arguments that the candidate's HPARAMS decide."""
    out: dict[str, Any] = {"learning_rate": float(lr), "beta": kl_coef(hp)}
    for key, field in HPARAM_TO_GRPO.items():
        if key in hp:
            out[field] = float(hp[key])
    if "warmup_ratio" in out:
        out["lr_scheduler_type"] = "constant_with_warmup"
    return out


class ContractGRPOTrainer(ResumableCheckpoints, GRPOTrainer):
    """GRPOTrainer whose advantages, group filter and policy loss come from a candidate module; its checkpoints
    are core.recipes.math.checkpoint's (sharded safetensors, no pickle)."""

    def __init__(self, *args: Any, candidate: ModuleType, validity_part: str = "format", **kwargs: Any) -> None:
        self.candidate = candidate
        self.hp = dict(candidate.HPARAMS)
        self.validity_part = validity_part
        self._reward_columns: torch.Tensor | None = None
        self._whole: tuple[RolloutBatch, torch.Tensor, torch.Tensor] | None = None  # batch, keep [B], advantages
        self._hooked: set[int] = set()  # optimizers that drop the grads of such a step
        super().__init__(*args, **kwargs)
        self._check_setup()

    def _check_setup(self) -> None:
        if self.accelerator.num_processes != 1:
            raise AdapterError("the contract adapter runs in one process; launch without torchrun/accelerate")
        if self.num_iterations != 1 or self.args.steps_per_generation != self.args.gradient_accumulation_steps:
            raise AdapterError("set num_iterations=1 and steps_per_generation=gradient_accumulation_steps")
        if self.mask_truncated_completions:
            raise AdapterError("mask_truncated_completions must be False: truncation is the candidate's call")
        if self.validity_part not in self.reward_func_names:
            raise AdapterError(f"validity part {self.validity_part!r} is not a reward function: {self.reward_func_names}")

    # ---- generation side: one call per optimizer step, groups intact -------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):  # type: ignore[override]
        columns = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._reward_columns = columns  # [B, F]
        return columns

    def _generate_and_score_completions(self, inputs):  # type: ignore[override]
        out = super()._generate_and_score_completions(inputs)
        logps, entropies = self._old_logprobs(out)
        if out.get("old_per_token_logps") is None:
            out["old_per_token_logps"] = logps
        out.update(self._batch_fields(out))
        batch = self._rollout_batch(out, entropy=entropies)
        keep = self._filter(batch)
        out["keep"] = keep
        out["advantages"] = self._advantages(batch, keep)
        # TRL shuffles and splits every [B] tensor in unison: each micro-batch knows its rows in the whole batch
        out["row_index"] = torch.arange(batch.batch_size, device=keep.device)
        self._whole = (batch, keep, out["advantages"])
        self._log_rollout_metrics(batch, keep)
        return out

    def _old_logprobs(self, out: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi_old of the sampled tokens and the token entropies, with the function TRL uses. [B, T] each"""
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)  # [B, P+T]
        att = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            logps, entropies, _ = self._get_per_token_logps_and_entropies(
                self.model, ids, att, out["completion_ids"].size(1), batch_size=self.args.per_device_train_batch_size,
                compute_entropy=True,
            )
        return logps, entropies

    def _batch_fields(self, out: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Per-sample fields TRL does not keep: rewards, parts, groups, validity, truncation. All [B]."""
        cols = self._reward_columns
        if cols is None or cols.shape[0] != out["completion_ids"].shape[0]:
            raise AdapterError("reward columns missing or of the wrong size; is the run single-process?")
        cols = torch.nan_to_num(cols.float(), nan=0.0)  # [B, F]; our reward functions never return None
        weights = self.reward_weights.to(cols.device, cols.dtype)
        fields = {f"{PART_PREFIX}{n}": cols[:, i] for i, n in enumerate(self.reward_func_names)}
        fields["rewards"] = (cols * weights.unsqueeze(0)).sum(dim=1)  # [B]
        bsz = cols.shape[0]
        fields["group_ids"] = torch.arange(bsz, device=cols.device) // self.num_generations  # RepeatSampler order
        fields["valid"] = fields[f"{PART_PREFIX}{self.validity_part}"] > 0
        fields["truncated"] = self._truncated(out["completion_ids"], out["completion_mask"])
        return fields

    def _truncated(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """True where the response stopped at the length limit, not at EOS (TRL's own definition). [B]"""
        lengths = mask.sum(dim=1).long()  # [B]
        last = ids.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)  # [B]
        stops = torch.tensor([*self.eos_token_ids, self._tokenizer.pad_token_id], device=ids.device)
        return (lengths > 0) & ~torch.isin(last, stops)

    def _rollout_batch(self, src: dict[str, Any], entropy: torch.Tensor | None = None) -> RolloutBatch:
        mask = src["completion_mask"].float()  # [B, T]
        ref = src.get("ref_per_token_logps")
        return RolloutBatch(
            rewards=src["rewards"].float(),
            group_ids=src["group_ids"],
            valid=src["valid"],
            truncated=src["truncated"],
            response_mask=mask,
            old_logprobs=src["old_per_token_logps"].float(),
            lengths=mask.sum(dim=1).long(),
            ref_logprobs=None if ref is None else ref.float(),
            step=min(self.state.global_step, max(self.state.max_steps, 1)),
            total_steps=max(self.state.max_steps, 1),
            reward_parts={k[len(PART_PREFIX):]: v.float() for k, v in src.items() if k.startswith(PART_PREFIX)},
            reward_weights={n: float(w) for n, w in zip(self.reward_func_names, self.reward_weights.tolist())},
            max_response_len=int(self.max_completion_length),
            entropy=entropy,
        )

    def _filter(self, batch: RolloutBatch) -> torch.Tensor:
        """The candidate's filter_groups, or keep everything. bool [B]"""
        fn = getattr(self.candidate, "filter_groups", None)
        if fn is None:
            return torch.ones_like(batch.valid)
        keep = torch.as_tensor(fn(batch, self.hp), device=batch.valid.device)
        if keep.dtype != torch.bool or tuple(keep.shape) != (batch.batch_size,):
            raise ContractError(f"filter_groups must return a bool tensor of shape [B]={batch.batch_size}")
        return keep

    def _advantages(self, batch: RolloutBatch, keep: torch.Tensor) -> torch.Tensor:
        """The candidate's advantages on the kept rows, scattered back to [B] or [B, T] (0 on dropped rows)."""
        if not bool(keep.any()):
            return torch.zeros_like(batch.rewards)
        kept = batch if bool(keep.all()) else batch.select(keep)
        adv = self.candidate.compute_advantages(kept, self.hp)
        if not isinstance(adv, torch.Tensor) or adv.shape[0] != kept.batch_size or adv.dim() not in (1, 2):
            raise ContractError("compute_advantages must return a tensor of shape [B] or [B, T]")
        full = torch.zeros((batch.batch_size, *adv.shape[1:]), dtype=torch.float32, device=adv.device)
        full[keep] = adv.detach().float()
        return full

    # ---- loss side: one call per micro-batch --------------------------------------------------------------

    def _compute_loss(self, model, inputs):  # type: ignore[override]
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)  # [b, P+T]
        att = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        logps, entropies, _ = self._get_per_token_logps_and_entropies(
            model, ids, att, inputs["completion_ids"].size(1), compute_entropy=True
        )  # [b, T] each, with grad
        self._hook_optimizer()
        if self._whole is None:
            raise AdapterError("a loss was asked for before any generation batch was scored")
        whole, keep, advantages = self._whole
        if not bool(keep.any()):
            # the whole step was filtered: a graph-connected zero, logged, so the step still has a metrics line
            # (its kept_frac 0 is what early kill and verification's smoke check look for); no update follows
            self._log("poise/loss", 0.0)
            return (logps * 0.0).sum()
        rows = inputs["row_index"]
        if not bool(keep[rows].any()):
            return (logps * 0.0).sum()  # the step's loss does not depend on these rows: nothing flows through them
        live = replace(whole, entropy=whole.entropy.index_put((rows,), entropies.float()))
        logp_all = whole.old_logprobs.index_put((rows,), logps.float())  # [B, T]: these rows live, the rest fixed
        if not bool(keep.all()):
            live, logp_all, advantages = live.select(keep), logp_all[keep], advantages[keep]
        loss, metrics = self.candidate.compute_policy_loss(logp_all, live, advantages, self.hp)
        self._log_loss_metrics(loss, metrics, live, logp_all)
        return loss  # not divided by the accumulation steps: each micro-batch adds its rows' part of one gradient

    def _hook_optimizer(self) -> None:
        """Drop every gradient before the AdamW step of a step whose filter kept nothing: AdamW skips a parameter
        without a gradient, so neither momentum nor weight decay moves it."""
        opt = getattr(self.optimizer, "optimizer", self.optimizer)  # accelerate wraps the torch optimizer
        if opt is None or id(opt) in self._hooked:
            return
        self._hooked.add(id(opt))

        def drop_grads_of_a_filtered_step(optimizer, args, kwargs):
            if self._whole is not None and not bool(self._whole[1].any()):
                for group in optimizer.param_groups:
                    for p in group["params"]:
                        p.grad = None

        opt.register_step_pre_hook(drop_grads_of_a_filtered_step)

    # ---- metrics (measurement only) ------------------------------------------------------------------------

    def _log(self, key: str, value: float) -> None:
        mode = "train" if self.model.training else "eval"
        self._metrics[mode][key].append(float(value))

    def _log_rollout_metrics(self, batch: RolloutBatch, keep: torch.Tensor) -> None:
        self._log("poise/accuracy", batch.reward_parts.get("correct", batch.rewards).mean().item())
        self._log("poise/valid_rate", batch.valid.float().mean().item())
        self._log("poise/truncation_rate", batch.truncated.float().mean().item())
        self._log("poise/zero_var_frac", zero_var_fraction(batch.rewards, batch.group_ids))
        self._log("poise/kept_frac", keep.float().mean().item())

    def _log_loss_metrics(self, loss: torch.Tensor, metrics: dict, batch: RolloutBatch, logps: torch.Tensor) -> None:
        mask = batch.response_mask
        tokens = mask.sum().clamp(min=1.0)
        self._log("poise/loss", loss.detach().item())
        self._log("poise/entropy", ((batch.entropy.detach() * mask).sum() / tokens).item())
        if batch.ref_logprobs is not None:
            diff = batch.ref_logprobs - logps.detach()  # k3 estimator, for monitoring only
            self._log("poise/kl", (((diff.exp() - diff - 1.0) * mask).sum() / tokens).item())
        for key, value in (metrics or {}).items():
            if isinstance(value, (int, float)) and math.isfinite(float(value)):
                self._log(f"algo/{key}", value)


def zero_var_fraction(rewards: torch.Tensor, group_ids: torch.Tensor) -> float:
    """Fraction of groups whose rewards are all equal (no learning signal under group baselines)."""
    groups = group_ids.unique()
    flat = [bool((rewards[group_ids == g] == rewards[group_ids == g][0]).all()) for g in groups]
    return sum(flat) / max(len(flat), 1)


def make_grpo_config(**kwargs: Any) -> GRPOConfig:
    """GRPOConfig with the settings the adapter relies on; kwargs add or override the rest."""
    base: dict[str, Any] = {
        "num_iterations": 1, "mask_truncated_completions": False, "report_to": "none", "save_strategy": "no",
        "logging_steps": 1, "lr_scheduler_type": "constant", "log_completions": False, "disable_dropout": True,
        # the candidate's old_logprobs are the trainer's own, recomputed after generation (as in verl)
        "vllm_importance_sampling_correction": False,
        "shuffle_dataset": True, "dataloader_num_workers": 0,
    }
    base.update(kwargs)
    ga = base.get("gradient_accumulation_steps", 1)
    base.setdefault("steps_per_generation", ga)
    return GRPOConfig(**base)
