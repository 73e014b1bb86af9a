"""Issue 14's launch budget: kernel launches per frame of the device extractor, counted on the emulator by
``bench/gpu_bench.py``'s ``bench_launches`` (the count ``docs/GPU.md`` reports for vtest), on a tiny synthetic clip.

Every launch costs the host a few microseconds whatever the GPU, so the fused kernels (the flow's median of both
channels with the interleaving in one, the presmoothing in one, the prior's upscale inside ``update_matrices``)
and the steps batched over the pyramid's levels (all levels' four histograms in three launches per frame, their
blocks in one, their cell sums in one, the pools' tracking step in two and their pop of finished tracks in four;
the dense sampling's response, maxima, occupied cells and selection in one each) must show in the count: a batched step that falls back to one launch per level, or a replaced kernel that
runs again, fails. The kernels' bits are checked in tests/test_histograms_cuda.py, tests/test_farneback_cuda.py,
tests/test_frame_cuda.py and tests/test_pool_cuda.py; here only the number of launches, against the count the
unfused, per-level kernels took for the same work (derived from kernels that were neither fused nor batched: one
``update_matrices`` per level and flow solve, one ``poly_rows`` per level and expansion; the clip's moving pattern
keeps live tracks on every level).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

import _cuda_on_cpu
from conftest import write_tiny_video
from idtfv.idt import IDTParams

PARAMS = IDTParams(device="cuda", track_length=6, scales=3)  # 96x72: 3 levels of at least the 32-px patch

#: Launches per unit of work before the fusions (commit 435c376) and now: per described level, per solve and
#: level, per expansion and level, per level of a solve but its coarsest, per sampled level.
BEFORE = {"describe": 18,  # gradient_bins x3, flow_bins, hist_rows x4, hist_cols x4, patch_corners, gather_blocks x4,
          # add_blocks
          "median": 3,  # median x2, merge2
          "presmooth": 3,  # u8_to_f32, gauss3_rows, gauss3_cols
          "upscale": 2,  # resize_f32 x2 per level of a solve but its coarsest
          "sampling": 5,  # sobel_grad, min_eig, mark_cells, select_cells, pool_add per sampled level (with live
          # points and new ones)
          "step": 2}  # pool_step, compact_step per level with live tracks
NOW = {"describe": 0, "median": 1, "presmooth": 1, "upscale": 0, "sampling": 0, "step": 0}
#: Launches per frame whatever the number of levels (up to 8), when every level has moved tracks: all levels'
#: histograms, blocks and cell sums, and the tracking step (7 per level before the levels were batched)...
PER_FRAME = {"frame_bins_levels": 1, "hist_rows_levels": 1, "hist_cols_levels": 1, "gather_blocks_levels": 1,
             "add_blocks_levels": 1, "pool_step_levels": 1, "compact_step_levels": 1}
#: ... and per sampled frame, when every level has live points: the response, the maxima, the occupied cells, the
#: selection and the new tracks of all levels (4 per level and a CuPy maximum before).
PER_SAMPLED_FRAME = {"corner_min_eig_levels": 1, "level_max": 1, "mark_cells_levels": 1, "select_cells_levels": 1,
                     "pool_add_levels": 1}
#: ... and per frame with finished tracks (on any level): the pop, pruning and packing of all levels (4 per level
#: with finished tracks before).
PER_POPPING_FRAME = {"flag_rows_levels", "pop_done_levels", "validate_rows_levels", "pack_rows_levels"}
#: Kernels the fusions replaced, and the one-level kernels of the steps batched over the levels: none may run.
GONE = {"gradient_bins", "flow_bins", "patch_corners", "median", "merge2", "u8_to_f32", "gauss3_rows", "gauss3_cols",
        "resize_f32", "sobel_grad", "min_eig", "frame_bins", "hist_rows", "hist_cols", "gather_blocks", "add_blocks",
        "corner_min_eig", "mark_cells", "select_cells", "pool_step", "compact_step", "flag_rows", "pop_done",
        "validate_rows", "pack_rows", "pool_add"}


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cuda_on_cpu_launches")


@pytest.fixture
def emulated(build_dir, monkeypatch):
    with _cuda_on_cpu.stand_in(build_dir, monkeypatch) as cp:
        yield cp


def _gpu_bench():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        return importlib.import_module("gpu_bench")
    finally:
        sys.path.pop(0)


def test_fused_kernels_cut_the_launches_per_frame(emulated, tmp_path):
    video = write_tiny_video(tmp_path / "clip.avi", frames=12, width=96, height=72, seed=3, motion=(2, 1))
    out = _gpu_bench().bench_launches(video, PARAMS, frames=10, repeat=1)
    k = out["by_kernel"]
    assert abs(sum(k.values()) - out["launches_per_frame"]) < 1e-9
    assert not GONE & set(k), GONE & set(k)
    levels = PARAMS.scales
    described = levels  # levels with moved tracks, per frame (all: the PER_FRAME check below needs some)
    solves = k["update_matrices"]  # levels times flow solves, per frame
    expansions = k["poly_rows"]  # levels times expanded frames, per frame
    assert solves >= levels and expansions >= levels  # every level worked, every frame
    upscales = solves - solves / levels  # every level of a solve but its coarsest
    sampled_frames = 1.0 / PARAMS.init_gap  # the sampling's share of the frames (every init_gap-th)
    work = {"describe": described, "median": solves, "presmooth": expansions, "upscale": upscales,
            "sampling": levels * sampled_frames, "step": described}
    assert {name: k.get(name) for name in PER_FRAME} == PER_FRAME, k
    assert {name: k.get(name) for name in PER_SAMPLED_FRAME} == {
        name: n * sampled_frames for name, n in PER_SAMPLED_FRAME.items()}, k
    popping = k.get("flag_rows_levels", 0)  # the share of frames with finished tracks (L = 6 of 10 frames: some)
    assert 0 < popping <= 1 and all(k.get(name, 0) == popping for name in PER_POPPING_FRAME - {"pack_rows_levels"})
    assert k.get("pack_rows_levels", 0) <= popping  # packed when some finished track was kept
    assert k["median2"] == NOW["median"] * solves and k["gauss3"] == NOW["presmooth"] * expansions
    batched = sum(PER_FRAME.values()) + sum(PER_SAMPLED_FRAME.values()) * sampled_frames + sum(
        k.get(name, 0) for name in PER_POPPING_FRAME)  # the per-level pops before are not counted in `before`
    before = out["launches_per_frame"] - batched + sum((BEFORE[s] - NOW[s]) * n for s, n in work.items())
    assert out["launches_per_frame"] < 0.65 * before, (out["launches_per_frame"], before, k)
