"""The device track pool (idt/tracking_cuda.py, kernels in idt/_tracking_cuda.py) against the host TrackPool.

Without a GPU the CUDA C runs on the CPU through ``tests/_cuda_on_cpu.py``. The references are independent of the
device code: :class:`idtfv.idt.tracking.TrackPool` with the Numba kernels (itself checked against a naive pool in
tests/test_extractor_kernels.py), ``_tracking_nb.validate_tracks`` for the pruning and
``descriptors.cell_descriptor_rows`` for the gathering. What is checked:

- random sequences of add / step / store / pop / release: after every operation the two pools' arrays (points,
  steps, cell sums, step counts, birth numbers), live order and free stack are bit-identical, so are the rows a
  step returns and their points before the move, the popped tracks (in birth order) and, for ``pop_validated``,
  the pruned and kept rows;
- capacity growth, birth order of popped tracks when rows are reused, the step-before-pop guard;
- the pruning kernel against Numba bit for bit, on tracks planted to fail each test (static, erratic, a jump, no
  camera-compensated motion) and tracks that pass;
- broken kernels (the free stack's order, a cell index, the float32 rounding of the mean, ...) must fail;
- the steps batched over the levels (``step_levels``, ``store_levels``) against each host pool's, bit for bit,
  with broken batchings that must fail;
- ``extract(device="cuda")``: the device pools are used, the output is the same with threads, and no live-track
  state comes back: every download of the run is the levels' step counts, a pruning's count, the kept rows (their
  number equals the trajectories'), the dense sampling's cell bytes or the camera's flow-match vectors.

The ``gpu`` tests run the pool comparisons on a real device.
"""

from __future__ import annotations

import ast
import importlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import _cuda_on_cpu
from idtfv.idt import _tracking_nb as nb
from idtfv.idt import descriptors as desc_mod
from idtfv.idt.device import cuda_available
from idtfv.idt.tracking import TrackPool

NAME = "idtfv.idt._tracking_cuda"
#: Device modules imported over the stand-in cupy by these tests (removed again afterwards).


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cuda_on_cpu_pool")


@pytest.fixture
def emulated(build_dir, monkeypatch):
    """``idtfv.idt._tracking_cuda`` (and the other kernel modules, on use) over the stand-in cupy, all forgotten
    afterwards (``_cuda_on_cpu.stand_in``)."""
    with _cuda_on_cpu.stand_in(build_dir, monkeypatch):
        yield importlib.import_module(NAME)


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _same(a, b, what):
    a, b = np.asarray(a), _host(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (what, a.dtype, b.dtype, a.shape, b.shape)
    assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), what


def _launches(cp):
    """Kernel launches so far (the stand-in cupy counts them; a real CuPy does not: None)."""
    return sum(cp.launches.values()) if hasattr(cp, "launches") else None


def _launched(cp, before, n):
    """``n`` launches since ``before`` (checked on the emulator only)."""
    return before is None or _launches(cp) - before == n


def _same_state(cpu: TrackPool, dev, what=""):
    for name in ("pos", "disp", "desc", "index", "birth"):
        _same(getattr(cpu, name), getattr(dev, name), f"{what}: {name}")
    _same(cpu.live(), dev.live(), f"{what}: live order")
    _same(cpu._free, dev.free_rows(), f"{what}: free stack")
    _same(cpu.current_points(), dev.current_points(), f"{what}: current points")
    some = cpu._free[-3:]  # free rows too (index -1: the last point, as NumPy's negative index reads)
    _same(cpu.current_points(some), dev.current_points(some), f"{what}: current points of free rows")
    assert len(cpu) == len(dev) and cpu.capacity == dev.capacity


#: The pruning's thresholds for the random sequences (they keep some finished tracks and drop others).
PRUNE = dict(min_var=np.sqrt(3.0), max_var=12.0, max_dis=4.0, max_dis_ratio=0.7, min_camera_disp=0.3, camera=True)


def _validate_cpu(pos, disp, scale, p):
    n = len(pos)
    meta, traj, keep = np.zeros((n, 6), np.float32), np.zeros((n, 2 * disp.shape[1]), np.float32), np.zeros(n, bool)
    nb.validate_tracks(pos, disp, float(scale), p["min_var"], p["max_var"], p["max_dis"], p["max_dis_ratio"],
                       p["min_camera_disp"], bool(p["camera"]), meta, traj, keep)
    return meta, traj, keep


def run_sequence(dev_pool_class, cp, seed, *, steps=40, h=23, w=31, length=6, nt=3, D=7):
    """A random add / step / store / pop / release sequence on a host and a device pool, compared after every
    operation. Returns counts of what happened (for the non-vacuity checks)."""
    rng = np.random.default_rng(seed)
    cpu = TrackPool(length, D, nt, capacity=16)
    dev = dev_pool_class(length, D, nt, capacity=16)
    seen = dict(grown=0, died=0, finished=0, kept=0, pruned=0, released=0)
    scale = float(rng.choice([1.0, 1.5, 2.25]))

    def points(k):
        p = np.stack([rng.uniform(0.5, w - 0.5, k), rng.uniform(0.5, h - 0.5, k)], 1).astype(np.float32)
        p[: k // 4] = np.floor(p[: k // 4]) + np.float32(0.5)  # ties at x.5
        return p

    for it in range(steps):
        k = int(rng.choice([0, 3, 9, 20, 45]))
        before = cpu.capacity
        pts = points(k)
        cpu.add(pts)
        dev.add(pts)
        seen["grown"] += cpu.capacity > before
        _same_state(cpu, dev, f"add {it}")
        if it % 7 == 3 and len(cpu) > 4:  # release a few live rows (not in row order)
            rows = rng.choice(cpu.live(), 3, replace=False)
            cpu.release(rows)
            dev.release(cp.asarray(rows))
            seen["released"] += 3
            _same_state(cpu, dev, f"release {it}")
        flow = (rng.normal(size=(h, w, 2)) * rng.choice([0.7, 2.5])).astype(np.float32)
        flow_w = (flow * np.float32(0.8) + rng.normal(size=(h, w, 2)).astype(np.float32) * np.float32(0.3))
        n_live = len(cpu)
        rows_c, prev_c = cpu.step(flow, flow_w)
        rows_d, prev_d = dev.step(cp.asarray(flow), cp.asarray(flow_w))
        seen["died"] += n_live - len(rows_c)
        _same(rows_c, rows_d, f"step {it}: rows")
        _same(prev_c, prev_d, f"step {it}: points before the move")
        _same_state(cpu, dev, f"step {it}")
        blocks = rng.uniform(0, 1, (len(rows_c), D)).astype(np.float32)
        cpu.store_descriptors(rows_c, blocks)
        dev.store_descriptors(rows_d, cp.asarray(blocks))
        _same_state(cpu, dev, f"store {it}")
        want = cpu.pop_finished()
        seen["finished"] += len(want[0])
        if it % 2:
            for name, a, b in zip(("pos", "disp", "desc"), want, dev.pop_finished()):
                _same(a, b, f"pop {it}: {name}")
        else:
            meta, traj, keep = _validate_cpu(want[0], want[1], scale, PRUNE)
            got = dev.pop_validated(scale, **PRUNE)
            seen["kept"] += int(keep.sum())
            seen["pruned"] += int((~keep).sum())
            if not keep.any():
                assert got is None, f"pop {it}: rows came back though none was kept"
            else:
                assert got is not None, f"pop {it}: no rows came back though {keep.sum()} were kept"
                for name, a, b in zip(("meta", "traj", "desc"), (meta[keep], traj[keep], want[2][keep]), got):
                    _same(a, b, f"pop_validated {it}: {name}")
        _same_state(cpu, dev, f"pop {it}")
    return seen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_emulated_device_pool_equals_trackpool_step_by_step(emulated, seed):
    from idtfv.idt.tracking_cuda import DeviceTrackPool

    seen = run_sequence(DeviceTrackPool, sys.modules["cupy"], seed)
    assert all(v > 0 for v in seen.values()), seen  # growth, deaths, finished, kept, pruned, released all happened


def test_emulated_popped_tracks_come_in_birth_order_from_reused_rows(emulated):
    from idtfv.idt.tracking_cuda import DeviceTrackPool

    h, w, L = 20, 30, 3
    pool = DeviceTrackPool(L, 2, 1, capacity=16)
    first = np.array([[x + 0.25, 10.0] for x in range(2, 26, 2)], np.float32)  # 12 tracks, rows 0..11
    pool.add(first)
    kill = np.zeros((h, w, 2), np.float32)
    kill[10, : 14, 0] = -40.0  # the tracks left of x = 14 leave the frame
    rows, _ = pool.step(kill, kill)
    assert len(rows) == 6 and pool.pop_finished()[0].shape == (0, L + 1, 2)
    second = np.array([[x + 0.75, 5.0] for x in range(1, 9)], np.float32)  # reuse the freed rows 0..5, then 12, 13
    pool.add(second)
    assert sorted(_host(pool.live())[6:].tolist()) == [0, 1, 2, 3, 4, 5, 12, 13]
    still = np.zeros((h, w, 2), np.float32)
    for _ in range(L):
        pool.step(still, still)
        pos, _, _ = pool.pop_finished()
        if len(pos):
            break
    # the older tracks first (the 6 that survived, in their birth order), although their rows are larger
    assert len(pos) == 6 and np.array_equal(pos[:, 0], first[6:])
    pool.step(still, still)  # the second batch had one step less
    pos, _, _ = pool.pop_finished()
    assert np.array_equal(pos[:, 0], second)


def test_emulated_capacity_grows_as_trackpool(emulated):
    from idtfv.idt.tracking_cuda import DeviceTrackPool

    cpu, dev = TrackPool(4, 3, 2, capacity=16), DeviceTrackPool(4, 3, 2, capacity=16)
    rng = np.random.default_rng(5)
    for k in (10, 10, 1, 40, 0, 100):
        pts = rng.uniform(1, 15, (k, 2)).astype(np.float32)
        cpu.add(pts)
        dev.add(pts)
        _same_state(cpu, dev, f"add {k}")
    assert dev.capacity > 100 and len(dev) == 161


def test_emulated_step_before_pop_is_refused(emulated):
    from idtfv.idt.tracking_cuda import DeviceTrackPool

    pool = DeviceTrackPool(1, 2, 1, capacity=16)
    pool.add(np.array([[5.0, 5.0]], np.float32))
    still = np.zeros((10, 10, 2), np.float32)
    pool.step(still, still)
    with pytest.raises(RuntimeError, match="pop_finished"):
        pool.step(still, still)
    assert pool.pop_finished()[0].shape == (1, 2, 2)
    assert pool.step(still, still)[0].shape == (0,)  # empty pool: nothing to do


def _planted_tracks(seed=0, L=15):
    """Finished tracks of five kinds, each failing one pruning test or passing: (pos, disp, expected keep)."""
    rng = np.random.default_rng(seed)
    t = np.arange(L + 1, dtype=np.float32)[:, None]
    kinds = []
    for _ in range(12):
        start = rng.uniform(20, 60, 2).astype(np.float32)
        v = rng.uniform(0.6, 1.4, 2).astype(np.float32) * rng.choice([-1, 1], 2)
        good = start + t * v + rng.normal(0, 0.2, (L + 1, 2)).astype(np.float32)
        kinds.append((good, True))  # moves steadily
        kinds.append((start + rng.normal(0, 0.1, (L + 1, 2)).astype(np.float32), False))  # static
        kinds.append((start + t * v * np.float32(25), False))  # erratic: std over max_var
        jump = start + t * v * np.float32(0.15) + rng.normal(0, 0.02, (L + 1, 2)).astype(np.float32)
        jump[L // 2:] += np.float32(25)  # one step of ~35 px: over max_dis and 0.7 of the length
        kinds.append((jump, False))
    pos = np.stack([k[0] for k in kinds]).astype(np.float32)
    disp = np.diff(pos, axis=1).astype(np.float32)
    expect = np.array([k[1] for k in kinds])
    # no camera-compensated motion: the points move but no compensated step is over min_camera_disp (0.25),
    # though their sum is
    still = slice(0, len(kinds), 8)
    disp[still] = np.float32(0.15) * np.sign(disp[still])
    expect[still] = False
    return pos, disp, expect


def _compare_validation(mod, seed=0, L=15):
    import cupy as cp

    pos, disp, expect = _planted_tracks(seed, L)
    params = dict(min_var=np.sqrt(3.0), max_var=50.0, max_dis=20.0, max_dis_ratio=0.7, min_camera_disp=0.25)
    for scale in (1.0, 1.4142135623730951, 2.0):
        for camera in (True, False):
            meta_c, traj_c, keep_c = _validate_cpu(pos, disp, scale, dict(params, camera=camera))
            if scale == 1.0 and camera:
                assert np.array_equal(keep_c, expect)  # planted truth: each test fires on its kind
            n = len(pos)
            meta, traj, keep = (cp.zeros((n, 6), cp.float32), cp.zeros((n, 2 * L), cp.float32),
                                cp.zeros(n, cp.int32))
            mod.launch("validate_rows", n, (cp.asarray(np.arange(n, dtype=np.int64)), np.int32(n), cp.asarray(pos),
                                            cp.asarray(disp), np.int32(L), np.float64(scale),
                                            *(np.float64(params[k]) for k in ("min_var", "max_var", "max_dis",
                                                                              "max_dis_ratio", "min_camera_disp")),
                                            np.int32(camera), meta, traj, keep))
            _same(keep_c, _host(keep).astype(bool), f"keep, scale {scale}")
            _same(meta_c[keep_c], _host(meta)[keep_c], f"meta, scale {scale}")
            _same(traj_c[keep_c], _host(traj)[keep_c], f"traj, scale {scale}")


def test_emulated_pruning_is_bit_identical_to_numba(emulated):
    _compare_validation(emulated)


def _compare_gather():
    import cupy as cp

    from idtfv.idt.tracking_cuda import gather_blocks

    rng = np.random.default_rng(3)
    h, w = 41, 57
    gray = rng.integers(0, 256, (h, w)).astype(np.uint8)
    flow = (rng.normal(size=(h, w, 2)) * 2).astype(np.float32)
    layout = desc_mod.DescriptorLayout(patch=16)
    pts = np.stack([rng.uniform(0, w, 300), rng.uniform(0, h, 300)], 1).astype(np.float32)
    pts[:50] = np.floor(pts[:50]) + np.float32(0.5)  # ties: rint to even
    want = desc_mod.cell_descriptor_rows(desc_mod.frame_histograms(gray, flow, layout=layout), pts, layout=layout)
    hists = desc_mod.frame_histograms(gray, flow, layout=layout, device="cuda")
    got = gather_blocks(hists, cp.asarray(pts), layout=layout)
    _same(want, got, "blocks")
    assert gather_blocks(hists, cp.zeros((0, 2), cp.float32), layout=layout).shape == (0, want.shape[1])


def test_emulated_gathered_blocks_equal_the_cpu(emulated):
    _compare_gather()


def _compare_store_levels(n_pools=10, rounds=3, seed=5):
    """``store_levels`` of several device pools (the levels: 10 take two launches) against each host pool's
    ``store_descriptors``, bit for bit, after each of a few steps; pools with no moved rows among them."""
    import cupy as cp

    from idtfv.idt.tracking_cuda import DeviceTrackPool, store_levels

    rng = np.random.default_rng(seed)
    L, nt, D, h, w = 6, 3, 5, 19, 27
    cpus = [TrackPool(L, D, nt, capacity=16) for _ in range(n_pools)]
    devs = [DeviceTrackPool(L, D, nt, capacity=16) for _ in range(n_pools)]
    stored = 0
    for it in range(rounds):
        moved = []
        for k, (cpu, dev) in enumerate(zip(cpus, devs)):
            pts = np.stack([rng.uniform(1, w - 1, 3 * k), rng.uniform(1, h - 1, 3 * k)], 1).astype(np.float32)
            cpu.add(pts)
            dev.add(pts)
            flow = rng.normal(size=(h, w, 2)).astype(np.float32) * np.float32(0.5)
            rows_c, _ = cpu.step(flow, flow)
            rows_d, _ = dev.step(cp.asarray(flow), cp.asarray(flow))
            moved.append((rows_c, rows_d))
        blocks = rng.uniform(0, 1, (sum(len(r) for r, _ in moved), D)).astype(np.float32)
        first = 0
        for cpu, (rows_c, _) in zip(cpus, moved):
            cpu.store_descriptors(rows_c, blocks[first:first + len(rows_c)])
            first += len(rows_c)
        launches = _launches(cp)
        store_levels(devs, [r for _, r in moved], cp.asarray(blocks))
        assert _launched(cp, launches, 2)  # 8 pools a launch
        stored += len(blocks)
        for k, (cpu, dev) in enumerate(zip(cpus, devs)):
            _same_state(cpu, dev, f"store_levels {it}, pool {k}")
            cpu.pop_finished()
            dev.pop_finished()
    assert stored > 100 and not len(moved[0][0])  # not vacuous; pool 0 moved nothing


def test_emulated_store_levels_equals_each_pool_alone(emulated):
    _compare_store_levels()


def test_emulated_store_levels_is_checked(emulated):
    import cupy as cp

    from idtfv.idt.tracking_cuda import DeviceTrackPool, store_levels

    pools = [DeviceTrackPool(6, 5, 3, capacity=4), DeviceTrackPool(6, 7, 3, capacity=4)]
    rows = [cp.zeros(1, np.int64), cp.zeros(0, np.int64)]
    with pytest.raises(ValueError, match="same length, desc_dim"):
        store_levels(pools, rows, cp.zeros((1, 5), cp.float32))
    with pytest.raises(ValueError, match="expected 1 blocks"):
        store_levels(pools, rows, cp.zeros((2, 5), cp.float32))


def _compare_step_levels(n_pools=10, rounds=12, seed=7):
    """``step_levels`` and ``pop_levels`` of several device pools (10: two runs of 8), each with its own flow size
    and scale, against each host pool's ``step`` and ``pop_finished`` with the Numba pruning, bit for bit (the rows,
    their points before the move, every array, the live order, the free stack, the finished count, the kept rows),
    round after round with new points, deaths, finished tracks kept and pruned, and pools without live or finished
    tracks among them."""
    import cupy as cp

    from idtfv.idt.tracking_cuda import DeviceTrackPool, add_levels, pop_levels, step_levels

    rng = np.random.default_rng(seed)
    L, nt, D = 4, 2, 3
    sizes = [(23 - k, 31 - 2 * k) for k in range(n_pools)]
    cpus = [TrackPool(L, D, nt, capacity=8) for _ in range(n_pools)]
    devs = [DeviceTrackPool(L, D, nt, capacity=8) for _ in range(n_pools)]
    seen = dict(moved=0, died=0, finished=0, idle=0, kept=0, pruned=0, grown=0)
    scales = [1.0 + 0.25 * k for k in range(n_pools)]
    for it in range(rounds):
        flows, flows_w, new = [], [], []
        for k, ((h, w), cpu) in enumerate(zip(sizes, cpus)):
            m = 0 if k == 0 or not (k + it) % 4 else int(rng.integers(0, 12))  # some pools get none; pool 0 never
            new.append(np.stack([rng.uniform(0.5, w - 0.5, m), rng.uniform(0.5, h - 0.5, m)], 1).astype(np.float32))
            cpu.add(new[-1])
        if it % 2:  # every pool's new points in one upload and one launch per 8 pools with points
            launches = _launches(cp)
            add_levels(devs, new)
            assert _launched(cp, launches, -(-sum(len(p) > 0 for p in new) // 8))
        else:
            for dev, pts in zip(devs, new):
                dev.add(pts)
        for k, ((h, w), cpu, dev) in enumerate(zip(sizes, cpus, devs)):
            _same_state(cpu, dev, f"add {it}, pool {k}")
            seen["grown"] += cpu.capacity > 8
            flows.append((rng.normal(size=(h, w, 2)) * 1.5).astype(np.float32))
            flows_w.append((rng.normal(size=(h, w, 2)) * 0.5).astype(np.float32))
        launches, active = _launches(cp), sum(len(d) > 0 for d in devs)
        got = step_levels(devs, [cp.asarray(f) for f in flows], [cp.asarray(f) for f in flows_w])
        assert _launched(cp, launches, 2 * -(-active // 8))  # per 8 pools with live tracks
        for k, (cpu, dev) in enumerate(zip(cpus, devs)):
            n_live = len(cpu)
            rows_c, prev_c = cpu.step(flows[k], flows_w[k])
            rows_d, prev_d = got[k]
            _same(rows_c, rows_d, f"step_levels {it}, pool {k}: rows")
            _same(prev_c, prev_d, f"step_levels {it}, pool {k}: points before the move")
            _same_state(cpu, dev, f"step_levels {it}, pool {k}")
            finished = int((cpu.index[cpu.live()] >= L).sum())
            assert dev._n_done == finished, (it, k, dev._n_done, finished)
            seen["moved"] += len(rows_c)
            seen["died"] += n_live - len(rows_c)
            seen["finished"] += finished
            seen["idle"] += n_live == 0
        launches = _launches(cp)
        got = pop_levels(devs, scales, **PRUNE)
        assert not any(d._n_done for d in devs)  # none left
        assert launches is None or _launches(cp) - launches <= 4 * 2  # 4 launches per 8 pools popped
        for k, cpu in enumerate(cpus):
            pos, disp, desc = cpu.pop_finished()
            meta, traj, keep = _validate_cpu(pos, disp, scales[k], PRUNE)
            seen["kept"] += int(keep.sum())
            seen["pruned"] += int((~keep).sum())
            if not keep.any():
                assert got[k] is None, f"pop_levels {it}, pool {k}: rows came back though none was kept"
                continue
            assert got[k] is not None, f"pop_levels {it}, pool {k}: no rows came back though {keep.sum()} were kept"
            for name, a, b in zip(("meta", "traj", "desc"), (meta[keep], traj[keep], desc[keep]), got[k]):
                _same(a, b, f"pop_levels {it}, pool {k}: {name}")
            _same_state(cpu, devs[k], f"pop_levels {it}, pool {k}")
    assert all(v > 10 for v in seen.values()), seen  # not vacuous
    return seen


def test_emulated_step_levels_equals_each_pool_alone(emulated):
    import cupy as cp

    from idtfv.idt.tracking_cuda import DeviceTrackPool, step_levels

    _compare_step_levels()
    pools = [DeviceTrackPool(4, 3, 2, capacity=8) for _ in range(10)]
    for k, pool in enumerate(pools):
        pool.add(np.float32([[3.5 + k, 4.0], [5.0, 6.5]]))
    flows = [cp.zeros((12, 15, 2), cp.float32)] * 10
    before = sum(cp.launches.values())
    step_levels(pools, flows, flows)
    assert sum(cp.launches.values()) - before == 4  # pool_step_levels and compact_step_levels per 8 pools
    assert step_levels([DeviceTrackPool(4, 3, 2)], flows[:1], flows[:1])[0][0].shape == (0,)  # no live track
    pools[3]._n_done = 1  # as after a step with a finished track not popped
    with pytest.raises(RuntimeError, match="were not popped"):
        step_levels(pools, flows, flows)
    with pytest.raises(ValueError, match="one flow and one compensated flow per pool"):
        step_levels(pools, flows[:2], flows)
    from idtfv.idt.tracking_cuda import pop_levels

    with pytest.raises(ValueError, match="one scale per pool"):
        pop_levels(pools, [1.0], **PRUNE)
    from idtfv.idt.tracking_cuda import add_levels

    with pytest.raises(ValueError, match="the new points of the 10 pools"):
        add_levels(pools, [np.zeros((1, 2), np.float32)])


#: Broken batched steps and pops (each pool alone is right): a pool's finished count with the pools' before it,
#: the points before the move one slot off, every pool pruned at the first pool's scale, a pool's new points read
#: one point early.
STEP_MUTATIONS = [
    ("idt_pool_add_at(pts + 2 * (long long)first,",
     "idt_pool_add_at(pts + 2 * (long long)(first > 0 ? first - 1 : 0),"),
    ("long long dbase = first > 0 ? dsum[first - 1] : 0;\n    idt_compact_at",
     "long long dbase = 0;\n    idt_compact_at"),
    ("hs[l], ws[l], prev + 2 * first,", "hs[l], ws[l], prev + 2 * (first > 0 ? first - 1 : 0),"),
    ("L, scales[l], min_var", "L, scales[0], min_var"),
]


@pytest.mark.parametrize("old, new", STEP_MUTATIONS, ids=[f"m{i}" for i in range(len(STEP_MUTATIONS))])
def test_emulated_broken_step_levels_fails(emulated, monkeypatch, old, new):
    with _cuda_on_cpu.mutated(emulated, monkeypatch, old, new), pytest.raises(AssertionError):
        _compare_step_levels()


#: Broken batched sums (each pool alone is right): a level's blocks read from the wrong rows of the buffer.
LEVEL_MUTATIONS = [("blocks + first, desc[l], t - first", "blocks + first / 2, desc[l], t - first")]


@pytest.mark.parametrize("old, new", LEVEL_MUTATIONS, ids=[f"m{i}" for i in range(len(LEVEL_MUTATIONS))])
def test_emulated_broken_store_levels_fails(emulated, monkeypatch, old, new):
    with _cuda_on_cpu.mutated(emulated, monkeypatch, old, new), pytest.raises(AssertionError):
        _compare_store_levels()


MUTATIONS = [
    ("free_rows[n_free + n_dead - 1 - dead_rank] = live[k];", "free_rows[n_free + dead_rank] = live[k];"),
    ("done[k] = (ok && i + 1 >= L) ? 1 : 0;", "done[k] = (ok && i + 1 > L) ? 1 : 0;"),
    ("if (!ok) {\n        index[r] = -1;", "if (!ok) {\n        index[r] = i;"),
    ("long long r = free_rows[n_free - 1 - j];", "long long r = free_rows[j];"),
    ("birth[r] = births + j;", "birth[r] = births;"),
    ("for (int m = 0; m < ntd; ++m) o[m] = 0.0f;", ""),
    ("int c = s >= 0 ? s / per_cell :", "int c = s >= 0 ? (s + 1) / per_cell :"),
    ("free_rows[n_free + n_done - 1 - rank] = r;", "free_rows[n_free + rank] = r;"),
    ("live_out[k - c] = r;", "live_out[k - c] = live[0];"),
    ("if (flags[k]) live_out[csum[k] - 1] = live[k];", "if (flags[k]) live_out[csum[k] - 1] = live[0];"),
    ("mx += (double)(float)((double)p[2 * i] * scale);", "mx += (double)p[2 * i] * scale;"),
    ("if (vx < min_var && vy < min_var) return;", "if (vx < min_var || vy < min_var) return;"),
    ("if (cur_max > max_dis && cur_max > length * max_dis_ratio) return;", "if (cur_max > max_dis) return;"),
    ("if (camera && dmax <= min_camera_disp) return;", "if (camera && dsum <= min_camera_disp) return;"),
    ("vx = sqrt(vx / (double)npts);", "vx = sqrt(vx / (double)L);"),
    ("t[2 * i] = (float)((double)q[2 * i] * scale * inv);", "t[2 * i] = (float)((double)q[2 * i] * inv);"),
    ("o[6 + 2 * L + m] = s[m] / per_cell;", "o[6 + 2 * L + m] = s[m];"),
]


def _check_all(mod):
    from idtfv.idt.tracking_cuda import DeviceTrackPool

    for seed in range(3):
        run_sequence(DeviceTrackPool, sys.modules["cupy"], seed)
    _compare_validation(mod)


@pytest.mark.parametrize("old, new", MUTATIONS, ids=[f"m{i}" for i in range(len(MUTATIONS))])
def test_emulated_broken_kernels_fail(emulated, monkeypatch, old, new):
    with _cuda_on_cpu.mutated(emulated, monkeypatch, old, new), pytest.raises(AssertionError):
        _check_all(emulated)


def test_emulated_unbroken_kernels_pass_the_mutation_check(emulated):
    _check_all(emulated)  # the check the broken kernels fail


# ---------------------------------------------------------------------------------------------- the extractor
def _clip(frames=16):
    from conftest import tiny_frames

    return tiny_frames(frames=frames, width=96, height=72, motion=(2, 1))


def _downloads(monkeypatch, cp):
    """Record every ``cupy.asnumpy`` of the run: (calling module, function, bytes)."""
    log = []
    real = cp.asnumpy

    def asnumpy(a, *args, **kwargs):
        out = real(a, *args, **kwargs)
        f = sys._getframe(1)
        log.append((f.f_globals.get("__name__"), f.f_code.co_name, int(np.asarray(out).nbytes)))
        return out

    monkeypatch.setattr(cp, "asnumpy", asnumpy)
    return log


def test_emulated_extract_keeps_live_tracks_on_the_device(emulated, monkeypatch):
    from idtfv.idt import IDTParams, extract
    from idtfv.idt import tracking_cuda

    cp = sys.modules["cupy"]
    calls = {"pop_levels": 0, "track_step": 0, "gather_all": 0}
    real_pop = tracking_cuda.pop_levels

    def pop_levels(*args, **kwargs):
        calls["pop_levels"] += 1
        return real_pop(*args, **kwargs)

    monkeypatch.setattr(tracking_cuda, "pop_levels", pop_levels)
    from idtfv.idt import _histograms_cuda

    for owner, name in ((emulated, "track_step"), (_histograms_cuda, "gather_all")):  # the host pools' paths
        monkeypatch.setattr(owner, name, lambda *a, _n=name, **k: calls.__setitem__(_n, calls[_n] + 1))
    params = IDTParams(track_length=9, scales=2)
    log = _downloads(monkeypatch, cp)
    gpu = extract(_clip(), params.replace(device="cuda"))
    frames = len(_clip())
    assert calls["pop_levels"] == frames - 1 and calls["track_step"] == 0 and calls["gather_all"] == 0
    L, D = params.track_length, 132
    row = (6 + 2 * L + params.nt_cells * D) * 4
    by_kind: dict = {}
    for module, func, nbytes in log:
        by_kind.setdefault((module, func), []).append(nbytes)
    allowed = {("idtfv.idt.tracking_cuda", "step_levels"), ("idtfv.idt.tracking_cuda", "_kept_counts"),
               ("idtfv.idt.tracking_cuda", "pop_levels"), ("idtfv.idt._frame_cuda", "dense_sample_levels"),
               ("idtfv.idt._frame_cuda", "flow_at")}
    assert set(by_kind) <= allowed, set(by_kind) - allowed
    # the levels' steps: two counts per level with live tracks (16 bytes each), all levels in one download per frame
    steps = by_kind[("idtfv.idt.tracking_cuda", "step_levels")]
    assert set(steps) == {2 * 16} and len(steps) == frames - 1
    # the levels' pop when tracks finished: the kept flags' running count (8 bytes per finished track), then the
    # kept rows of all levels in one transfer, as many as the trajectories
    counts = by_kind[("idtfv.idt.tracking_cuda", "_kept_counts")]
    rows = by_kind[("idtfv.idt.tracking_cuda", "pop_levels")]
    assert len(counts) >= len(rows) > 0 and all(b % 8 == 0 for b in counts) and all(b % row == 0 for b in rows)
    assert sum(rows) == len(gpu) * row and len(gpu) > 50
    # the sampling: one byte per grid cell of the levels, both in one download (first frame and every init_gap);
    # the camera: up to flow_matches flow vectors
    cells = (96 // 5) * (72 // 5) + (68 // 5) * (51 // 5)
    assert set(by_kind[("idtfv.idt._frame_cuda", "dense_sample_levels")]) == {cells}
    assert max(by_kind.get(("idtfv.idt._frame_cuda", "flow_at"), [0])) <= 1000 * 8
    # in all: far less than the live tracks' points once per level and frame (the host pools' traffic)
    assert sum(steps) + sum(counts) < 0.05 * len(gpu) * row


def test_emulated_extract_device_pools_meet_the_parity_bar_with_threads(emulated):
    from idtfv.idt import IDTParams, extract

    params = IDTParams(track_length=9, scales=2)
    drawn = {"cpu": [], "cuda": []}

    def on_tracks(device):
        return lambda frame_num, gray, pos, index: drawn[device].append((frame_num, pos, index))

    cpu = extract(_clip(), params, on_tracks=on_tracks("cpu"))
    one = extract(_clip(), params.replace(device="cuda"), on_tracks=on_tracks("cuda"))
    # --draw's live tracks come back from the device pools: the same tracks, points to float rounding
    assert len(drawn["cpu"]) == len(drawn["cuda"]) == len(_clip()) - 1
    for (f_c, pos_c, index_c), (f_d, pos_d, index_d) in zip(drawn["cpu"], drawn["cuda"]):
        assert f_c == f_d and isinstance(pos_d, np.ndarray) and np.array_equal(index_c, index_d)
        np.testing.assert_allclose(pos_d[:, : index_d.max() + 1], pos_c[:, : index_c.max() + 1], atol=1e-3)
    two = extract(_clip(), params.replace(device="cuda", threads=2))
    assert len(cpu) > 50 and abs(len(one) - len(cpu)) <= 0.01 * len(cpu)
    for kind in ("meta", "traj", "hog", "hof", "mbhx", "mbhy"):
        _same(getattr(one, kind), getattr(two, kind), kind)  # threads change no byte
        if kind != "meta":
            assert np.corrcoef(getattr(cpu, kind).mean(0), getattr(one, kind).mean(0))[0, 1] > 0.999, kind
    assert np.array_equal(cpu.hog, one.hog)  # same points tracked: the HOG rows (no flow in them) are the CPU's


# ---------------------------------------------------------------------------------------------- on a device
@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device")
def test_gpu_device_pool_equals_trackpool_step_by_step():
    from idtfv.idt import _tracking_cuda

    _check_all(_tracking_cuda)  # random pool sequences, the pruning
    _compare_gather()
    _compare_store_levels()  # every level's steps at once
    _compare_step_levels()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
def test_tracking_cuda_source_compiles_with_nvcc(tmp_path):
    module = Path(__file__).resolve().parents[1] / "idt" / "_tracking_cuda.py"
    source = next(ast.literal_eval(n.value) for n in ast.parse(module.read_text()).body
                  if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "_SOURCE")
    ptx = _cuda_on_cpu.nvcc_ptx(source, tmp_path)
    for name in ("track_points", "pool_step", "compact_step", "pool_step_levels", "compact_step_levels", "pool_add",
                 "add_blocks", "add_blocks_levels", "flag_rows", "pop_done", "compact_keep", "validate_rows",
                 "pack_rows", "flag_rows_levels", "pop_done_levels", "validate_rows_levels", "pack_rows_levels",
                 "pool_add_levels"):
        assert f".entry {name}(" in ptx
