"""core.sandbox: what a sandboxed process sees (env, cwd, limits, isolation) and what it cannot do.

Everything runs through the real `sandbox.run` in a child interpreter; the audit hook is
never installed in the test process (it cannot be removed again).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from core import sandbox
from core.config import LimitsConfig

ROOT = Path(__file__).resolve().parent.parent
LIMITS = LimitsConfig(timeout_s=60, memory_mb=3072, cpu_s=120, file_mb=16, nproc=256)


def report(tmp_path: Path, **kwargs) -> dict:
    job = tmp_path / "job"
    res = sandbox.run("tests.adversarial.report_job", [str(job / "report.json")], job_dir=job, project_root=ROOT,
                      limits=LIMITS, **kwargs)
    assert res.returncode == 0, res.stderr_tail()
    return json.loads((job / "report.json").read_text())


@pytest.fixture(scope="module")
def inside(tmp_path_factory: pytest.TempPathFactory) -> dict:
    os.environ["POISE_TEST_VISIBLE"] = "yes"
    os.environ["SECRET_TOKEN"] = "do-not-leak"
    try:
        return report(tmp_path_factory.mktemp("inside"))
    finally:
        del os.environ["POISE_TEST_VISIBLE"], os.environ["SECRET_TOKEN"]


def test_environment_is_an_allow_list(inside: dict) -> None:
    env = inside["env"]
    assert "SECRET_TOKEN" not in env and env["POISE_TEST_VISIBLE"] == "yes"
    allowed = set(sandbox.ENV_ALLOW) | set(sandbox.THREAD_VARS) | {
        "HOME", "TMPDIR", "MALLOC_ARENA_MAX", sandbox.WRITE_DIRS_ENV, sandbox.TRUSTED_DIRS_ENV}
    assert all(k in allowed or k.startswith(sandbox.ENV_PREFIX_ALLOW) or k == "LC_CTYPE" for k in env), sorted(env)


def test_gpu_setup_reaches_the_job_and_tokens_do_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = {"LD_LIBRARY_PATH": "/usr/local/nvidia/lib64", "CUDA_VISIBLE_DEVICES": "0", "NCCL_DEBUG": "WARN",
           "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "CUDA_HOME": "/usr/local/cuda"}
    for key, value in {**gpu, "HF_TOKEN": "hf_secret", "OPENAI_API_KEY": "sk-secret"}.items():
        monkeypatch.setenv(key, value)
    env = sandbox.scrubbed_env(tmp_path)
    assert {k: env.get(k) for k in gpu} == gpu
    assert "HF_TOKEN" not in env and "OPENAI_API_KEY" not in env
    assert env["HF_HUB_OFFLINE"] == "1"


def test_home_tmp_and_cwd_are_the_job_dir(inside: dict) -> None:
    job = Path(inside["cwd"])
    assert job.name == "job" and inside["env"]["HOME"] == str(job)
    assert inside["env"]["TMPDIR"] == str(job / "tmp")


def test_interpreter_is_isolated_and_sees_only_the_project(inside: dict) -> None:
    assert inside["isolated"] == 1 and inside["dont_write_bytecode"]
    assert inside["sys_path"][0] == str(ROOT)
    assert not any(p in ("", ".") for p in inside["sys_path"])


def test_kernel_limits_are_set(inside: dict) -> None:
    mib = 1024 * 1024
    limits = inside["rlimits"]
    assert limits["RLIMIT_AS"] == [3072 * mib] * 2
    assert limits["RLIMIT_CPU"] == [120, 125]
    assert limits["RLIMIT_FSIZE"] == [16 * mib] * 2
    assert limits["RLIMIT_NPROC"] == [256, 256]
    assert limits["RLIMIT_CORE"] == [0, 0]


def test_own_session_guard_and_preimports(inside: dict) -> None:
    assert inside["session_leader"] and inside["guard"] and inside["torch_preloaded"]


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace needs root")
def test_network_namespace_has_only_loopback_and_it_is_up(inside: dict) -> None:
    assert set(inside["interfaces"]) == {"lo"} and inside["loopback_up"]


def test_zero_means_no_limit() -> None:
    limits = sandbox.Limits(memory_mb=0, cpu_s=0, file_mb=1, nproc=0).rlimits()
    assert set(limits) == {"RLIMIT_FSIZE", "RLIMIT_CORE"}


def test_guard_can_be_turned_off_for_trusted_jobs(tmp_path: Path) -> None:
    assert report(tmp_path, guard=False, preimport=())["guard"] is False


def test_candidate_code_cannot_write_a_trusted_only_dir(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    target = cache / "model.bin"
    res = sandbox.run("tests.adversarial.write_trusted_dir_job", [str(target)], job_dir=tmp_path / "job",
                      project_root=ROOT, limits=LIMITS, trusted_write_dirs=[cache], preimport=())
    assert res.returncode == 1 and "may only be written by the trainer" in res.stderr_tail()
    assert not target.exists()


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    job = tmp_path / "job"
    started = time.monotonic()
    res = sandbox.run("tests.adversarial.grandchild_job", [], job_dir=job, project_root=ROOT, limits=LIMITS,
                      guard=False, preimport=(), timeout_s=3)
    assert res.timed_out and time.monotonic() - started < 3 + sandbox.KILL_GRACE_S + 5
    pids = [int((job / f).read_text()) for f in ("child.pid", "grandchild.pid")]
    assert wait_until_dead(pids, deadline_s=10), f"survivors: {[p for p in pids if alive(p)]}"


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a zombie holds no resources)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def wait_until_dead(pids: list[int], deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def test_unstartable_job_raises_sandbox_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(sandbox.SandboxError, match="cannot|exists"):
        sandbox.spawn("core.probes", [], job_dir=blocker / "job", project_root=ROOT, limits=LIMITS)


def test_tail_lines_reads_only_the_end(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    log.write_text("".join(f"line {i}\n" for i in range(10000)))
    assert sandbox.tail_lines(log, 3) == "line 9997\nline 9998\nline 9999"
    assert sandbox.tail_lines(tmp_path / "missing.log") == ""


@pytest.mark.parametrize("memory_mb,data_mb,reserved", [(2048, 0, False), (0, 1024, True)])
def test_data_mb_caps_memory_but_lets_cuda_style_reservations_through(tmp_path: Path, memory_mb: int, data_mb: int,
                                                                      reserved: bool) -> None:
    """memory_mb (RLIMIT_AS) refuses the 1 TiB no-access reservation CUDA makes at start, which is why recipe math
    runs with memory_mb = 0; data_mb (RLIMIT_DATA) lets it through and still stops the runaway allocation after it."""
    limits = LimitsConfig(timeout_s=60, memory_mb=memory_mb, data_mb=data_mb, cpu_s=120, file_mb=16, nproc=256)
    job = tmp_path / "job"
    res = sandbox.run("tests.adversarial.reserve_then_hoard", [], job_dir=job, project_root=ROOT, limits=limits)
    out, err = (job / "stdout.log").read_text(), res.stderr_tail()
    assert res.returncode == 1 and not res.timed_out, err
    assert ("reserved 1 TiB" in out) is reserved, (out, err)
    if reserved:  # it failed in the hoard, under the cap
        assert "MemoryError" in err and "bytearray(64 * 1024 * 1024)" in err, err
    else:  # the reservation itself was refused, as CUDA's is under RLIMIT_AS
        assert "OSError: [Errno 12] Cannot allocate memory" in err, err
