#!/usr/bin/env bash
# The device checks of the GPU extractor (docs/GPU.md), for a session on a machine with an NVIDIA GPU.
#
#   bench/gpu_check.sh [OUT_DIR]        (default OUT_DIR: bench/out/gpu; PYTHON=... picks the interpreter)
#
# The lent machine (the `device` tool) has no network and its own python3 with CuPy (cupy-cuda13x), Numba, OpenCV,
# scikit-learn and SciPy, but not this project and not ../shared. So the script
# 0. installs the project there without dependencies or an index (`pip install --no-deps --no-index
#    --no-build-isolation -e .`) when `import idtfv.idt` fails, and links `.gpu/shared` (carried) to ../shared
#    when ../shared is absent: prepare it here with
#        mkdir -p .gpu/shared/reference && cp -r ../shared/reference/videos .gpu/shared/reference/
#        grep -qx '/.gpu/' .git/info/exclude || echo /.gpu/ >> .git/info/exclude
#    and call the device tool with carry [".gpu"] and the command `bash bench/gpu_check.sh $OUT`;
# 1. makes sure CuPy is importable (installs the wheels of .whl/ when they were carried; never the network);
# 2. runs every test marked `gpu` (the CUDA kernels against their CPU twins; extract on cuda against cpu; TV-L1 on
#    the GPU) - they must pass, not skip: a skip here means CuPy sees no device;
# 2b. with GPU_CHECK_SANITIZE=1 and compute-sanitizer installed, runs the kernel-level gpu tests under its
#    memcheck, racecheck, synccheck and initcheck tools (what the emulator's order probe cannot see);
# 3. runs the throughput and parity bench (bench/gpu_bench.py: stage split, one stream, a batch of short clips on
#    the GPU worker's K streams, decode rates, parity on the four reference clips) and keeps its JSON and its
#    `## gpu` section of RESULTS.md (OUT_DIR/RESULTS_gpu.md, to paste into bench/RESULTS.md).
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

echo "== project and data"
if [ ! -e ../shared ] && [ -d .gpu/shared ]; then ln -s "$PWD/.gpu/shared" ../shared; fi
ls ../shared/reference/videos 2>/dev/null || echo "no ../shared: the tests and benches on shared clips will skip"
if ! "$PY" -c "import idtfv.idt" 2>/dev/null; then
  "$PY" -m pip install -q --no-deps --no-index --no-build-isolation -e . || \
    { echo "FAILED: could not install the project (needs setuptools in $PY's environment)" >&2; exit 1; }
fi

echo "== cupy"
if ! "$PY" -c "import cupy" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps .whl/*.whl
fi
"$PY" -c "import cupy; print('cupy', cupy.__version__, 'devices:', cupy.cuda.runtime.getDeviceCount())"

echo "== pytest -m gpu"
# -rs lists skips; a gpu test that skips on this machine is a failure of the check
"$PY" -m pytest -q -p no:cacheprovider -m gpu -rs --junitxml="$OUT/pytest_gpu.xml" \
  tests/test_histograms_cuda.py tests/test_tracking_cuda.py tests/test_farneback_cuda.py tests/test_frame_cuda.py \
  tests/test_tvl1_gpu.py tests/test_gpu_worker.py tests/test_pool_cuda.py tests/test_device_threads.py \
  | tee "$OUT/pytest_gpu.txt"
if grep -q "skipped" "$OUT/pytest_gpu.txt"; then
  echo "FAILED: gpu tests were skipped (see above); CuPy must see the device" >&2
  exit 1
fi

echo "== nvcc compile check (when nvcc is installed)"
"$PY" -m pytest -q -p no:cacheprovider -rs -k nvcc tests/test_histograms_cuda.py tests/test_farneback_cuda.py \
  tests/test_frame_cuda.py tests/test_tvl1_gpu.py tests/test_pool_cuda.py

echo "== compute-sanitizer (GPU_CHECK_SANITIZE=1, when compute-sanitizer is installed)"
# What the emulator's order probe cannot see (tests/test_cuda_orders.py; docs/GPU.md): racecheck (shared-memory
# hazards: level_max, TV-L1's primal and dual), synccheck (barriers in divergent code), initcheck (reads of
# uninitialised device memory), memcheck (out-of-bounds and misaligned accesses) over the kernel-level gpu tests
# and one device extraction. Opt-in: the tools slow the kernels 10-100 times.
if [ "${GPU_CHECK_SANITIZE:-0}" = 1 ]; then
  if command -v compute-sanitizer >/dev/null; then
    SANITIZE_K="gpu_kernels_are_bit_identical or gpu_track_step or gpu_kernels_match or gpu_frame_kernels"
    SANITIZE_K="$SANITIZE_K or gpu_device_pool or gpu_extract_gives or gpu_batch_matches"
    SANITIZE_K="$SANITIZE_K or (gpu_matches_cpu_on_planted_flow and fast)"
    for tool in memcheck racecheck synccheck initcheck; do
      echo "-- $tool"
      compute-sanitizer --tool "$tool" --error-exitcode 3 --log-file "$OUT/sanitizer_$tool.log" \
        "$PY" -m pytest -q -p no:cacheprovider -m gpu -x -k "$SANITIZE_K" \
        tests/test_histograms_cuda.py tests/test_tracking_cuda.py tests/test_farneback_cuda.py \
        tests/test_frame_cuda.py tests/test_pool_cuda.py tests/test_tvl1_gpu.py \
        || { echo "FAILED: compute-sanitizer --tool $tool (see $OUT/sanitizer_$tool.log)" >&2; exit 1; }
    done
  else
    echo "compute-sanitizer: not installed (it comes with the CUDA toolkit); skipped"
  fi
else
  echo "skipped (set GPU_CHECK_SANITIZE=1)"
fi

echo "== bench/gpu_bench.py"
"$PY" bench/gpu_bench.py --json "$OUT/gpu_bench.json" --results "$OUT/RESULTS_gpu.md"
echo "gpu_check: all passed; results in $OUT"
