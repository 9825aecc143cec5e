# ruff: noqa: F401, F811 - `tiny` is the shared module fixture: imported by name, taken as a parameter
"""Recipe `math` resumes an interrupted job from its latest checkpoint (core/recipes/math/checkpoint.py).

Real TRL training of the tiny local Qwen2 of tests/test_math_recipe_adapter.py, in this process and in the
real sandbox; the oracle of an exact resume is the same job run without interruption.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from test_math_recipe_adapter import job_spec, tiny, user_benchmark, write_candidate

from core.jobspec import CHECKPOINT_DIR, POLICY_DIR, JobSpec
from core.recipes.math import checkpoint as ckpt

UNTIMED = {"step_time_s"}  # the only key of a metrics line that may differ between two runs


class Interrupt(Exception):
    """Stands for a kill: raised from the metrics stream, so the training loop stops mid-run."""


def resumable_spec(tiny: dict, tmp: Path, **cfg) -> JobSpec:
    settings = {"max_steps": 4, "checkpoint_steps": 2, "benchmarks": ["math500"], **cfg}
    return job_spec(tiny, tmp, **settings)


def untimed(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if k not in UNTIMED} for line in lines]


def saved_policy(spec: JobSpec) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for shard in sorted((Path(spec.job_dir) / POLICY_DIR).iterdir()):
        out.update(load_file(str(shard)))
    return out


def test_an_interrupted_job_resumes_where_it_stopped_and_ends_as_if_never_stopped(tiny, tmp_path):
    from core.recipes.math.run import run_job

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    straight = resumable_spec(tiny, tmp_path / "a")
    whole: list[dict] = []
    assert run_job(straight, write_candidate(tmp_path / "a"), whole.append).outcome == "evaluated"
    assert [line["step"] for line in whole] == [1, 2, 3, 4]

    spec = resumable_spec(tiny, tmp_path / "b")
    first: list[dict] = []

    def killed_at_step_3(line: dict) -> None:
        first.append(line)
        if line["step"] == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_job(spec, write_candidate(tmp_path / "b"), killed_at_step_3)
    assert sorted(p.name for p in (Path(spec.job_dir) / CHECKPOINT_DIR).iterdir()) == ["checkpoint-2"]

    cand = write_candidate(tmp_path / "b")
    again: list[dict] = []
    result = run_job(spec, cand, again.append)
    assert result.outcome == "evaluated" and result.steps_done == 4
    assert result.extra["resumed_from_step"] == 2
    assert cand.CALLS["adv"] == 2, "the resumed attempt trained steps 3 and 4 only"
    # Steps 1-2 are the first attempt's lines, replayed; steps 3-4 are what the uninterrupted run did, so the
    # weights, AdamW's moments, the data order and the sampling RNG all came back exactly.
    assert untimed(again[:2]) == untimed(first[:2])
    assert untimed(again) == untimed(whole)
    resumed, reference = saved_policy(spec), saved_policy(straight)
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_without_checkpoints_a_rerun_starts_from_step_0(tiny, tmp_path):
    from core.recipes.math.run import run_job

    spec = resumable_spec(tiny, tmp_path, checkpoint_steps=0)
    with pytest.raises(Interrupt):
        run_job(spec, write_candidate(tmp_path), lambda line: (_ for _ in ()).throw(Interrupt))
    assert not list((Path(spec.job_dir) / CHECKPOINT_DIR).glob("*")), "nothing saved"
    cand = write_candidate(tmp_path)
    result = run_job(spec, cand, lambda line: None)
    assert "resumed_from_step" not in result.extra and cand.CALLS["adv"] == 4


def test_only_a_complete_checkpoint_of_these_library_versions_is_resumed(tmp_path):
    root = tmp_path / CHECKPOINT_DIR

    def fake_checkpoint(name: str, step: int, versions: dict | None = None) -> None:
        """Named fake: only the two files latest_checkpoint reads, not a loadable checkpoint."""
        folder = root / name
        folder.mkdir(parents=True)
        (folder / ckpt.TRAINER_STATE).write_text(json.dumps({"global_step": step, "log_history": []}))
        (folder / ckpt.STATE_FILE).write_text(json.dumps({"versions": versions or ckpt.versions()}))

    fake_checkpoint("checkpoint-2", 2)
    fake_checkpoint("checkpoint-4.partial", 4)  # killed mid-write
    fake_checkpoint("checkpoint-6", 5)  # its state says another step
    fake_checkpoint("checkpoint-8", 8, {**ckpt.versions(), "torch": "0.0"})  # written by another torch
    (root / "checkpoint-10").mkdir()  # torn: nothing written yet
    (root / "checkpoint-9").mkdir()
    (root / "checkpoint-9" / ckpt.TRAINER_STATE).write_text('{"global_st')  # torn JSON
    assert ckpt.latest_checkpoint(tmp_path) == root / "checkpoint-2"
    assert [p.name for p in root.iterdir()] == ["checkpoint-2"], "the rest is deleted"


def test_an_optimizer_state_survives_the_json_and_shards_split(tmp_path):
    from core.recipes.policy import read_shards, write_shards

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.9))
    model(torch.randn(5, 3)).pow(2).sum().backward()
    opt.step()
    tensors, tree = ckpt.split_tensors(opt.state_dict())
    write_shards(tensors, tmp_path / "t", budget=64)  # small shards: exp_avg of the 4x3 weight is split
    back = read_shards(tmp_path / "t", {k: list(v.shape) for k, v in tensors.items()})
    state = ckpt.join_tensors(back, json.loads(json.dumps(tree)))
    fresh = torch.optim.AdamW(model.parameters(), lr=5.0)
    fresh.load_state_dict(state)
    assert fresh.param_groups[0]["lr"] == 1e-3 and tuple(fresh.param_groups[0]["betas"]) == (0.8, 0.9)
    for p in model.parameters():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(fresh.state[p][key], opt.state[p][key])
    with pytest.raises(ValueError, match="shape"):
        read_shards(tmp_path / "t", {k: [*v.shape, 1] for k, v in tensors.items()})


def optimizer_round_trip(tmp_path: Path, device: str) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer, list]:
    """An AdamW state on `device` through write_shards and read_shards with the resume's `place`; the original,
    the reloaded optimizer, and the shapes `place` was given (in the order read)."""
    from core.recipes.policy import read_shards, write_shards

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(5, 3, device=device)).pow(2).sum().backward()
    opt.step()
    tensors, tree = ckpt.split_tensors(opt.state_dict())
    write_shards({k: v.cpu() for k, v in tensors.items()}, tmp_path / "t", budget=64)
    placed = []
    to_params = ckpt.onto(ckpt.parameters_device(model))

    def recording_place(tensor):
        placed.append(list(tensor.shape))
        return to_params(tensor)

    back = read_shards(tmp_path / "t", {k: list(v.shape) for k, v in tensors.items()}, recording_place)
    fresh = torch.optim.AdamW(model.parameters(), lr=5.0)
    fresh.load_state_dict(ckpt.join_tensors(back, json.loads(json.dumps(tree))))
    return opt, fresh, placed


def test_a_resumed_optimizer_state_is_placed_tensor_by_tensor_and_its_steps_stay_on_the_cpu(tmp_path):
    opt, fresh, placed = optimizer_round_trip(tmp_path, "cpu")
    assert sorted(map(str, placed)) == sorted(str(list(t.shape)) for s in opt.state.values() for t in s.values())
    for p, state in opt.state.items():
        assert all(torch.equal(fresh.state[p][k], v) for k, v in state.items())
        assert fresh.state[p]["step"].device.type == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_a_resumed_optimizer_state_is_on_the_gpu_and_training_goes_on(tmp_path):
    opt, fresh, _ = optimizer_round_trip(tmp_path, "cuda")
    for p, state in opt.state.items():
        assert fresh.state[p]["exp_avg"].device == p.device and fresh.state[p]["step"].device.type == "cpu"
        assert all(torch.equal(fresh.state[p][k].cpu(), v.cpu()) for k, v in state.items())
    fresh.step()  # foreach AdamW refuses CUDA `step` tensors without capturable: this is what `onto` avoids


def test_the_supervisor_keeps_checkpoints_only_for_the_same_job(tiny, tmp_path):
    from core.evaluate import fresh_job_dir

    spec = resumable_spec(tiny, tmp_path)
    job = Path(spec.job_dir)
    job.mkdir()
    spec.save()
    for name in (CHECKPOINT_DIR, POLICY_DIR):
        (job / name / "x").mkdir(parents=True)
    (job / "metrics.jsonl").write_text("{}\n")
    fresh_job_dir(spec)
    assert [p.name for p in job.iterdir()] == [CHECKPOINT_DIR]
    spec.save()
    fresh_job_dir(replace(spec, seed=1))  # another seed, config, mode or candidate: nothing is kept
    assert list(job.iterdir()) == []
    (job / "spec.json").write_text("{not json")
    (job / CHECKPOINT_DIR).mkdir()
    fresh_job_dir(spec)
    assert list(job.iterdir()) == []


def test_a_cancelled_job_resumes_in_the_sandbox_and_an_ended_one_leaves_no_checkpoint(tiny, tmp_path):
    """The real path: core.evaluate.run_job starts the sandboxed training process, a stop cancels it once a
    checkpoint exists, the next run_job of the same job resumes from it and the scoring process scores it."""
    from core.config import RunConfig
    from core.evaluate import run_job

    (tmp_path / "algorithm.py").write_text(write_candidate_source())
    cfg = RunConfig()
    cfg.limits.timeout_s, cfg.limits.memory_mb, cfg.limits.cpu_s = 900, 0, 0
    cfg.early_kill.zero_reward_steps = 0  # the tiny model can miss 20 times in a row; not what this is about
    spec = resumable_spec(tiny, tmp_path, max_steps=40, data_dir=str(user_benchmark(tiny, tmp_path)),
                          benchmarks=["amc", "math500"])
    spec.early_kill = asdict(cfg.early_kill)  # as core.evaluate.job_spec fills it: part of what makes it the same job
    root = Path(spec.job_dir) / CHECKPOINT_DIR

    def complete() -> list[int]:
        return sorted(int(p.name.split("-")[1]) for p in root.glob("checkpoint-*")
                      if (p / ckpt.TRAINER_STATE).is_file() and not p.name.endswith(ckpt.PARTIAL))

    stopped = run_job(replace(spec), cfg, should_cancel=lambda: bool(complete()))
    assert stopped.outcome == "cancelled", stopped
    left = complete()
    assert left and max(left) < 40, left

    result = run_job(replace(spec), cfg)
    assert result.outcome == "evaluated", result.reason
    assert result.extra["resumed_from_step"] == max(left)
    assert set(result.eval) == {"selection", "heldout"}
    steps = [json.loads(line)["step"] for line in (Path(spec.job_dir) / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41)), "the replayed and the resumed steps, each once"
    assert not root.exists(), "a job that ended leaves no checkpoint behind"


def write_candidate_source() -> str:
    from test_math_recipe_adapter import candidate_source

    return candidate_source()


def test_a_checkpoint_that_does_not_fit_is_skipped_and_training_goes_on(tiny, tmp_path, monkeypatch, capfd):
    """A full disk is not the candidate's crash: the checkpoint is skipped (the previous one stays) with a
    note on stderr. Both failures are named fakes: a disk_usage that reports a full disk, and a shard writer
    that fails with ENOSPC after writing part of the checkpoint."""
    import errno
    from collections import namedtuple

    from test_math_recipe_adapter import make_trainer

    trainer = make_trainer(tiny, write_candidate(tmp_path), tmp_path, tiny["problems"][:2], max_steps=1)
    trainer.train()
    root = tmp_path / CHECKPOINT_DIR
    assert ckpt.save_checkpoint(trainer, root / "checkpoint-1")  # the real disk has room

    Usage = namedtuple("Usage", "total used free")
    full_disk = lambda path: Usage(1 << 40, 1 << 40, 1 << 20)  # a fake: 1 MiB free
    assert not ckpt.save_checkpoint(trainer, root / "checkpoint-2", disk_usage=full_disk)
    assert "checkpoint-2 not saved (it needs" in capfd.readouterr().err

    real_write = ckpt.write_shards

    def fake_write_fails_midway(tensors, out, budget=None):
        real_write(tensors, out, budget)
        if out.name == "optimizer":  # after the weights: a partial checkpoint is on disk
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "write_shards", fake_write_fails_midway)
    assert not ckpt.save_checkpoint(trainer, root / "checkpoint-3")
    assert "No space left on device" in capfd.readouterr().err
    assert [p.name for p in root.iterdir()] == ["checkpoint-1"], "no partial write is left, the last one stays"
    assert ckpt.latest_checkpoint(tmp_path) == root / "checkpoint-1"


def test_a_kill_9_of_poise_eval_mid_training_resumes_from_the_checkpoint(tiny, tmp_path):
    """The user's path: `poise eval` of a math run is killed with -9 while its job trains. The job lives on
    as an orphan; the next `poise eval` reaps it, keeps its checkpoint (same spec) and resumes from it."""
    import importlib.util
    import os
    import signal
    import subprocess
    import time

    from engine_support import PY, ROOT, env, poise
    from test_engine_kill import job_processes

    from core.archive import Archive
    from core.config import load_config, save_config

    cache, run = tmp_path / "cache", tmp_path / "run"
    poise(["init", "--recipe", "math", run], cache)
    cfg = load_config(run / "run.toml")
    cfg.seeds, cfg.limits.timeout_s, cfg.early_kill.zero_reward_steps = [0], 900.0, 0
    for key, value in resumable_spec(tiny, tmp_path, max_steps=100).recipe_config.items():
        setattr(cfg.math, key, value)
    cfg.math.benchmarks = ["math500", "minerva"]
    cfg.math.use_vllm = importlib.util.find_spec("vllm") is not None
    save_config(cfg, run / "run.toml")
    root = run / "jobs" / "seed" / "0" / CHECKPOINT_DIR

    def saved_steps() -> list[int]:
        return sorted(int(p.name.split("-")[1]) for p in root.glob("checkpoint-*")
                      if (p / ckpt.TRAINER_STATE).is_file() and not p.name.endswith(ckpt.PARTIAL))

    first = subprocess.Popen([PY, "-m", "core.cli", "eval", str(run), "seed"], cwd=ROOT, env=env(cache),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not saved_steps() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # until the job has saved a checkpoint
    assert first.poll() is None, "poise eval ended before its job saved a checkpoint"
    os.kill(first.pid, signal.SIGKILL)  # poise eval only: its job lives on
    first.wait()
    seen = max(saved_steps())
    poise(["eval", run, "seed"], cache, timeout=900)
    result = Archive.open(run, readonly=True).get("seed").results["0"]
    assert result["outcome"] == "evaluated", result
    assert result["extra"]["resumed_from_step"] >= seen
    steps = [json.loads(line)["step"] for line in (root.parent / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 101))
    assert not job_processes(run) and not root.exists()
