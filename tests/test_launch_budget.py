"""Issue 14's launch budget: kernel launches per frame of the device extractor, counted on the emulator by
``bench/gpu_bench.py``'s ``bench_launches`` (the count ``docs/GPU.md`` reports for vtest), on a tiny synthetic clip.

Every launch costs the host a few microseconds whatever the GPU, so the fused kernels (a level's four histograms
in three launches, their blocks in one, the flow's median of both channels with the interleaving in one, the
presmoothing in one, the prior's upscale inside ``update_matrices``, the corner response in one) must show in the
count. The kernels' bits are checked in tests/test_histograms_cuda.py, tests/test_farneback_cuda.py and
tests/test_frame_cuda.py; here only the number of launches,
against the count the unfused kernels took for the same work (derived from kernels that were not fused: one
``add_blocks`` per level with moved tracks, one ``update_matrices`` per level and flow solve, one ``poly_rows``
per level and expansion, one ``select_cells`` per sampled level).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

import _cuda_on_cpu
from conftest import write_tiny_video
from idtfv.idt import IDTParams

PARAMS = IDTParams(device="cuda", track_length=6, scales=2)

#: Launches per unit of work before the fusions (commit 435c376) and now.
BEFORE = {"describe": 17,  # gradient_bins x3, flow_bins, hist_rows x4, hist_cols x4, patch_corners, gather_blocks x4
          "median": 3,  # median x2, merge2
          "presmooth": 3,  # u8_to_f32, gauss3_rows, gauss3_cols
          "upscale": 2,  # resize_f32 x2 per level of a solve but its coarsest
          "response": 2}  # sobel_grad, min_eig per sampled level
NOW = {"describe": 4, "median": 1, "presmooth": 1, "upscale": 0, "response": 1}
#: Kernels the fusions replaced: none may run any more.
GONE = {"gradient_bins", "flow_bins", "patch_corners", "median", "merge2", "u8_to_f32", "gauss3_rows", "gauss3_cols",
        "resize_f32", "sobel_grad", "min_eig"}


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
    described = k["add_blocks"]  # levels with moved tracks, per frame
    solves = k["update_matrices"]  # levels times flow solves, per frame
    expansions = k["poly_rows"]  # levels times expanded frames, per frame
    assert described == levels and solves >= levels and expansions >= levels  # every level worked, every frame
    upscales = solves - solves / levels  # every level of a solve but its coarsest
    hist = k["frame_bins"] + k["hist_rows"] + k["hist_cols"] + k["gather_blocks"]
    sampled = k["select_cells"]  # levels sampled, per frame
    work = {"describe": described, "median": solves, "presmooth": expansions, "upscale": upscales,
            "response": sampled}
    assert hist == NOW["describe"] * described  # 16 -> 4 per level (17 -> 4 with the patch corners)
    assert k["median2"] == NOW["median"] * solves and k["gauss3"] == NOW["presmooth"] * expansions
    assert k["corner_min_eig"] == NOW["response"] * sampled > 0
    before = out["launches_per_frame"] + sum((BEFORE[s] - NOW[s]) * n for s, n in work.items())
    assert out["launches_per_frame"] < 0.7 * before, (out["launches_per_frame"], before, k)
