#!/usr/bin/env bash
# The device checks of the GPU extractor (docs/GPU.md), for a session on a machine with an NVIDIA GPU.
#
#   bench/gpu_check.sh [OUT_DIR]        (default OUT_DIR: bench/out/gpu; PYTHON=... picks the interpreter)
#
# The lent machine (the `device` tool) has no network and its own python3 (3.12) with CuPy (cupy-cuda13x), Numba,
# scikit-learn, SciPy and a plain OpenCV 5 without the contrib modules (so without AKAZE, the default camera
# keypoints), but not this project, PyAV or ../shared. So prepare .gpu/ here first (`bash bench/gpu_prepare.sh`:
# the shared clips and OpenCV contrib for Python 3.12, xz-compressed), call the device tool with carry [".gpu"] and
# the command `bash bench/gpu_check.sh $OUT`; the script
# 0. unpacks .gpu/*.tar.xz and installs the wheels of .whl/ when they were carried (PyAV, say) into a folder of
#    their own on PYTHONPATH, installs the project without dependencies or an index (`pip install --no-deps
#    --no-index --no-build-isolation -e .`) when `import idtfv.idt` fails, and links `.gpu/shared` to ../shared
#    when ../shared is absent;
# 1. a smoke run: 40 frames of vtest on the device and on the CPU (the trajectory counts, whether identical), which
#    also compiles the CPU kernels once for what follows;
# 2. runs every test marked `gpu` (the CUDA kernels against their CPU twins; extract on cuda against cpu; TV-L1 on
#    the GPU) - they must pass, not skip: a skip here means CuPy sees no device;
# 3. runs the throughput and parity bench (bench/gpu_bench.py: stage split, one stream, parity on the four
#    reference clips, launches, a batch of short clips on the GPU worker's K streams, in P processes and on the
#    CPUs alone, decode rates) and keeps its JSON (written after every part) and its `## gpu` section of RESULTS.md
#    (OUT_DIR/RESULTS_gpu.md, to paste into bench/RESULTS.md);
# 4. a cProfile of one stream's main thread on the device (threads 1 and 3), printed: not a bench figure;
# 5. the nvcc compile check (when nvcc is installed);
# 6. with GPU_CHECK_SANITIZE=1 and compute-sanitizer installed, the kernel-level gpu tests under its memcheck,
#    racecheck, synccheck and initcheck tools (what the emulator's order probe cannot see).
# Device time is scarce, so every step has a time limit (GPU_CHECK_SMOKE_S, GPU_CHECK_TESTS_S, GPU_CHECK_BENCH_S,
# GPU_CHECK_PROFILE_S, GPU_CHECK_NVCC_S, GPU_CHECK_SANITIZE_S, seconds; GPU_BENCH_ARGS adds gpu_bench.py arguments)
# and a failing step does not stop the later ones: the run says
# what failed at the end. Exit status: 0 when all of it passed. Everything it prints is also kept in OUT_DIR.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/out/gpu}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONUNBUFFERED=1
exec > >(tee "$OUT/gpu_check.log") 2>&1
FAILED=()
fail() { echo "FAILED: $*" >&2; FAILED+=("$*"); }
T0=$SECONDS
stamp() { echo "== $* (at $((SECONDS - T0)) s)"; }

stamp "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || echo "nvidia-smi: not available"
echo "CPUs: $(nproc)"; grep -m1 "model name" /proc/cpuinfo || true
command -v nvcc >/dev/null && nvcc --version | tail -2
"$PY" --version

stamp "carried wheels, project and data"
# packages carried as .gpu/*.tar.xz (a folder tree for site-packages: OpenCV with its contrib modules, whose
# AKAZE the default camera model needs, is over the 64 MiB a call carries as a wheel, not xz-compressed)
for archive in .gpu/*.tar.xz; do
  [ -e "$archive" ] || continue
  mkdir -p /tmp/idtfv_site
  "$PY" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall('/tmp/idtfv_site')" "$archive" \
    && export PYTHONPATH=/tmp/idtfv_site${PYTHONPATH:+:$PYTHONPATH} || fail "unpacking $archive"
done
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/idtfv_site \
    .whl/*.whl && export PYTHONPATH=/tmp/idtfv_site${PYTHONPATH:+:$PYTHONPATH} || fail "installing .whl/*.whl"
fi
if [ ! -e ../shared ] && [ -d .gpu/shared ]; then ln -s "$PWD/.gpu/shared" ../shared; fi
ls ../shared/reference/videos 2>/dev/null || echo "no ../shared: the tests and benches on shared clips will skip"
if ! "$PY" -c "import idtfv.idt" 2>/dev/null; then
  "$PY" -m pip install -q --no-deps --no-index --no-build-isolation -e . || \
    { echo "FAILED: could not install the project (needs setuptools in $PY's environment)" >&2; exit 1; }
fi
"$PY" - <<'EOF' || fail "the versions (an import failed)"
import importlib
for name in ("numpy", "numba", "llvmlite", "cv2", "scipy", "sklearn", "cupy", "av", "idtfv"):
    try:
        print(f"{name} {getattr(importlib.import_module(name), '__version__', '?')}")
    except Exception as exc:  # noqa: BLE001
        print(f"{name}: {type(exc).__name__}: {exc}")
import cupy
print("devices:", cupy.cuda.runtime.getDeviceCount(), "runtime", cupy.cuda.runtime.runtimeGetVersion(),
      "driver", cupy.cuda.runtime.driverGetVersion())
EOF

stamp "smoke: 40 frames of vtest, device and CPU"
timeout -k 10 "${GPU_CHECK_SMOKE_S:-150}" "$PY" - <<'EOF' || fail "the smoke run"
import time
import numpy as np
from idtfv.idt import IDTParams, extract
video = "../shared/reference/videos/vtest_320x240.avi"
for device in ("cuda", "cpu", "cuda"):
    t0 = time.perf_counter()
    tr = extract(video, IDTParams(device=device, end=40))
    print(f"{device}: {len(tr)} trajectories, {time.perf_counter() - t0:.2f} s (the first of each compiles)")
    if device == "cuda":
        gpu = tr
    else:
        cpu = tr
same = len(cpu) == len(gpu) and all(np.array_equal(getattr(cpu, k), getattr(gpu, k))
                                    for k in ("meta", "traj", "hog", "hof", "mbhx", "mbhy"))
print("identical:", same, "| counts", len(cpu), len(gpu), "| HOG identical:",
      len(cpu) == len(gpu) and np.array_equal(cpu.hog, gpu.hog))
EOF

stamp "pytest -m gpu"
XDIST=""
"$PY" -c "import xdist" 2>/dev/null && XDIST="-n 8"
PTIMEOUT=""
"$PY" -c "import pytest_timeout" 2>/dev/null && PTIMEOUT="--timeout 240"
# -rs lists skips; a gpu test that skips on this machine is a failure of the check
timeout -k 10 "${GPU_CHECK_TESTS_S:-200}" "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs $XDIST $PTIMEOUT \
  --durations 12 \
  tests/test_histograms_cuda.py tests/test_tracking_cuda.py tests/test_farneback_cuda.py tests/test_frame_cuda.py \
  tests/test_tvl1_gpu.py tests/test_gpu_worker.py tests/test_pool_cuda.py tests/test_device_threads.py \
  | tee "$OUT/pytest_gpu.txt" || fail "pytest -m gpu"
if grep -q "skipped" "$OUT/pytest_gpu.txt"; then
  fail "gpu tests were skipped (see above); CuPy must see the device"
fi

stamp "bench/gpu_bench.py"
# GPU_BENCH_ARGS: more arguments for gpu_bench.py (fewer K / P / N values, say, to fit one call)
# shellcheck disable=SC2086
timeout -k 10 "${GPU_CHECK_BENCH_S:-300}" "$PY" bench/gpu_bench.py --json "$OUT/gpu_bench.json" \
  --results "$OUT/RESULTS_gpu.md" ${GPU_BENCH_ARGS:-} || fail "bench/gpu_bench.py (its JSON keeps the parts done)"

stamp "host profile of one stream (cProfile of the main thread, 300 frames of vtest on the device, threads 1 and 3;"\
" not a bench figure)"
timeout -k 10 "${GPU_CHECK_PROFILE_S:-90}" "$PY" - <<'EOF' || fail "the host profile"
import cProfile
import pstats
from idtfv.cli import sequential_opencv
from idtfv.idt import IDTParams, extract
sequential_opencv()  # as the commands run
video = "../shared/reference/videos/vtest_320x240.avi"
extract(video, IDTParams(device="cuda", end=20))
for threads in (1, 3):  # with 3, the keypoints run ahead: what is left is the main thread's own work
    print(f"-- threads {threads}")
    profile = cProfile.Profile()  # profiles the thread that enables it: the main thread, every device call's
    profile.enable()
    extract(video, IDTParams(device="cuda", end=300, threads=threads))
    profile.disable()
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(30)
    if threads == 1:
        stats.sort_stats("cumulative").print_stats(25)
EOF

stamp "nvcc compile check (when nvcc is installed)"
timeout -k 10 "${GPU_CHECK_NVCC_S:-90}" "$PY" -m pytest -q -p no:cacheprovider -rs -k nvcc $XDIST \
  tests/test_histograms_cuda.py tests/test_farneback_cuda.py tests/test_frame_cuda.py tests/test_tvl1_gpu.py \
  tests/test_pool_cuda.py || fail "the nvcc compile check"

stamp "compute-sanitizer (GPU_CHECK_SANITIZE=1, when compute-sanitizer is installed)"
# What the emulator's order probe cannot see (tests/test_cuda_orders.py; docs/GPU.md): racecheck (shared-memory
# hazards: level_max, TV-L1's primal and dual), synccheck (barriers in divergent code), initcheck (reads of
# uninitialised device memory), memcheck (out-of-bounds and misaligned accesses) over the kernel-level gpu tests
# and one device extraction. Opt-in: the tools slow the kernels 10-100 times.
if [ "${GPU_CHECK_SANITIZE:-0}" = 1 ]; then
  if command -v compute-sanitizer >/dev/null; then
    SANITIZE_K="gpu_kernels_are_bit_identical or gpu_track_step or gpu_kernels_match or gpu_frame_kernels"
    SANITIZE_K="$SANITIZE_K or gpu_device_pool or gpu_extract_gives or gpu_small_batch_for_the_sanitizer"
    SANITIZE_K="$SANITIZE_K or (gpu_matches_cpu_on_planted_flow and fast)"
    for tool in ${GPU_CHECK_SANITIZE_TOOLS:-memcheck racecheck synccheck initcheck}; do
      echo "-- $tool"
      timeout -k 10 "${GPU_CHECK_SANITIZE_S:-120}" compute-sanitizer --tool "$tool" --error-exitcode 3 \
        --log-file "$OUT/sanitizer_$tool.log" \
        "$PY" -m pytest -q -p no:cacheprovider -m gpu -x -k "$SANITIZE_K" \
        tests/test_histograms_cuda.py tests/test_tracking_cuda.py tests/test_farneback_cuda.py \
        tests/test_frame_cuda.py tests/test_pool_cuda.py tests/test_tvl1_gpu.py \
        || fail "compute-sanitizer --tool $tool (see $OUT/sanitizer_$tool.log)"
    done
  else
    echo "compute-sanitizer: not installed (it comes with the CUDA toolkit); skipped"
  fi
else
  echo "skipped (set GPU_CHECK_SANITIZE=1)"
fi

stamp "done"
if [ ${#FAILED[@]} -gt 0 ]; then
  printf 'gpu_check: FAILED: %s\n' "${FAILED[@]}"
  exit 1
fi
echo "gpu_check: all passed; results in $OUT"
