"""Reports what the sandbox looks like from inside: `python -m tests.adversarial.report_job <out.json>`."""

import json
import os
import resource
import sys
import tempfile

from core.sandbox import guard_installed

LIMITS = ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NPROC", "RLIMIT_CORE")


def interfaces() -> list[str]:
    with open("/proc/self/net/dev") as fh:
        return [line.split(":")[0].strip() for line in fh.readlines()[2:]]


def loopback_up() -> bool:
    """127.0.0.1 is routable only once `lo` is up (sysfs would show the host's lo, /proc shows ours)."""
    with open("/proc/self/net/fib_trie") as fh:
        return "127.0.0.1" in fh.read()


def tempdir_usable() -> str:
    """'' when a temporary directory can be made where tempfile says, else the error (Triton builds there)."""
    try:
        with tempfile.TemporaryDirectory() as path, open(os.path.join(path, "probe"), "w") as fh:
            fh.write("ok")
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return f"{type(exc).__name__}: {exc}"
    return ""


report = {
    "env": dict(os.environ),
    "cwd": os.getcwd(),
    "isolated": sys.flags.isolated,
    "dont_write_bytecode": sys.dont_write_bytecode,
    "sys_path": sys.path,
    "rlimits": {name: resource.getrlimit(getattr(resource, name)) for name in LIMITS},
    "session_leader": os.getsid(0) == os.getpid(),
    "guard": guard_installed(),
    "interfaces": interfaces(),
    "loopback_up": loopback_up(),
    "torch_preloaded": "torch" in sys.modules,
    "tempdir": tempfile.gettempdir(),
    "tempdir_error": tempdir_usable(),
}
with open(sys.argv[1], "w") as fh:
    json.dump(report, fh)
