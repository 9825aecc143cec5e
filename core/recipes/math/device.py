"""Where recipe math trains: on the GPU when there is one, and never on the CPU without saying so.

Why: torch.cuda.is_available() returns False, without an error, when CUDA cannot start. Under an
address-space limit (RLIMIT_AS), with a CPU build of torch, or without the driver's libraries, a GPU
job would then train a 1.5B model on the CPU in float32 and look merely slow. The engine and the
zygote must not initialise CUDA before they fork, so presence is read from the driver's files.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import PoiseError

DRIVER_FILES = ("/proc/driver/nvidia/gpus", "/dev/nvidia0")
HIDDEN = ("", "-1", "none", "void")  # CUDA_VISIBLE_DEVICES values that hide every GPU on purpose


class GPUUnusableError(PoiseError):
    """An NVIDIA GPU is on this machine and not hidden, but CUDA cannot start in this process."""


def nvidia_gpu_present() -> bool:
    """An NVIDIA GPU is installed and CUDA_VISIBLE_DEVICES does not hide it (no CUDA call is made)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "0").strip().lower() in HIDDEN:
        return False
    return any(Path(p).exists() for p in DRIVER_FILES)


def training_device() -> str:
    """'cuda', or 'cpu' on a machine without a usable-by-intent GPU; raises when CUDA should work and does not."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if nvidia_gpu_present():
        raise GPUUnusableError(
            f"an NVIDIA GPU is present but CUDA cannot start in this job (torch {torch.__version__}, "
            f"torch.cuda.is_available() is False). Usual causes: [limits] memory_mb > 0 (CUDA reserves more "
            f"address space than RLIMIT_AS allows: set memory_mb = 0), a CPU build of torch, or the driver's "
            f"libraries not on LD_LIBRARY_PATH. To train on the CPU on purpose, set CUDA_VISIBLE_DEVICES=''.")
    return "cpu"


def one_gpu(visible: str | None) -> str:
    """The CUDA_VISIBLE_DEVICES a job gets: the first GPU the user made visible (all of them: "0"), or the
    user's value where it hides every GPU. TRL's GRPOTrainer refuses to start in one process that sees
    several GPUs (transformers would wrap the model in nn.DataParallel), and a job is one process."""
    if visible is None:
        return "0"
    if visible.strip().lower() in HIDDEN:
        return visible
    return visible.split(",")[0].strip()


def job_env(sockets: Path | None) -> dict[str, str]:
    """What a math job needs in its environment besides the sandbox's own. In the job's network namespace vLLM
    cannot find a host address (it asks the route to 8.8.8.8), and its processes only need to reach each other;
    `sockets` is the job's short dir for vLLM's unix sockets (see core.jobs.socket_dir)."""
    env = {"VLLM_HOST_IP": "127.0.0.1", "CUDA_VISIBLE_DEVICES": one_gpu(os.environ.get("CUDA_VISIBLE_DEVICES"))}
    if sockets is not None:
        env["VLLM_RPC_BASE_PATH"] = str(sockets)
    return env
