"""Recipe `math` end to end on CPU: TRL GRPOTrainer through the contract adapter on a tiny local Qwen2.

The tiny model is real (transformers Qwen2ForCausalLM + a `tokenizers` BPE), warm-started to emit
"\\boxed{a}" with `a` drawn from a small answer pool, so sampled rewards are mixed and GRPO has a signal.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from core.contract import load_algorithm
from core.errors import ModelNotFoundError
from core.jobspec import METRIC_KEYS, OPTIONAL_METRIC_KEYS, POLICY_DIR, JobSpec
from core.recipes.math import data, rewards, tinymodel
from core.recipes.math.data import MathDataError

GROUP = 4
PROMPT_TOKENS = 45  # keeps ~10 short level-3 problems: fast on 2 cores

GRPO_SOURCE = '''
"""GRPO for tests: group-normalised advantages, PPO clip, optional k3 KL and entropy bonus."""
import torch

HPARAMS = {"lr": 1e-3, "clip_eps": 0.2, "eps": 1e-4, "kl_coef": KL, "ent_coef": ENT, "agg": "AGG"}
CALLS = {"adv": 0, "loss": 0, "filter": 0}


def compute_advantages(batch, hp):
    CALLS["adv"] += 1
    adv = torch.zeros_like(batch.rewards)
    for g in batch.group_ids.unique():
        m = batch.group_ids == g
        r = batch.rewards[m]
        adv[m] = (r - r.mean()) / (r.std() + hp["eps"])  # TRL's normalisation: Bessel std, eps 1e-4
    return adv


def compute_policy_loss(logprobs, batch, advantages, hp):
    CALLS["loss"] += 1
    mask = batch.response_mask
    a = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    ratio = torch.exp(logprobs - batch.old_logprobs)
    clipped = torch.clamp(ratio, 1 - hp["clip_eps"], 1 + hp["clip_eps"])
    per_tok = -torch.min(ratio * a, clipped * a)
    if hp["kl_coef"]:
        d = batch.ref_logprobs - logprobs
        per_tok = per_tok + hp["kl_coef"] * (torch.exp(d) - d - 1)
    if hp["agg"] == "token-mean":
        loss = (per_tok * mask).sum() / mask.sum().clamp(min=1)
    else:
        loss = ((per_tok * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
    if hp["ent_coef"]:
        loss = loss - hp["ent_coef"] * (batch.entropy * mask).sum() / mask.sum().clamp(min=1)
    clip = (((ratio - 1).abs() > hp["clip_eps"]).float() * mask).sum() / mask.sum().clamp(min=1)
    return loss, {"clip_frac": float(clip), "calls": float(CALLS["loss"])}
'''

FILTER_SOURCE = '''

def filter_groups(batch, hp):
    CALLS["filter"] += 1
    keep = torch.ones_like(batch.valid)
    for g in batch.group_ids.unique():
        m = batch.group_ids == g
        keep[m] = bool(batch.rewards[m].std() > 0)  # dynamic sampling: drop all-equal groups
    return keep
'''


def candidate_source(agg: str = "seq-mean-token-mean", kl: float = 0.0, ent: float = 0.0) -> str:
    return GRPO_SOURCE.replace("KL", repr(kl)).replace("ENT", repr(ent)).replace("AGG", agg)


def write_candidate(tmp: Path, agg: str = "seq-mean-token-mean", kl: float = 0.0, ent: float = 0.0,
                    with_filter: bool = False, extra: str = ""):
    path = tmp / "algorithm.py"
    path.write_text(candidate_source(agg, kl, ent) + (FILTER_SOURCE if with_filter else "") + extra)
    return load_algorithm(str(path))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """A warm-started tiny Qwen2 and the short training problems it was built on."""
    pool = data.load_math_train([3], 200)
    texts = [p.problem + rewards.PROMPT_SUFFIX for p in pool] + [f"The answer is \\boxed{{{p.answer}}}." for p in pool]
    model_dir = tmp_path_factory.mktemp("tiny_qwen2")
    tinymodel.build_tiny_qwen2(model_dir, texts, seed=0)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    chats = [tok.apply_chat_template(rewards.format_prompt(p.problem), add_generation_prompt=True, tokenize=False)
             for p in pool]
    short = [p for p, c in zip(pool, chats) if len(tok(c, add_special_tokens=False)["input_ids"]) <= PROMPT_TOKENS]
    ints = [p for p in short if p.answer.isdigit()]
    assert len(ints) >= 3, "need a few short level-3 problems with integer answers"
    # Answers drawn from a pool of two: on those two problems the samples are a mix of right and wrong.
    answers = [p.answer for p in ints[:2]]
    tinymodel.warm_start(model_dir, [p.problem + rewards.PROMPT_SUFFIX for p in short], answers, steps=40)
    return {"dir": model_dir, "problems": ints}


def make_trainer(tiny: dict, cand, out: Path, problems, **overrides):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.recipes.math.adapter import ContractGRPOTrainer, hparams_to_grpo, make_grpo_config

    tok = AutoTokenizer.from_pretrained(tiny["dir"], padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(tiny["dir"])
    ds = Dataset.from_list([{"prompt": rewards.format_prompt(p.problem), "answer": p.answer} for p in problems])
    settings = dict(output_dir=str(out / "trl"), per_device_train_batch_size=2 * GROUP, num_generations=GROUP,
                    max_completion_length=12, max_steps=2, use_cpu=True, seed=0, reward_weights=[1.0, 0.0],
                    **hparams_to_grpo(cand.HPARAMS, cand.HPARAMS["lr"]))
    settings.update(overrides)
    return ContractGRPOTrainer(model=model, reward_funcs=list(rewards.REWARD_FUNCS), args=make_grpo_config(**settings),
                               train_dataset=ds, processing_class=tok, candidate=cand)


def test_adapter_trains_with_the_candidate_and_changes_parameters(tiny, tmp_path):
    cand = write_candidate(tmp_path, ent=0.01, with_filter=True)
    trainer = make_trainer(tiny, cand, tmp_path, tiny["problems"][:2])
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.state.global_step == 2
    assert cand.CALLS["filter"] == 2 and cand.CALLS["adv"] >= 1 and cand.CALLS["loss"] >= 1
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p)]
    assert len(changed) == len(before), f"unchanged: {set(before) - set(changed)}"
    logs = [h for h in trainer.state.log_history if "poise/loss" in h]
    assert len(logs) == 2 and all("algo/clip_frac" in h and 0 <= h["poise/kept_frac"] <= 1 for h in logs)


def test_the_batch_says_how_its_reward_is_weighted(tiny, tmp_path):
    """GDPO weighs each normalised part as the reward does; the batch must carry TRL's reward_weights."""
    cand = write_candidate(tmp_path)
    trainer = make_trainer(tiny, cand, tmp_path, tiny["problems"][:2], reward_weights=[1.0, 0.5])
    rows = [{"prompt": rewards.format_prompt(p.problem), "answer": p.answer} for p in tiny["problems"][:2]]
    trainer.model.train()
    torch.manual_seed(0)
    trainer._generate_and_score_completions([r for r in rows for _ in range(GROUP)])
    batch = trainer._whole[0]
    assert batch.reward_weights == {"correct": 1.0, "format": 0.5}
    parts = batch.reward_parts
    assert torch.allclose(batch.rewards, parts["correct"] + 0.5 * parts["format"])


DROP_FIRST_GROUP = '''

def filter_groups(batch, hp):
    CALLS["filter"] += 1
    return batch.group_ids != batch.group_ids[0]  # kept rows spread unevenly over the shuffled micro-batches
'''


def rows_of(batch: dict, rows: torch.Tensor) -> dict:
    """Some rows of a TRL batch dict (every [B] tensor indexed by a mask or an order), token count recounted."""
    n = batch["completion_ids"].shape[0]
    out = {k: (v[rows] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n else v)
           for k, v in batch.items()}
    out["num_items_in_batch"] = out["completion_mask"].sum()
    return out


@pytest.mark.parametrize(("loss_type", "agg", "kl", "drop"), [
    ("grpo", "seq-mean-token-mean", 0.0, False), ("bnpo", "token-mean", 0.05, False),
    ("dapo", "token-mean", 0.05, False), ("dapo", "token-mean", 0.05, True), ("grpo", "seq-mean-token-mean", 0.05, True)])
def test_micro_batch_gradients_add_up_to_trls_loss_on_the_whole_batch(tiny, tmp_path, loss_type, agg, kl, drop):
    """The oracle: TRL's own loss over the whole generation batch in one pass (its kept rows, when a filter
    dropped some). Ours runs as training does: shuffled, split into micro-batches, gradients summed.

    Gradients are compared with respect to the log-probs, the part the adapter assembles: the model's
    backward is the same function on both sides, but its float results depend on how rows are batched
    (0.2% here), which would hide what this test is for. The log-probs come from one real forward."""
    from trl import GRPOTrainer
    from trl.trainer.utils import split_tensor_dict

    cand = write_candidate(tmp_path, agg=agg, kl=kl, extra=DROP_FIRST_GROUP if drop else "")
    trainer = make_trainer(tiny, cand, tmp_path, tiny["problems"][:2], loss_type=loss_type)
    rows = [{"prompt": rewards.format_prompt(p.problem), "answer": p.answer} for p in tiny["problems"][:2]]
    rows = [r for r in rows for _ in range(GROUP)]  # TRL's RepeatSampler order: each prompt G times in a row
    trainer.model.train()
    torch.manual_seed(3)
    ours = trainer._generate_and_score_completions(copy.deepcopy(rows))
    torch.manual_seed(3)
    theirs = GRPOTrainer._generate_and_score_completions(trainer, copy.deepcopy(rows))
    assert torch.equal(ours["completion_ids"], theirs["completion_ids"]), "same seed must give the same batch"
    keep = ours["keep"]
    assert bool(keep.all()) != drop and (kl > 0) == ("ref_per_token_logps" in ours)
    if not drop:  # TRL normalises the same way as the candidate; with a filter, over different rows
        assert ours["rewards"].std() > 0, "precondition: mixed rewards, so advantages are not all zero"
        torch.testing.assert_close(ours["advantages"], theirs["advantages"], atol=1e-5, rtol=0)
    theirs["advantages"] = ours["advantages"]  # the candidate's advantages, so the oracle checks the loss side

    # A fake forward (of TRL's log-prob function) that returns rows of one leaf tensor holding the real log-probs.
    leaf = ours["old_per_token_logps"].detach().clone().requires_grad_(True)  # [B, T]
    ents = torch.zeros_like(leaf)
    rows_now = {"idx": torch.arange(leaf.shape[0])}

    def fake_logps(model, ids, att, logits_to_keep, **kwargs):
        return leaf[rows_now["idx"]], ents[rows_now["idx"]], None

    trainer._get_per_token_logps_and_entropies = fake_logps
    trainer.current_gradient_accumulation_steps = 1  # the oracle: one pass over the whole batch
    rows_now["idx"] = keep.nonzero().squeeze(1)
    loss_trl = GRPOTrainer._compute_loss(trainer, trainer.model, rows_of(theirs, keep))
    oracle = torch.autograd.grad(loss_trl, leaf)[0]
    assert oracle.abs().max() > 0, "precondition: a nonzero gradient"

    # as TRL orders rows before the split, but fixed so the kept rows fall unevenly: 1 and 3 when a group is dropped
    perm = torch.tensor([0, 1, 2, 4, 3, 5, 6, 7])
    micro = split_tensor_dict(rows_of(ours, perm), 2)
    trainer.current_gradient_accumulation_steps = 2  # training's setting; our losses must not depend on it
    losses, naive = [], torch.zeros_like(leaf)
    for mb in micro:
        rows_now["idx"] = mb["row_index"]
        loss = trainer._compute_loss(trainer.model, mb)
        loss.backward()
        losses.append((loss.item(), int(mb["keep"].sum())))
        naive += _micro_mean_gradient(cand, trainer, mb, leaf)
    assert all(abs(v - loss_trl.item()) < 1e-6 for v, kept in losses if kept), (losses, loss_trl.item())
    torch.testing.assert_close(leaf.grad, oracle, atol=1e-7, rtol=1e-5)
    if loss_type != "grpo" or drop:  # where micro-batch means differ from the batch's: the bug this test catches
        assert (naive - oracle).abs().max() > 1e-3 * oracle.abs().max(), "the test must tell the two apart"


def _micro_mean_gradient(cand, trainer, mb: dict, leaf: torch.Tensor) -> torch.Tensor:
    """What the adapter used to do: the candidate's loss on the micro-batch's kept rows / accumulation steps."""
    keep = mb["keep"]
    if not bool(keep.any()):
        return torch.zeros_like(leaf)
    whole = trainer._whole[0]
    part = whole.select(torch.isin(torch.arange(whole.batch_size), mb["row_index"][keep]))
    order = torch.sort(mb["row_index"][keep]).values
    lp = leaf[order]
    loss, _ = cand.compute_policy_loss(lp, part, trainer._whole[2][order], trainer.hp)
    return torch.autograd.grad(loss / 2, leaf)[0]


KEEP_FIRST_STEP_ONLY = '''

def filter_groups(batch, hp):
    CALLS["filter"] += 1
    return torch.full_like(batch.valid, CALLS["filter"] == 1)  # step 1 keeps everything, step 2 nothing
'''


def test_a_step_whose_filter_kept_nothing_leaves_the_weights_alone(tiny, tmp_path):
    """AdamW with a zero gradient still moves weights by its momentum from earlier steps; the adapter drops
    the gradients of such a step, so AdamW skips it (as the tiny trainer does)."""
    from transformers import TrainerCallback

    cand = write_candidate(tmp_path, extra=KEEP_FIRST_STEP_ONLY)
    trainer = make_trainer(tiny, cand, tmp_path, tiny["problems"][:2])
    snapshots = []

    class AfterEachStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            snapshots.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})

    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.add_callback(AfterEachStep())
    trainer.train()
    assert trainer.state.global_step == 2 and cand.CALLS["filter"] == 2
    first, second = snapshots
    assert any(not torch.equal(before[n], first[n]) for n in before), "precondition: step 1 updated the weights"
    assert all(torch.equal(first[n], second[n]) for n in first), "step 2 kept no rollout but moved the weights"
    logs = [h for h in trainer.state.log_history if "poise/kept_frac" in h]
    assert [h["poise/kept_frac"] for h in logs] == [1.0, 0.0]


def loss_and_grads(trainer, compute) -> tuple[float, list[torch.Tensor]]:
    trainer.model.zero_grad()
    loss = compute()
    loss.backward()
    grads = [p.grad.detach().clone() for p in trainer.model.parameters() if p.grad is not None]
    trainer.model.zero_grad()
    return loss.item(), grads


def job_spec(tiny: dict, tmp_path: Path, mode: str = "full", **cfg) -> JobSpec:
    base = {"model_path": str(tiny["dir"]), "lr_source": "candidate", "prompts_per_step": 2, "group_size": GROUP,
            "micro_batch_size": GROUP, "max_steps": 2, "train_levels": [3], "train_problems": 200,
            "max_prompt_tokens": PROMPT_TOKENS, "max_response_tokens": 12, "pass_k": 2, "eval_max_tokens": 10,
            "eval_max_problems": 2}
    base.update(cfg)
    return JobSpec(recipe="math", algorithm_path=str(tmp_path / "algorithm.py"), job_dir=str(tmp_path / "job"),
                   seed=0, recipe_config=base, mode=mode)


def user_benchmark(tiny: dict, tmp_path: Path) -> Path:
    """A user-supplied amc.jsonl (pass@k) made of problems the tiny model was built on."""
    user = tmp_path / "user"
    user.mkdir(exist_ok=True)
    rows = [{"problem": p.problem, "answer": p.answer} for p in tiny["problems"][:4]]
    (user / "amc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return user


def only_shard(spec: JobSpec) -> Path:
    (path,) = (Path(spec.job_dir) / POLICY_DIR).iterdir()  # the tiny model fits in one
    return path


def test_run_job_trains_emits_metrics_and_saves_the_policy_unscored(tiny, tmp_path):
    from core.recipes.math.run import run_job

    cand = write_candidate(tmp_path)
    lines: list[dict] = []
    spec = job_spec(tiny, tmp_path, data_dir=str(user_benchmark(tiny, tmp_path)), benchmarks=["amc", "math500"])
    result = run_job(spec, cand, lines.append)
    assert result.outcome == "evaluated" and result.steps_done == 2
    assert [ln["step"] for ln in lines] == [1, 2]
    assert all(set(ln) <= {*METRIC_KEYS, *OPTIONAL_METRIC_KEYS} for ln in lines)
    assert all({"reward_mean", "loss", "accuracy", "valid_rate", "kept_frac"} <= set(ln) for ln in lines)
    # advantages once per step on the whole batch; the loss once per micro-batch (8 samples / 4 = 2 per step)
    assert cand.CALLS["adv"] == 2 and cand.CALLS["loss"] == 4
    assert result.eval == {} and result.overall == {}  # scores come only from the scoring process
    assert result.extra["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    saved = load_file(str(only_shard(spec)))
    base = AutoModelForCausalLM.from_pretrained(tiny["dir"], dtype=torch.float32).state_dict()
    assert set(saved) <= set(base) and any(not torch.equal(saved[k], base[k]) for k in saved), "training moved nothing"


@pytest.fixture
def trained_math(tiny, tmp_path) -> JobSpec:
    """A full math job's training phase, run here: the policy file is in the job dir."""
    from core.recipes.math.run import run_job

    spec = job_spec(tiny, tmp_path, data_dir=str(user_benchmark(tiny, tmp_path)), benchmarks=["amc", "math500"])
    assert run_job(spec, write_candidate(tmp_path), lambda line: None).outcome == "evaluated"
    return spec


def test_scoring_process_scores_the_trained_policy_on_both_parts(trained_math):
    from core.recipes.math.score import eval_job

    ticks: list[tuple[int, int, str]] = []
    result = eval_job(trained_math, lambda *t: ticks.append(t))
    assert result.outcome == "evaluated", result.reason
    # Progress counts problems: 0 before amc, amc's problems done before math500, then all of them.
    n = {name: sum(len(result.per_problem[part][name]) for part in result.per_problem) for name in ("amc", "math500")}
    assert ticks == [(0, n["amc"] + n["math500"], "amc"), (n["amc"], n["amc"] + n["math500"], "math500"),
                     (n["amc"] + n["math500"], n["amc"] + n["math500"], "math500")]
    assert set(result.eval) == {"selection", "heldout"}
    assert all(set(part) == {"amc", "math500"} for part in result.eval.values())
    assert "renormalised" in result.extra["overall_weights"] and result.extra["eval_sampler"] == "hf"
    assert result.weights == {"amc": 0.15, "math500": 0.15}  # the paper's, for the benchmarks present
    for part, scores in result.eval.items():
        assert {k: sum(v) / len(v) for k, v in result.per_problem[part].items()} == pytest.approx(scores)
    assert not (Path(trained_math.job_dir) / POLICY_DIR).exists(), "keep_policy = false deletes the checkpoint"


def test_scoring_uses_the_weights_in_the_file(tiny, trained_math):
    """Oracle: a policy file whose final norm is negated (greedy then picks the least likely token) scores
    MATH-500 as that model does when the test loads the file by hand, and not as the base model does."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.configlib import from_dict
    from core.recipes.math.config import MathConfig
    from core.recipes.math.evaluate import HFSampler, score_benchmark
    from core.recipes.math.run import load_eval_sets
    from core.recipes.math.score import eval_job

    path = only_shard(trained_math)
    tensors = load_file(str(path))
    save_file({**tensors, "model.norm.weight": -tensors["model.norm.weight"]}, str(path))
    cfg = from_dict(MathConfig, dict(trained_math.recipe_config), "[math]")
    parts = load_eval_sets(cfg)["math500"]
    problems = parts["selection"] + parts["heldout"]
    tok = AutoTokenizer.from_pretrained(tiny["dir"], padding_side="left")

    def greedy_scores(state: dict | None) -> list[float]:
        model = AutoModelForCausalLM.from_pretrained(tiny["dir"], dtype=torch.float32)
        if state is not None:
            model.load_state_dict(state, strict=False)
            model.tie_weights()
        return score_benchmark(HFSampler(model, tok), "math500", problems, 1, 0.0, cfg.eval_max_tokens)

    by_hand = greedy_scores(load_file(str(path)))
    assert by_hand != greedy_scores(None), "precondition: the file's model answers unlike the base model"
    result = eval_job(trained_math)
    assert result.outcome == "evaluated", result.reason
    assert result.per_problem["selection"]["math500"] + result.per_problem["heldout"]["math500"] == by_hand


def test_keep_policy_keeps_the_checkpoint(trained_math):
    from core.recipes.math.score import eval_job

    trained_math.recipe_config["keep_policy"] = True
    assert eval_job(trained_math).outcome == "evaluated"
    assert only_shard(trained_math).is_file()


def test_a_bad_policy_is_a_crash_or_divergence_never_a_score(trained_math):
    from safetensors.torch import load_file, save_file

    from core.recipes.math.score import eval_job

    path = only_shard(trained_math)
    trained_math.recipe_config["keep_policy"] = True
    tensors = load_file(str(path))
    save_file({"lm_head.weight": torch.zeros(3, 3)}, str(path))
    res = eval_job(trained_math)
    assert res.outcome == "crashed" and res.reason.startswith(f"{POLICY_DIR}/ is not the recipe's model"), res.reason
    name = next(iter(tensors))
    save_file({**tensors, name: tensors[name].clone().fill_(float("nan"))}, str(path))
    res = eval_job(trained_math)
    assert res.outcome == "diverged" and "NaN" in res.reason and res.eval == {}
    path.unlink()
    res = eval_job(trained_math)
    assert res.outcome == "crashed" and "wrote no" in res.reason


def test_run_job_smoke_skips_evaluation(tiny, tmp_path):
    from core.recipes.math.run import run_job

    cand = write_candidate(tmp_path)
    result = run_job(job_spec(tiny, tmp_path, mode="smoke", max_steps=0, smoke_steps=1), cand, lambda line: None)
    assert result.outcome == "evaluated" and result.steps_done == 1 and result.eval == {}


def test_a_filter_that_keeps_nothing_still_writes_each_step(tiny, tmp_path):
    """No row survives the filter: no update, but every step has a metrics line saying kept_frac 0."""
    from core.recipes.math.run import run_job

    path = tmp_path / "algorithm.py"
    path.write_text(GRPO_SOURCE.replace("KL", "0.0").replace("ENT", "0.0").replace("AGG", "seq-mean-token-mean")
                    + "\n\ndef filter_groups(batch, hp):\n    return torch.zeros_like(batch.valid)\n")
    lines: list[dict] = []
    result = run_job(job_spec(tiny, tmp_path, mode="smoke", max_steps=0, smoke_steps=2), load_algorithm(str(path)),
                     lines.append)
    assert result.steps_done == 2 and [ln["step"] for ln in lines] == [1, 2], lines
    assert all(ln["kept_frac"] == 0.0 and ln["loss"] == 0.0 for ln in lines)


def test_missing_user_benchmark_fails_before_training(tiny, tmp_path):
    from core.recipes.math.run import run_job

    cand = write_candidate(tmp_path)
    spec = job_spec(tiny, tmp_path, data_dir=str(tmp_path / "nowhere"), benchmarks=["aime24", "math500"])
    with pytest.raises(MathDataError, match="aime24.jsonl"):
        run_job(spec, cand, lambda line: None)
    assert cand.CALLS["adv"] == 0


def test_missing_model_names_the_path(tmp_path):
    from core.recipes.math.run import run_job

    cand = write_candidate(tmp_path)
    spec = JobSpec(recipe="math", algorithm_path="", job_dir=str(tmp_path), seed=0,
                   recipe_config={"model_path": str(tmp_path / "no-model")})
    with pytest.raises(ModelNotFoundError, match="no-model"):
        run_job(spec, cand, lambda line: None)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_smoke_with_vllm_on_a_local_model(tmp_path):
    """Two steps of the paper's recipe (vLLM colocate when installed) on POISE_GPU_MODEL, e.g. Qwen2.5-0.5B."""
    from core.recipes.math.evaluate import vllm_usable
    from core.recipes.math.run import run_job

    model = os.environ.get("POISE_GPU_MODEL", "")
    if not model:
        pytest.skip("set POISE_GPU_MODEL to a local HF model directory")
    cand = write_candidate(tmp_path)
    lines: list[dict] = []
    config = {"model_path": model, "prompts_per_step": 4, "group_size": 4, "micro_batch_size": 8, "smoke_steps": 2,
              "max_response_tokens": 256}
    spec = JobSpec(recipe="math", algorithm_path="", job_dir=str(tmp_path / "job"), seed=0, recipe_config=config,
                   mode="smoke")
    result = run_job(spec, cand, lines.append)
    assert result.steps_done == 2 and len(lines) == 2
    assert result.extra["use_vllm"] == vllm_usable() and result.extra["device"] == "cuda"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_full_job_is_scored_in_its_own_process(tmp_path):
    """A full job in the sandbox on POISE_GPU_MODEL: trained with the colocated vLLM, scored by
    core.recipes.eval_job with a fresh engine (vLLM when installed) on the pushed weights."""
    from core.config import EarlyKillConfig, LimitsConfig
    from core.jobs import EVAL_ENTRY, start_job
    from core.recipes.math.evaluate import vllm_usable

    model = os.environ.get("POISE_GPU_MODEL", "")
    if not model:
        pytest.skip("set POISE_GPU_MODEL to a local HF model directory")
    write_candidate(tmp_path)
    config = {"model_path": model, "prompts_per_step": 4, "group_size": 4, "micro_batch_size": 8, "max_steps": 2,
              "max_response_tokens": 128, "benchmarks": ["math500", "minerva"], "eval_max_problems": 8,
              "eval_max_tokens": 128}
    spec = JobSpec(recipe="math", algorithm_path=str(tmp_path / "algorithm.py"), job_dir=str(tmp_path / "job"), seed=0,
                   recipe_config=config, mode="full")
    result = start_job(spec, LimitsConfig(timeout_s=1200, memory_mb=0, cpu_s=0), EarlyKillConfig()).wait()
    assert result.outcome == "evaluated", result.reason
    assert result.extra["scored_by"] == EVAL_ENTRY
    assert result.extra["eval_sampler"] == ("vllm" if vllm_usable() else "hf")
    assert not (tmp_path / "job" / POLICY_DIR).exists()


# --------------------------------------------------------------------------------------------- through the CLI


def test_poise_eval_runs_recipe_math_end_to_end(tiny, tmp_path):
    """`poise init --recipe math`, then `poise run` and `poise eval` before the model and data are set: a clear
    error naming each missing path, and the seed untouched. Once run.toml is fixed, `poise eval seed` runs
    verification (probes, smoke job) and the full job in the sandbox through core.recipes.job, and the
    archive records the seed as evaluated."""
    from engine_support import FakeOpenAIServer, poise, read_engine_json, write_test_config

    from core.archive import Archive
    from core.config import load_config, save_config

    cache, run = tmp_path / "cache", tmp_path / "run"
    poise(["init", "--recipe", "math", run], cache)
    for cmd in (["run", run, "--budget", "1"], ["eval", run, "seed"]):
        proc = poise(cmd, cache, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "model_path is empty" in out and "aime24.jsonl" in out, out[-2000:]
        assert "olympiadbench.jsonl" in out  # every problem is listed, not only the first
        assert Archive.open(run, readonly=True).get("seed").status == "implemented"  # nothing rejected
    assert read_engine_json(run)["message"].startswith("error: recipe math is not ready")  # what the TUI shows
    cfg = load_config(run / "run.toml")
    cfg.seeds = [0]
    cfg.limits.timeout_s = 600.0
    for key, value in job_spec(tiny, tmp_path).recipe_config.items():
        setattr(cfg.math, key, value)
    cfg.math.benchmarks = ["math500", "minerva"]
    # on a GPU box without vLLM, preflight refuses use_vllm = true (transformers would generate the whole batch)
    cfg.math.use_vllm = importlib.util.find_spec("vllm") is not None
    save_config(cfg, run / "run.toml")
    proc = poise(["eval", run, "seed"], cache, timeout=900)
    seed = Archive.open(run, readonly=True).get("seed")
    assert seed.status == "evaluated", proc.stdout[-2000:]
    assert seed.verification["ok"] and set(seed.results) == {"0"}, seed.results
    result = seed.results["0"]
    assert result["outcome"] == "evaluated" and result["steps_done"] == 2, result
    assert set(result["eval"]) == {"selection", "heldout"}
    assert result["extra"]["scored_by"] == "core.recipes.eval_job" and result["extra"]["eval_sampler"] in ("hf", "vllm")

    # One round of the loop on top (LLM: the engine tests' fake server): propose, implement, verify, train,
    # reflect, all on recipe math.
    with FakeOpenAIServer() as srv:
        write_test_config(run, srv.base_url, budget=1)  # the engine tests' LLM and search settings
        poise(["run", run, "--budget", "1"], cache, timeout=900)
    cands = {c.id: c for c in Archive.open(run, readonly=True).all()}
    assert sorted(cands) == ["c001", "seed"] and cands["c001"].status == "reflected", cands["c001"].status
    assert cands["c001"].results["0"]["outcome"] == "evaluated" and read_engine_json(run)["state"] == "finished"


def test_the_hf_sampler_ignores_the_models_own_sampling_defaults(tiny):
    """A model's generation_config.json may carry a repetition penalty or top-k; pass@k and acc@1 must be the
    protocol's (vLLM's SamplingParams start from plain defaults too)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.recipes.math.evaluate import HFSampler

    tok = AutoTokenizer.from_pretrained(tiny["dir"], padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(tiny["dir"])
    prompts = [rewards.format_prompt(p.problem) for p in tiny["problems"][:2]]
    plain = HFSampler(model, tok).sample(prompts, 1, 0.0, 12)
    model.generation_config.repetition_penalty, model.generation_config.top_k = 3.0, 2
    assert HFSampler(model, tok).sample(prompts, 1, 0.0, 12) == plain
    enc = tok([tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts],
              return_tensors="pt", padding=True, add_special_tokens=False)
    penalised = model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    texts = tok.batch_decode(penalised[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert [[t] for t in texts] != plain, "precondition: the model's penalty changes greedy output"


def test_the_job_seed_survives_a_reseed_while_the_trainer_is_built(tiny, tmp_path, monkeypatch):
    """vLLM's worker seeds everything with 0 inside GRPOTrainer.__init__ (after TRL seeded with ours); a named
    fake does the same here, and the trainer must come out seeded with the job's seed anyway."""
    import random

    import numpy as np

    from core.configlib import from_dict
    from core.recipes.math import adapter, run
    from core.recipes.math.config import MathConfig

    original_init = adapter.ContractGRPOTrainer.__init__

    def init_then_fake_vllm_reseed(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        random.seed(0)
        np.random.seed(0)
        torch.manual_seed(0)

    monkeypatch.setattr(adapter.ContractGRPOTrainer, "__init__", init_then_fake_vllm_reseed)
    spec = replace(job_spec(tiny, tmp_path), seed=7)
    cand = write_candidate(tmp_path)
    cfg = from_dict(MathConfig, dict(spec.recipe_config), "[math]")
    run.build_trainer(cfg, spec, cand, lambda line: None, tiny["dir"], "cpu")
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    assert draws == (random.random(), float(np.random.rand()), float(torch.rand(1)))


def test_the_colocated_engine_holds_training_lengths_only(tiny, tmp_path):
    """Scoring starts its own vLLM engine for eval_max_tokens; the training one must not ask for more positions
    than a rollout needs (an eval length over the model's context would stop training from starting)."""
    from core.configlib import from_dict
    from core.recipes.math.config import MathConfig
    from core.recipes.math.run import grpo_args

    spec = job_spec(tiny, tmp_path, eval_max_tokens=5000)
    cfg = from_dict(MathConfig, dict(spec.recipe_config), "[math]")
    args = grpo_args(cfg, spec, {"lr": 1e-6}, 200, True, "cpu")
    assert args.vllm_max_model_length == cfg.max_prompt_tokens + cfg.max_response_tokens
