"""vLLM's engine binds ZMQ unix sockets under VLLM_RPC_BASE_PATH (TMPDIR by default), and a unix socket path
holds at most 107 bytes: with a run dir of ordinary depth, the job's tmp/ is too long. Recipe math's jobs get a
short base instead, and the real sandbox (Landlock, network namespace, audit hook) lets them bind there."""

from __future__ import annotations

import json
from pathlib import Path

from core.config import EarlyKillConfig, LimitsConfig
from core.jobs import recipe_env, start_job
from core.jobspec import JobSpec
from core.landlock import DEV_SHM

ENTRY = "tests.adversarial.ipc_socket_job"


def run_entry(tmp_path: Path, recipe: str) -> dict:
    job = tmp_path / "runs" / "qwen2.5-1.5b-math-sweep" / "jobs" / "c012" / "0"  # an ordinary depth
    spec = JobSpec(recipe=recipe, algorithm_path=str(tmp_path / "algorithm.py"), job_dir=str(job), seed=0,
                   recipe_config={})
    start_job(spec, LimitsConfig(timeout_s=60, memory_mb=3072), EarlyKillConfig(), entry=ENTRY).wait()
    return json.loads((job / "ipc.json").read_text())


def test_a_math_job_binds_vllm_sockets_under_a_short_base_where_its_tmp_is_too_long(tmp_path: Path) -> None:
    report = run_entry(tmp_path, "math")
    assert report["VLLM_RPC_BASE_PATH"] == DEV_SHM
    assert report["tmpdir"] == "OSError: AF_UNIX path too long"  # what vLLM's default would have met
    socket_file = Path(DEV_SHM) / report["name"]
    assert report["vllm_base"] == "bound" and socket_file.is_socket()
    socket_file.unlink()


def test_only_recipe_math_gets_the_settings() -> None:
    assert recipe_env("math") == {"VLLM_RPC_BASE_PATH": DEV_SHM, "VLLM_HOST_IP": "127.0.0.1"}
    assert recipe_env("tiny") == {}
