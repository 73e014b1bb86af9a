#!/usr/bin/env bash
# The device checks of the GPU extractor (docs/GPU.md), for a session on a machine with an NVIDIA GPU (CUDA 12).
#
#   bench/gpu_check.sh [OUT_DIR]        (default OUT_DIR: bench/out/gpu; PYTHON=... picks the interpreter)
#
# 1. makes sure CuPy is importable (installs cupy-cuda12x, the project's `gpu` extra, when it is not);
# 2. runs every test marked `gpu` (the CUDA kernels against their Numba twins, bit for bit; extract on cuda
#    against cpu; TV-L1 on the GPU) - they must pass, not skip: a skip here means CuPy sees no device;
# 3. runs the throughput and parity bench (bench/gpu_bench.py) and keeps its JSON.
# Exit status: 0 when all of it passed. Everything it prints is also kept in OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/out/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
exec > >(tee "$OUT/gpu_check.log") 2>&1

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "nvidia-smi: not available"
"$PY" --version

echo "== cupy"
if ! "$PY" -c "import cupy" 2>/dev/null; then
  "$PY" -m pip install -q "cupy-cuda12x>=13.0"
fi
"$PY" -c "import cupy; print('cupy', cupy.__version__, 'devices:', cupy.cuda.runtime.getDeviceCount())"

echo "== pytest -m gpu"
# -rs lists skips; a gpu test that skips on this machine is a failure of the check
"$PY" -m pytest -q -p no:cacheprovider -m gpu -rs --junitxml="$OUT/pytest_gpu.xml" \
  tests/test_histograms_cuda.py tests/test_tracking_cuda.py tests/test_tvl1_gpu.py | tee "$OUT/pytest_gpu.txt"
if grep -q "skipped" "$OUT/pytest_gpu.txt"; then
  echo "FAILED: gpu tests were skipped (see above); CuPy must see the device" >&2
  exit 1
fi

echo "== nvcc compile check (when nvcc is installed)"
"$PY" -m pytest -q -p no:cacheprovider -rs -k nvcc tests/test_histograms_cuda.py tests/test_tvl1_gpu.py

echo "== bench/gpu_bench.py"
"$PY" bench/gpu_bench.py --json "$OUT/gpu_bench.json"
echo "gpu_check: all passed; results in $OUT"
