#!/usr/bin/env bash
# Wheels the GPU test machine lacks, gathered HERE (it has no network) into .gpu-wheels/, which
# scripts/gpu_check.sh installs from and the device tool carries (run(carry=[".gpu-wheels"])).
#
#   bash scripts/gpu_wheels.sh            # then: device run with carry .gpu-wheels
#
# The machine (see ../shared/notes/stack-findings.md, issue 12) has Python 3.12, torch 2.11 (CUDA)
# and transformers 5.17; it lacks gptqmodel, llama-cpp-python, onnxruntime-gpu and this project's
# small dependencies. What this script can and cannot provide:
#   - gptqmodel 7.6.0: built here without CUDA extensions (a py3-none-any wheel, as this CPU machine
#     builds it). On the GPU it then runs its Triton / torch kernels; the compiled CUDA kernels
#     (Marlin, ExLlama v2) need `pip install gptqmodel` on a machine with nvcc and the network.
#   - its pure-Python and manylinux cp312 dependencies: downloaded from PyPI for Python 3.12;
#     pypcre (compiled, no cp312 wheel) as its sdist, built on the GPU machine (needs gcc there).
#   - llama-cpp-python with CUDA: CANNOT be built here (no nvcc / CUDA toolkit, no Python 3.12)
#     and PyPI has only its sdist. On a CUDA machine with network:
#       CMAKE_ARGS=-DGGML_CUDA=on pip wheel --no-deps llama-cpp-python==0.3.36 -w .gpu-wheels
#     Without it the GGUF test on the GPU is skipped and GGUF validates on the CPU.
#   - ONNX: onnxruntime-gpu's wheel (~300 MB), and even the CPU onnxruntime + onnxruntime-genai +
#     onnx wheels (~48 MB), do not fit beside the working tree (~34 MB) in what a device run carries
#     (64 MiB): the ONNX GPU test is skipped there and the CUDA execution provider stays unverified.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.gpu-wheels
PIP="${PIP:-/work/main/.venv/bin/pip}"
mkdir -p "$OUT"

# wheels on PyPI for CPython 3.12 (no dependencies resolved: the list is explicit)
WHEELS=(
  click rich markdown-it-py mdurl pygments gguf psutil threadpoolctl torchao==0.18.0 accelerate optimum
)
"$PIP" download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$OUT" "${WHEELS[@]}"
# published as sdists only, pure Python: built here into py3-none-any wheels. gptqmodel builds
# without its CUDA extensions on this machine (no nvcc), which is what is wanted here.
"$PIP" wheel --no-deps -w "$OUT" defuser==0.0.28 tokenicer logbar device-smi gptqmodel==7.6.0
# pypcre (imported by gptqmodel) is compiled and has no cp312 wheel: its sdist is carried and built
# on the GPU machine by scripts/gpu_check.sh (needs a C compiler there)
"$PIP" download --no-deps --no-binary=pypcre --no-build-isolation -d "$OUT" pypcre
du -sh "$OUT"; ls -1 "$OUT"
