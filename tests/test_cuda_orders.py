"""The order probe over every CUDA kernel: the same bytes whatever order a block's threads and a grid's blocks run in.

On the emulated device (``tests/_cuda_on_cpu.py``) the threads of a block run in index order between barriers
and the blocks one after another in index order; a real GPU runs them in any order and at once. A race-free
kernel (no thread reads what another thread of the same launch writes, except across a ``__syncthreads`` of its
block) gives the same bytes in every order. So each scenario below (the kernels' parity paths of the other test
files, the device extraction, the TV-L1 batch) runs in four orders (``_cuda_on_cpu.thread_order``: forward,
reverse, two seeded permutations, the same poison byte in uninitialised memory), recording every launch's array
arguments after it and every download (``_cuda_on_cpu.launch_trace``); the four traces must be equal, launch by
launch. Then it runs twice in forward order with two different poison bytes in every ``cupy.empty`` array and
every ``__shared__`` array at its block's start: the downloads and results must be equal (nothing reads memory
no kernel wrote).

The scenarios together launch every ``__global__`` kernel of the five kernel modules (checked against the
sources), with the edge sizes of their parity tests: 2x2 levels, sizes not a multiple of the block, pools
without live tracks, levels without points, 10 and 11 levels (two runs of the batched kernels), a TV-L1 batch of
three pairs (one converged at once) over several blocks per pair. Mutations prove the probe can fail: a
``__syncthreads`` removed from a shared-memory reduction (``level_max``, TV-L1's ``primal``), a thread reading its
neighbour's output of the same launch, blocks reading a value block 0 writes in the same launch, a read of
uninitialised shared memory, and the host's zeroed arrays left uninitialised.
"""

from __future__ import annotations

import importlib
import re
import sys

import numpy as np
import pytest

import _cuda_on_cpu as emu
from conftest import tiny_frames

#: The orders every scenario runs in (name, seed), all with the same poison byte.
ORDERS = (("forward", 0), ("reverse", 0), ("random", 1), ("random", 2))
SAME_POISON = 0x5A
#: The two poison bytes of the uninitialised-memory check (0.0 and 3.4e38 as float32, 1.4e306 as float64).
POISONS = (0x00, 0x7F)

#: The kernel modules (every ``__global__`` function of their ``_SOURCE`` must be probed).
KERNEL_MODULES = ("idtfv.idt._histograms_cuda", "idtfv.idt._tracking_cuda", "idtfv.idt._frame_cuda",
                  "idtfv.idt.flow._farneback_cuda", "idtfv.idt.flow._tvl1_cupy")


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cuda_on_cpu_orders")


@pytest.fixture
def emulated(build_dir, monkeypatch):
    """The stand-in cupy (yielded) with the kernel modules imported over it (forgotten afterwards)."""
    monkeypatch.delitem(sys.modules, "idtfv.idt.flow._tvl1_cupy", raising=False)  # not in emu.DEVICE_MODULES
    with emu.stand_in(build_dir, monkeypatch) as cp:
        cp.uint8 = np.uint8
        for name in KERNEL_MODULES:
            importlib.import_module(name)
        try:
            yield cp
        finally:
            sys.modules.pop("idtfv.idt.flow._tvl1_cupy", None)


# ------------------------------------------------------------------------------------------------ the probe
def _bytes(x) -> bytes:
    """The bytes of a scenario's result (arrays, sequences, dicts and scalars, recursively)."""
    if isinstance(x, np.ndarray):
        return repr((x.dtype.str, x.shape)).encode() + np.ascontiguousarray(x).tobytes()
    if isinstance(x, (list, tuple)):
        return b"[" + b",".join(_bytes(v) for v in x) + b"]"
    if isinstance(x, dict):
        return b"{" + b",".join(_bytes(k) + b":" + _bytes(v) for k, v in sorted(x.items(), key=repr)) + b"}"
    if x is None or isinstance(x, (bool, int, float, str, bytes, np.generic)):
        return repr(x).encode()
    raise TypeError(f"no bytes for a {type(x).__name__}")


def _first_difference(a: list, b: list) -> str | None:
    """Where two launch traces first differ (the launch, its kernel and the array argument), or None."""
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            args = [i for i, (u, v) in enumerate(zip(x[1], y[1])) if u != v]
            return f"launch {k} ({x[0]} / {y[0]}): array argument(s) {args} differ"
    if len(a) != len(b):
        return f"{len(a)} launches against {len(b)}"
    return None


def probe(run) -> set[str]:
    """Run ``run()`` in every order of :data:`ORDERS` and with both :data:`POISONS`; fail at the first launch
    whose arrays differ between orders, or where the downloads or the result differ between poisons. Returns the
    kernels launched."""
    traces, results = [], []
    for order, seed in ORDERS:
        with emu.thread_order(order, seed, poison=SAME_POISON), emu.launch_trace() as trace:
            results.append(_bytes(run()))
        traces.append(trace)
        where = _first_difference(traces[0], trace)
        assert where is None, f"{order} order (seed {seed}) against forward: {where}"
        assert results[-1] == results[0], f"{order} order (seed {seed}): the result differs from forward's"
    downloads = []
    for poison in POISONS:
        with emu.thread_order("forward", poison=poison), emu.launch_trace() as trace:
            results.append(_bytes(run()))
        downloads.append([d for d in trace if d[0] == "asnumpy"])
    assert downloads[0] == downloads[1], "a download differs with the poison in uninitialised memory: " + str(
        _first_difference(downloads[0], downloads[1]))
    assert results[-1] == results[-2], "the result differs with the poison in uninitialised memory"
    assert results[-1] == results[0], "the result differs from the one with the same poison"
    return {name for name, _ in traces[0] if name != "asnumpy"}


def _all_kernels() -> dict[str, set[str]]:
    """Every ``__global__`` kernel of each kernel module (imported over the stand-in cupy)."""
    return {name: {k for k, _, _ in emu._parse_kernels(sys.modules[name]._SOURCE)} for name in KERNEL_MODULES}


# ---------------------------------------------------------------------------------------------- scenarios
def _histograms(cp):
    import test_histograms_cuda as th

    out = []
    for (h, w), u8 in (((2, 2), False), ((9, 13), True), ((48, 33), False), ((37, 53), True)):
        cpu, dev = th._compare(h, w, th.LAYOUTS["default"], seed=h, u8=u8)
        out.append(list(dev))
    out.append(th._compare(48, 33, th.LAYOUTS["odd-bins"], seed=3)[1])
    for shapes in ("pyramid", "ten"):  # a 2x2 level without points; ten levels: two runs of the batched kernels
        got = th._compare_levels(th.LEVEL_SHAPES[shapes], th.SMALL_PATCH, seed=11, u8=True)
        out.append([list(level) for level in got.levels])
    return out


def _frame(cp):
    import test_frame_cuda as tf

    mod = sys.modules["idtfv.idt._frame_cuda"]
    tf._check_all(mod, exact_response=tf.OPENCV_AVX2)
    tf._compare_sampling(mod, 1, device_response=True)
    tf._compare_sampling_levels(mod, 11)  # two runs; the last level without a whole cell
    grays, existing = tf._level_cases(2, 6)
    got, _ = mod.dense_sample_levels([cp.asarray(g) for g in grays], existing, stride=5, quality=0.001)
    return [list(got), cp.asnumpy(mod.corner_response(grays[0]))]


def _tracking(cp):
    import test_pool_cuda as tp
    import test_tracking_cuda as tt
    from idtfv.idt.tracking_cuda import DeviceTrackPool

    mod = sys.modules["idtfv.idt._tracking_cuda"]
    tt._compare(mod.track_step, 0)
    seen = [tp.run_sequence(DeviceTrackPool, cp, seed) for seed in range(2)]
    tp._compare_validation(mod)
    tp._compare_gather()
    tp._compare_store_levels(n_pools=10, rounds=2)  # one pool without moved rows
    tp._compare_step_levels()  # 10 pools, 12 rounds: pools without live tracks, finished tracks, new points
    return seen


def _farneback(cp):
    import test_farneback_cuda as tfb

    m = tfb._Modules(cp, sys.modules["idtfv.idt.flow._farneback_cuda"],
                     importlib.import_module("idtfv.idt.flow.farneback_cuda"))
    for check in tfb.KERNEL_CHECKS.values():
        check(m)
    frames = tfb._moving_frames(h=40, w=52)
    errors = [tfb._compare_driver(m, frames, tfb.DRIVER_OPTIONS[name]) for name in ("default", "box-median3-raw",
                                                                                    "no-median")]
    errors.append(tfb._compare_driver(m, frames, dtype=np.float32))
    errors.append(tfb._compare_driver(m, [np.ascontiguousarray(f[:9, :11]) for f in frames]))
    return errors


def _tvl1_pairs():
    import test_tvl1_gpu as tv

    pairs = [tv._planted(36, 44, seed=s) for s in (8, 9)]
    return [p[0] for p in pairs] + [pairs[1][1]], [p[1] for p in pairs] + [pairs[1][1]]  # the third converges


def _tvl1(cp):
    from idtfv.idt.flow import TVL1Params

    tvl1 = sys.modules["idtfv.idt.flow._tvl1_cupy"]
    prevs, nexts = _tvl1_pairs()  # 36 x 44 = 1584 pixels: 7 blocks of 256 per pair, the last one partial
    small = TVL1Params(n_scales=2, warps=2, inner_iterations=6, outer_iterations=2, epsilon=0.001, median_filtering=3)
    return tvl1.tvl1_flow_gpu_batch(prevs, nexts, params=small)


def _extract(cp):
    from idtfv.idt.extractor import extract
    from idtfv.idt.params import IDTParams

    frames = tiny_frames(frames=14, width=96, height=72, motion=(2, 1))
    out = [extract(frames, IDTParams(track_length=9, device="cuda", **options))
           for options in ({"scales": 2, "still_camera": 0}, {"camera_motion": False, "scales": 4})]
    assert all(len(t) > 20 for t in out)  # not vacuous: tracks finished
    return [[getattr(t, n) for n in ("meta", "traj", "hog", "hof", "mbhx", "mbhy")] for t in out]


#: scenario: (runner, the kernels it must launch, slow).
SCENARIOS = {
    "histograms": (_histograms, {"frame_bins", "hist_rows", "hist_cols", "gather_blocks", "frame_bins_levels",
                                 "hist_rows_levels", "hist_cols_levels", "gather_blocks_levels"}, False),
    "frame": (_frame, {"corner_min_eig", "mark_cells", "select_cells", "corner_min_eig_levels", "level_max",
                       "mark_cells_levels", "select_cells_levels", "warp_perspective", "compensate_flow",
                       "compensate_flow_interior"}, False),
    "tracking": (_tracking, {"track_points", "pool_step", "compact_step", "pool_step_levels", "compact_step_levels",
                             "pool_add", "pool_add_levels", "add_blocks", "add_blocks_levels", "flag_rows",
                             "pop_done", "compact_keep", "validate_rows", "pack_rows", "flag_rows_levels",
                             "pop_done_levels", "validate_rows_levels", "pack_rows_levels"}, False),
    "farneback": (_farneback, {"resize_u8", "resize_f32", "u8_to_f32", "gauss3", "poly_rows", "poly_cols",
                               "update_matrices", "solve_flow", "solve_and_update", "window_rows", "window_cols",
                               "median2", "merge2"}, False),
    "tvl1": (_tvl1, {"resize_linear", "centered_gradient", "warp_linearise", "primal", "dual", "median"}, False),
    "extract": (_extract, {"resize_u8", "gauss3", "poly_rows", "poly_cols", "update_matrices", "window_rows",
                           "window_cols", "solve_and_update", "solve_flow", "median2", "warp_perspective",
                           "corner_min_eig_levels", "level_max", "mark_cells_levels", "select_cells_levels",
                           "frame_bins_levels", "hist_rows_levels", "hist_cols_levels", "gather_blocks_levels",
                           "pool_step_levels", "compact_step_levels", "pool_add_levels", "add_blocks_levels",
                           "flag_rows_levels", "pop_done_levels", "validate_rows_levels", "pack_rows_levels",
                           "current_points", "flow_at"}, False),
}


def test_the_scenarios_cover_every_kernel(emulated):
    declared = set().union(*(kernels for _, kernels, _ in SCENARIOS.values()))
    every = _all_kernels()
    missing = {m: sorted(k - declared) for m, k in every.items() if k - declared}
    assert not missing, f"kernels no scenario probes: {missing}"
    assert sum(len(k) for k in every.values()) == 57  # not vacuous: the sources were parsed


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if s[2] else []) for n, s in
                                  SCENARIOS.items()])
def test_every_order_gives_the_same_bytes(emulated, name):
    run, kernels, _ = SCENARIOS[name]
    launched = probe(lambda: run(emulated))
    assert kernels <= launched, f"not launched: {sorted(kernels - launched)}"


# ----------------------------------------------------------------------------- the probe itself, and its failures
def test_the_orders_differ_and_the_default_is_index_order(emulated, tmp_path):
    """Each order runs a block's threads and a grid's blocks in its own sequence (a kernel that records the
    order in which its threads run shows it), and outside :func:`thread_order` the order is index order."""
    source = r"""
    extern "C" __global__ void seq(int* counter, int* out, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n) out[i] = counter[0]++;  // a race on purpose: the order threads run in
    }
    extern "C" __global__ void seq_sync(int* counter, int* out) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        __syncthreads();
        out[2 * i] = counter[0]++;
        __syncthreads();
        out[2 * i + 1] = counter[0]++;
    }
    """
    kernels = emu.compile_source(source, build_dir=tmp_path)

    def run(order=None, seed=0):
        outs = []
        for name, extra in (("seq", (np.int32(150),)), ("seq_sync", ())):
            counter, out = np.zeros(1, np.int32), np.full(320 if name == "seq_sync" else 160, -1, np.int32)
            if order is None:
                kernels[name]((5,), (32,), (counter, out, *extra))
            else:
                with emu.thread_order(order, seed):
                    kernels[name]((5,), (32,), (counter, out, *extra))
            outs.append(out)
        return outs

    plain, synced = run()
    assert np.array_equal(plain[:150], np.arange(150)) and np.all(plain[150:] == -1)
    sync_index = synced.reshape(5, 32, 2)  # per block: the first interval's 32 values, then the second's
    assert np.array_equal(sync_index[:, :, 0], np.arange(5)[:, None] * 64 + np.arange(32))
    assert np.array_equal(sync_index[:, :, 1], np.arange(5)[:, None] * 64 + 32 + np.arange(32))
    assert all(np.array_equal(a, b) for a, b in zip(run("forward"), (plain, synced)))
    rev_plain, rev_synced = run("reverse")
    assert np.array_equal(rev_plain[:150], 149 - np.arange(150))
    assert np.array_equal(rev_synced.reshape(5, 32, 2)[::-1, ::-1, 0], np.arange(5)[:, None] * 64 + np.arange(32))
    one, two, again, twice = run("random", 1), run("random", 2), run("random", 1), run("random", 1)
    for a, b, c in zip(one, again, twice):
        assert np.array_equal(a, b) and np.array_equal(a, c)  # a seed gives one sequence, each block anew
    for a, b, f in zip(one, two, (plain, synced)):
        assert not np.array_equal(a, b) and not np.array_equal(a, f)
        assert np.array_equal(np.sort(a[a >= 0]), np.sort(f[f >= 0]))  # a permutation of the same threads
    # each barrier interval has its own permutation: the two intervals of a block are not in the same sequence
    perm = one[1].reshape(5, 32, 2)
    assert any(not np.array_equal(np.argsort(perm[b, :, 0]), np.argsort(perm[b, :, 1])) for b in range(5))


def test_the_launch_checks_refuse_what_a_device_refuses(emulated):
    """A host array for a device one (CuPy refuses it), argument types against the C signature (a device reads
    their bytes as they are), CUDA's grid and block limits and a grid of 0 blocks: each launch refused with a
    TypeError or ValueError naming the kernel."""
    tvl1 = sys.modules["idtfv.idt.flow._tvl1_cupy"]
    k = tvl1.module().get_function("centered_gradient")
    src, dx, dy = (emulated.zeros((2, 3, 4), np.float32) for _ in range(3))
    k((1, 2), (256,), (src, np.int32(3), np.int32(4), dx, dy))  # as the driver launches it
    host = np.zeros((2, 3, 4), np.float32)
    assert isinstance(src[1:], emulated.ndarray) and not isinstance(emulated.asnumpy(src), emulated.ndarray)
    bad_args = [
        ((host, np.int32(3), np.int32(4), dx, dy), r"src \(const float\*\) is a host array, not a device one"),
        ((src, np.int64(3), np.int32(4), dx, dy), r"h \(int\) must be a np.int32 scalar, got int64"),
        ((src, 3, np.int32(4), dx, dy), r"h \(int\) must be a np.int32 scalar, got int \(int64\)"),
        ((src, np.int32(3), np.float32(4), dx, dy), r"w \(int\) must be a np.int32 scalar, got float32"),
        ((src.astype(np.float64), np.int32(3), np.int32(4), dx, dy), r"src \(const float\*\) must be a float32 arr"),
        ((src, np.int32(3), np.int32(4), dx.astype(np.int32), dy), r"dx \(float\*\) must be a float32 array"),
    ]
    for args, message in bad_args:
        with pytest.raises(TypeError, match=r"centered_gradient: " + message):
            k((1, 2), (256,), args)
    resize = tvl1.module().get_function("resize_linear")
    with pytest.raises(TypeError, match=r"scale_y \(double\) must be a np.float64 scalar, got float32"):
        resize((1, 2), (256,), (src, np.int32(3), np.int32(4), dx, np.int32(3), np.int32(4), np.float32(1),
                                np.float64(1), np.float32(1)))
    with pytest.raises(TypeError, match=r"factor \(float\) must be a np.float32 scalar, got float \(float64\)"):
        resize((1, 2), (256,), (src, np.int32(3), np.int32(4), dx, np.int32(3), np.int32(4), np.float64(1),
                                np.float64(1), 1.0))
    args = (src, np.int32(3), np.int32(4), dx, dy)
    for grid, block, message in (((0,), (256,), "outside CUDA's limits"), ((1, 0), (256,), "outside CUDA's limits"),
                                 ((1, 65536), (256,), "outside CUDA's limits"), ((1,), (1025,), "1 to 1024"),
                                 ((1,), (0,), "1 to 1024"), ((1, 1, 2), (256,), "2-D grids of 1-D blocks"),
                                 ((1,), (16, 16), "2-D grids of 1-D blocks")):
        with pytest.raises(ValueError, match=f"centered_gradient: .*{message}"):
            k(grid, block, args)


def test_barriers_in_divergent_code_and_shared_memory_misuse_are_refused(tmp_path):
    """``__syncthreads`` where part of a block has returned, or on two branches, a write past the end of a shared
    array, and more than 48 KB of static shared memory: undefined or refused on a device, so every emulated launch
    of them raises (in any order)."""
    source = r"""
    extern "C" __global__ void sound(float* out, int n) {
        __shared__ float s[64];
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        s[threadIdx.x] = i < n ? 1.0f : 0.0f;  // every thread reaches every barrier; the work is guarded
        __syncthreads();
        if (i < n) out[i] = s[(threadIdx.x + 1) % blockDim.x];
    }
    extern "C" __global__ void early_return(float* out, int n) {
        __shared__ float s[64];
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i >= n) return;  // the last block's tail leaves before the barrier
        s[threadIdx.x] = 1.0f;
        __syncthreads();
        out[i] = s[(threadIdx.x + 1) % blockDim.x];
    }
    extern "C" __global__ void two_barriers(float* out, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (threadIdx.x % 2) { out[i] = 1.0f; __syncthreads(); }
        else { __syncthreads(); out[i] = 2.0f; }
    }
    extern "C" __global__ void past_the_end(float* out, int n) {
        __shared__ float s[32];
        s[threadIdx.x] = 1.0f;  // a block of 64 threads: 32 of them write past the end
        __syncthreads();
        out[threadIdx.x] = s[threadIdx.x % 32];
    }
    extern "C" __global__ void big_shared(float* out, int n) {
        __shared__ double s[6145];  // 48 KB + 8 bytes
        s[threadIdx.x] = 1.0;
        __syncthreads();
        out[threadIdx.x] = (float)s[0];
    }
    """
    kernels = emu.compile_source(source, build_dir=tmp_path)
    out = np.zeros(128, np.float32)
    for order in (None, "reverse", "random"):
        with emu.thread_order(order) if order else emu.contextlib.nullcontext():
            kernels["sound"]((2,), (64,), (out, np.int32(100)))  # 100 threads of 128: fine
            with pytest.raises(RuntimeError, match="early_return: __syncthreads.. reached by some threads"):
                kernels["early_return"]((2,), (64,), (out, np.int32(100)))
            kernels["early_return"]((2,), (64,), (out, np.int32(128)))  # no block divided: fine
            with pytest.raises(RuntimeError, match="two_barriers: threads of a block wait at different"):
                kernels["two_barriers"]((1,), (64,), (out, np.int32(64)))
    out = np.zeros(128, np.float32)
    kernels["sound"]((2,), (64,), (out, np.int32(100)))
    i = np.arange(100)
    neighbour = i - i % 64 + (i % 64 + 1) % 64  # the thread whose shared slot thread i reads
    assert np.array_equal(out[:100], (neighbour < 100).astype(np.float32)) and np.all(out[100:] == 0)
    kernels["past_the_end"]((1,), (32,), (out, np.int32(32)))  # as many threads as slots: fine
    with pytest.raises(RuntimeError, match="past_the_end: a thread wrote past the end of a __shared__ array"):
        kernels["past_the_end"]((1,), (64,), (out, np.int32(64)))
    kernels["past_the_end"]((1,), (32,), (out, np.int32(32)))  # the guard is restored
    with pytest.raises(RuntimeError, match="big_shared: more than 48 KB"):
        kernels["big_shared"]((1,), (32,), (out, np.int32(32)))
    sound = emu.compile_source(source.split('extern "C" __global__ void early_return')[0], build_dir=tmp_path)
    sound["sound"]((1,), (64,), (out, np.int32(64)))  # the check is per library: this one has 256 bytes


def test_a_tvl1_batch_over_the_grid_limit_is_solved_in_parts(emulated, monkeypatch):
    """``gridDim.y`` is the batch (twice it in the flow upscale), at most 65535 on a device: a larger batch is
    solved in parts of :data:`MAX_BATCH` pairs, with the bytes of one batch (here with the limit lowered to 2)."""
    tvl1 = sys.modules["idtfv.idt.flow._tvl1_cupy"]
    assert 2 * tvl1.MAX_BATCH <= emu.MAX_GRID[1]
    whole = _tvl1(emulated)
    grids = []
    real = tvl1._grid
    monkeypatch.setattr(tvl1, "_grid", lambda n, batch: grids.append(batch) or real(n, batch))
    monkeypatch.setattr(tvl1, "MAX_BATCH", 2)
    parts = _tvl1(emulated)
    assert parts.tobytes() == whole.tobytes() and parts.shape == (3, 36, 44, 2)
    assert max(grids) == 2 * 2 and min(grids) == 1  # the upscale's 2 B rows; the last part one pair


def _sampling_levels_run(cp):
    """dense_sample_levels over 6 levels (no comparison: the probe's equality is the only check)."""
    import test_frame_cuda as tf

    mod = sys.modules["idtfv.idt._frame_cuda"]
    grays, existing = tf._level_cases(0, 6)
    return mod.dense_sample_levels([cp.asarray(g) for g in grays], existing, stride=5, quality=0.001)[0]


#: (kernel module, the one occurrence replaced, its replacement, the runner, what the probe must report).
MUTATIONS = {
    # a shared-memory reduction without its first barrier: threads read slots not written yet
    "level_max without the first barrier": (
        "idtfv.idt._frame_cuda", "    part[threadIdx.x] = m;\n    __syncthreads();", "    part[threadIdx.x] = m;",
        _sampling_levels_run, "order"),
    # the tree step's barrier removed
    "primal's reduction without its loop barrier": (
        "idtfv.idt.flow._tvl1_cupy",
        "        if (threadIdx.x < r) acc[threadIdx.x] += acc[threadIdx.x + r];\n        __syncthreads();\n    }\n"
        "    if (threadIdx.x == 0) partial",
        "        if (threadIdx.x < r) acc[threadIdx.x] += acc[threadIdx.x + r];\n    }\n    if (threadIdx.x == 0) partial",
        lambda cp: _tvl1(cp), "order"),
    # a thread reads the flow its left neighbour writes in the same launch
    "primal reads its neighbour's new flow": (
        "idtfv.idt.flow._tvl1_cupy", "a1 = u1[i], a2 = u2[i];\n        float rho",
        "a1 = u1[i > 0 ? i - 1 : i], a2 = u2[i];\n        float rho",
        lambda cp: _tvl1(cp), "order"),
    # every block reads the error block 0 writes in the same launch
    "dual's blocks read this iteration's error": (
        "idtfv.idt.flow._tvl1_cupy", "    int i = blockIdx.x * blockDim.x + threadIdx.x;\n    if (i >= h * w) return;\n"
        "    long long off = (long long)blockIdx.y * h * w;\n    u1 += off; u2 += off; p11",
        "    if (errs[eb + k] <= eps) return;\n    int i = blockIdx.x * blockDim.x + threadIdx.x;\n"
        "    if (i >= h * w) return;\n    long long off = (long long)blockIdx.y * h * w;\n    u1 += off; u2 += off; p11",
        lambda cp: _tvl1(cp), "order"),
    # a thread reads its own shared slot before writing it (undefined at a block's start on a device)
    "level_max reads shared memory before writing it": (
        "idtfv.idt._frame_cuda", "    part[threadIdx.x] = m;\n", "    part[threadIdx.x] = part[threadIdx.x] > m ? "
        "part[threadIdx.x] : m;\n", _sampling_levels_run, "poison"),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_the_probe_fails_on_a_racy_kernel(emulated, monkeypatch, name):
    module_name, old, new, run, kind = MUTATIONS[name]
    module = sys.modules[module_name]
    probe(lambda: run(emulated))  # sound: passes
    with emu.mutated(module, monkeypatch, old, new):
        message = "against forward" if kind == "order" else "uninitialised memory"
        with pytest.raises(AssertionError, match=message):
            probe(lambda: run(emulated))


def test_the_probe_fails_on_uninitialised_device_memory(emulated, monkeypatch):
    """The TV-L1 solver's zeroed dual variables left uninitialised (``cupy.zeros`` as ``cupy.empty``) are read
    by the first primal step: the poison check must see it."""
    probe(lambda: _tvl1(emulated))
    monkeypatch.setattr(emulated, "zeros", emulated.empty)
    with pytest.raises(AssertionError, match="uninitialised memory"):
        probe(lambda: _tvl1(emulated))


def test_the_default_order_is_untouched_by_the_probe(emulated):
    """Outside :func:`thread_order` nothing is poisoned or reordered: a launch after a probe gives the bytes of a
    launch before it (the library's order state is put back)."""
    before = _bytes(_tvl1(emulated))
    with emu.thread_order("random", 3):
        _tvl1(emulated)
    assert emu.ORDER is None
    assert _bytes(_tvl1(emulated)) == before
    a = emulated.empty(16, np.float32)
    assert emu.TRACE is None and a.shape == (16,)


def test_the_environment_variable_sets_the_order(monkeypatch):
    for text, want in (("", None), ("forward", (0, 0, 0x00)), ("reverse", (1, 0, 0xFF)), (" random:7 ", (2, 7))):
        monkeypatch.setenv("IDTFV_EMU_ORDER", text)
        got = emu._order_from_env()
        assert got == want if want is None else got[:len(want)] == want
    for bad in ("sideways", "random:x", "random:-1"):
        monkeypatch.setenv("IDTFV_EMU_ORDER", bad)
        with pytest.raises(ValueError, match="IDTFV_EMU_ORDER"):
            emu._order_from_env()
    with pytest.raises(ValueError, match="poison must be a byte"):
        with emu.thread_order("forward", poison=256):
            pass
    assert re.fullmatch(r"[0-9a-f]{24}", emu._digest(np.arange(5)))
