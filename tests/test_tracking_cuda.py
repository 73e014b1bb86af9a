"""The tracking step's CUDA kernel (idt/_tracking_cuda.py) against its Numba twin, bit for bit.

Without a GPU the CUDA C runs on the CPU through ``tests/_cuda_on_cpu.py``; one thread per point does the Numba
kernel's float32 additions and comparisons, so pool arrays after a step must be bit-identical. The Numba kernel is
itself checked against a naive step in tests/test_extract.py. Broken kernels must fail; the ``gpu`` test runs the
same check on a real device.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import _cuda_on_cpu
from idtfv.idt import _tracking_nb as nb
from idtfv.idt.device import cuda_available
from idtfv.idt.tracking import TrackPool

NAME = "idtfv.idt._tracking_cuda"


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cuda_on_cpu_tracking")


@pytest.fixture
def emulated(build_dir, monkeypatch):
    """``idtfv.idt._tracking_cuda`` over the stand-in cupy (forgotten afterwards: ``_cuda_on_cpu.stand_in``)."""
    with _cuda_on_cpu.stand_in(build_dir, monkeypatch):
        yield importlib.import_module(NAME)


def _pool_state(seed=0, h=31, w=47, capacity=400, length=6):
    """Pool arrays with live tracks at various steps, points on ties (x.5), on and beyond the borders."""
    rng = np.random.default_rng(seed)
    index = np.full(capacity, -1, np.int32)
    live = rng.choice(capacity, 300, replace=False)
    index[live] = rng.integers(0, length, 300)
    pos = np.zeros((capacity, length + 1, 2), np.float32)
    pos[:, :, 0] = rng.uniform(-1.5, w + 0.5, (capacity, length + 1))
    pos[:, :, 1] = rng.uniform(-1.5, h + 0.5, (capacity, length + 1))
    pos[live[:40], index[live[:40]]] = np.float32(np.floor(pos[live[:40], index[live[:40]]]) + 0.5)  # ties
    disp = rng.normal(size=(capacity, length, 2)).astype(np.float32)
    flow = (rng.normal(size=(h, w, 2)) * 3).astype(np.float32)
    flow_w = (rng.normal(size=(h, w, 2)) * 0.5).astype(np.float32)
    # points that land exactly on the frame's edges (which are outside the open frame)
    for k, (x, y, fx, fy) in enumerate([(5, 7, -5, 0), (9, 11, 0, h - 11), (13, 3, w - 13, 1), (20, 4, 1, -4)]):
        r = live[40 + k]
        pos[r, index[r]] = (x, y)
        flow[y, x] = (fx, fy)
    return np.sort(live).astype(np.int64), index, pos, disp, flow, flow_w


def _compare(step, seed):
    slots, index, pos, disp, flow, flow_w = _pool_state(seed)
    want = [a.copy() for a in (index, pos, disp)] + [np.empty(len(slots), np.bool_)]
    got = [a.copy() for a in (index, pos, disp)] + [np.empty(len(slots), np.bool_)]
    nb.track_step(slots, want[0], want[1], want[2], flow, flow_w, want[3])
    step(slots, got[0], got[1], got[2], flow, flow_w, got[3])
    assert 0 < want[3].sum() < len(slots)  # some die, some move: not vacuous
    for name, a, b in zip(("index", "pos", "disp", "alive"), want, got):
        assert a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8)), name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_emulated_track_step_is_bit_identical_to_numba(emulated, seed):
    _compare(emulated.track_step, seed)


def test_emulated_track_points_of_no_points(emulated):
    nxt, disp, alive = emulated.track_points(np.zeros((0, 2), np.float32), np.zeros((4, 5, 2), np.float32),
                                             np.zeros((4, 5, 2), np.float32))
    assert nxt.shape == (0, 2) and disp.shape == (0, 2) and alive.shape == (0,)


def test_emulated_pool_step_on_cuda_equals_cpu(emulated):
    slots, index, pos, disp, flow, flow_w = _pool_state(3)
    pools = []
    for device in ("cpu", "cuda"):
        pool = TrackPool(6, 4, 3, capacity=64)
        pool.add(pos[slots[:64], 0])
        pools.append((pool, pool.step(flow, flow_w, device=device)))
    (a, (rows_a, prev_a)), (b, (rows_b, prev_b)) = pools
    assert np.array_equal(rows_a, rows_b) and np.array_equal(prev_a, prev_b) and 0 < len(rows_a) < 64
    assert np.array_equal(a.pos, b.pos) and np.array_equal(a.disp, b.disp) and np.array_equal(a.index, b.index)


MUTATIONS = [
    ("float rx = rintf(px);", "float rx = floorf(px);"),  # rounding to nearest (ties to even)
    ("float rx = rintf(px);", "float rx = roundf(px);"),  # ties away from zero instead of to even
    ("int x = rx < 0.0f ? 0 : (rx > (float)(w - 1) ? w - 1 : (int)rx);",
     "int x = rx < 0.0f ? 0 : (rx > (float)(w - 2) ? w - 2 : (int)rx);"),  # clamp at the last column
    ("float ny = py + flow[k + 1];", "float ny = py + flow[k];"),  # which flow component
    ("d[0] = flow_w[k];", "d[0] = flow[k];"),  # the compensated flow is the displacement
    ("nx <= 0.0f ||", "nx < 0.0f ||"),  # the open frame
    ("ny >= (float)h) ? 0 : 1;", "ny > (float)h) ? 0 : 1;"),
]


@pytest.mark.parametrize("old, new", MUTATIONS, ids=[f"m{i}" for i in range(len(MUTATIONS))])
def test_emulated_broken_kernels_fail(emulated, monkeypatch, old, new):
    with _cuda_on_cpu.mutated(emulated, monkeypatch, old, new), pytest.raises(AssertionError):
        for seed in range(4):
            _compare(emulated.track_step, seed)


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device")
def test_gpu_track_step_is_bit_identical_to_numba():
    from idtfv.idt import _tracking_cuda

    for seed in range(3):
        _compare(_tracking_cuda.track_step, seed)
