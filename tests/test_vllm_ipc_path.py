"""vLLM's engine binds ZMQ unix sockets under VLLM_RPC_BASE_PATH (TMPDIR by default), and a unix socket path
holds at most 107 bytes: with a run dir of ordinary depth, the job's tmp/ is too long. Recipe math's jobs get a
short dir of their own instead, and the real sandbox (Landlock, network namespace, audit hook) lets them bind
there and delete what they bound."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config import EarlyKillConfig, LimitsConfig
from core.jobs import SOCKET_ROOT, recipe_env, socket_dir, start_job
from core.jobspec import JobSpec
from core.recipes.math.device import one_gpu

ENTRY = "tests.adversarial.ipc_socket_job"


def run_entry(tmp_path: Path, recipe: str) -> dict:
    job = tmp_path / "runs" / "qwen2.5-1.5b-math-sweep" / "jobs" / "c012" / "0"  # an ordinary depth
    spec = JobSpec(recipe=recipe, algorithm_path=str(tmp_path / "algorithm.py"), job_dir=str(job), seed=0,
                   recipe_config={})
    start_job(spec, LimitsConfig(timeout_s=60, memory_mb=3072), EarlyKillConfig(), entry=ENTRY).wait()
    return json.loads((job / "ipc.json").read_text())


def test_a_math_job_binds_vllm_sockets_in_a_short_dir_of_its_own_where_its_tmp_is_too_long(tmp_path: Path) -> None:
    report = run_entry(tmp_path, "math")
    base = Path(report["VLLM_RPC_BASE_PATH"])
    assert base.parent == Path(SOCKET_ROOT) and base.name.startswith("poise-ipc-")
    assert report["tmpdir"] == "OSError: AF_UNIX path too long"  # what vLLM's default would have met
    assert report["vllm_base"] == "bound and removed"  # the audit hook lets vLLM's shutdown clean up
    assert not base.exists(), "the job's socket dir is deleted when it ends"


def test_only_recipe_math_gets_the_settings(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert recipe_env("math", tmp_path) == {"VLLM_RPC_BASE_PATH": str(tmp_path), "VLLM_HOST_IP": "127.0.0.1",
                                            "CUDA_VISIBLE_DEVICES": "0"}
    assert recipe_env("tiny") == {} and socket_dir("tiny") is None


@pytest.mark.parametrize(("visible", "job_sees"), [(None, "0"), ("3,1", "3"), ("GPU-5c1e, GPU-77aa", "GPU-5c1e"),
                                                    ("", ""), ("-1", "-1")])
def test_a_math_job_sees_one_gpu_the_first_the_user_made_visible(visible, job_sees) -> None:
    """TRL's GRPOTrainer raises in a process that sees several GPUs; hiding them all stays the user's choice."""
    assert one_gpu(visible) == job_sees


def test_the_sandboxed_job_gets_that_gpu(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert run_entry(tmp_path, "math")["CUDA_VISIBLE_DEVICES"] == "2"
