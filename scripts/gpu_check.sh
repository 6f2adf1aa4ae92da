#!/usr/bin/env bash
# The prepared device check of issue 12, for one GPU, in under 8 minutes once the machine is up:
#   1. installs what the machine lacks from .gpu-wheels/ (made by scripts/gpu_wheels.sh, carried);
#   2. runs the `gpu` tests (tests/test_gpu.py, tests/test_device.py) on CUDA;
#   3. times GPTQ of a Qwen3-0.6B-shaped checkpoint (real config, random weights) on the GPU, and on
#      this machine's CPU for the first 4 layers (the same-machine baseline), plus GPU-vs-CPU parity
#      on Qwen3-Micro (KLD of GPTQ made on each, importance matrix);
#   4. writes $OUT/gpu_check.json and $OUT/gpu_check.md (and the test log) for benchmarks/gpu.md.
#
# Device tool call (from the repository root here, after `bash scripts/gpu_wheels.sh`):
#   run(command="bash scripts/gpu_check.sh", carry=[".gpu-wheels"], timeout_s=560)
# Step timeouts (200 + 180 + 120 s, plus installing) keep it inside one call; what finished is in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-check}"      # the device tool's $OUT: only the 7 summary files go here
WORK="${WORK:-/tmp/gpu-check-work}"  # checkpoints, artifacts, caches (large: never in $OUT)
mkdir -p "$OUT" "$WORK"
LOG="$OUT/gpu_check.log"
T0=$(date +%s)
step() { echo "== $(( $(date +%s) - T0 ))s: $*" | tee -a "$LOG"; }

step "machine"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader; python3 --version
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), 'transformers', transformers.__version__)"; } 2>&1 | tee -a "$LOG"

step "install from .gpu-wheels (no network here)"
if [ -n "${GPU_CHECK_SKIP_INSTALL:-}" ]; then
  echo "install skipped (GPU_CHECK_SKIP_INSTALL)" | tee -a "$LOG"
elif [ -d .gpu-wheels ]; then
  # only what is missing: never replace the machine's torch / transformers
  missing=()
  for w in .gpu-wheels/*.whl; do
    dist=$(basename "$w" | cut -d- -f1)
    python3 -c "import importlib.metadata as m, sys; m.version(sys.argv[1].replace('_','-'))" "$dist" 2>/dev/null || missing+=("$w")
  done
  [ ${#missing[@]} -gt 0 ] && python3 -m pip install -q --no-deps --no-index "${missing[@]}" 2>&1 | tail -5 | tee -a "$LOG"
  for sd in .gpu-wheels/*.tar.gz; do  # compiled sdists without a cp312 wheel (pypcre)
    [ -e "$sd" ] || continue
    python3 -m pip install -q --no-deps --no-index --no-build-isolation "$sd" 2>&1 | tail -5 | tee -a "$LOG"
  done
else
  echo "no .gpu-wheels/: run scripts/gpu_wheels.sh here and carry it" | tee -a "$LOG"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, not an install
if ! python3 -c "import pcre" 2>/dev/null; then
  echo "pypcre did not build here: GPTQModel runs with scripts/gpu_pcre_shim (stdlib re)" | tee -a "$LOG"
  export PYTHONPATH="$PWD/scripts/gpu_pcre_shim:$PYTHONPATH"
fi
python3 - <<'PY' 2>&1 | tee -a "$LOG"
import importlib
for m in ("qwen3_quant", "gptqmodel", "llama_cpp", "onnxruntime", "onnxruntime_genai", "gguf"):
    try:
        importlib.import_module(m); print("import", m, "ok")
    except Exception as e:  # noqa: BLE001
        print("import", m, "FAILED:", str(e).splitlines()[0][:200])
try:
    import onnxruntime as ort; print("onnxruntime providers", ort.get_available_providers())
except Exception: pass
try:
    import llama_cpp; print("llama.cpp GPU offload", bool(llama_cpp.llama_supports_gpu_offload()))
except Exception: pass
PY

export QWEN3_QUANT_CACHE="$WORK/cache" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

step "gpu tests"
timeout 200 python3 -m pytest -q -p no:cacheprovider -m gpu --junitxml="$OUT/gpu_tests.xml" \
  tests/test_gpu.py tests/test_device.py > "$OUT/gpu_tests.log" 2>&1
echo "pytest exit $?" | tee -a "$LOG"; tail -25 "$OUT/gpu_tests.log" | tee -a "$LOG"

step "timed GPTQ on the GPU (28 layers) and parity"
timeout 180 python3 benchmarks/gpu_bench.py --device cuda --samples 32 --parity --work "$WORK" \
  --json "$OUT/gpu_check.json" --md "$OUT/gpu_check.md" >> "$LOG" 2>&1
echo "bench exit $?" | tee -a "$LOG"

step "same GPTQ on this machine's CPU, first 4 layers (baseline)"
timeout 120 python3 benchmarks/gpu_bench.py --device cpu --samples 32 --layers 4 --work "$WORK" \
  --json "$OUT/cpu_baseline.json" --md "$OUT/cpu_baseline.md" >> "$LOG" 2>&1
echo "cpu baseline exit $?" | tee -a "$LOG"
step "done"
cat "$OUT"/*.md 2>/dev/null
