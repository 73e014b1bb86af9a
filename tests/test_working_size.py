"""The extractor's default working width (issue 11): frames wider than 640 px are shrunk first, so memory is
bounded for any frame size; positions are in the working frame's pixels and info says the source size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from idtfv.errors import ParameterError
from idtfv.idt.params import WORKING_WIDTH, IDTParams


def _frames(n, w, h):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w), dtype=np.uint8) for _ in range(n)]


def test_working_width_option():
    assert WORKING_WIDTH == 640 and IDTParams().resize_width is None
    assert IDTParams().working_width == 640
    assert IDTParams(resize_width=0).working_width is None  # 0: keep the full size
    assert IDTParams(resize_width=1280).working_width == 1280
    with pytest.raises(ParameterError, match="0 \\(keep the full size\\)"):
        IDTParams(resize_width=8)
    assert "resize_width" in IDTParams().to_dict() and IDTParams().to_dict()["resize_width"] is None


def test_wide_frames_are_shrunk_and_info_says_from_what():
    from idtfv.idt.extractor import iter_trajectories

    params = IDTParams(track_length=3, nt_cells=3, scales=1, camera_motion=False)
    info = list(iter_trajectories(_frames(5, 800, 60), params))[-1].info
    assert (info["width"], info["height"]) == (640, 48)  # round(60 * 640 / 800)
    assert (info["source_width"], info["source_height"]) == (800, 60)
    info = list(iter_trajectories(_frames(5, 800, 60), params.replace(resize_width=0)))[-1].info
    assert (info["width"], info["height"]) == (800, 60) and "source_width" not in info
    info = list(iter_trajectories(_frames(5, 320, 60), params))[-1].info  # narrow: untouched, info as before
    assert (info["width"], info["height"]) == (320, 60) and "source_width" not in info


def test_box_file_is_in_source_pixels(tmp_path):
    """A LEAR box file covers the source frame; on shrunk frames the mask covers the same part of the image."""
    from idtfv.idt.extractor import _HumanMasks

    boxes = tmp_path / "boxes.txt"
    boxes.write_text("0 100 10 300 50 1.0\n")
    masks = _HumanMasks(IDTParams(boxes=str(boxes)), "<frames>")
    masks.box_scale = 0.5  # a 1280-wide source at the 640 working width
    m = masks(0, np.zeros((60, 640), np.uint8))
    cols = np.flatnonzero((m == 0).any(axis=0))
    assert (cols.min(), cols.max()) == (50, 150)  # x 100..300 in source pixels -> 50..150 (+1 for the ceil)


_HUGE = textwrap.dedent("""
    import json, resource, sys
    import cv2, numpy as np
    from idtfv.idt.extractor import extract
    from idtfv.idt.params import IDTParams

    def frames(n=20, w=4000, h=3000):
        rng = np.random.default_rng(0)
        tex = cv2.GaussianBlur(rng.integers(0, 256, (h // 10 + 4, w // 10 + 2 * n + 4), dtype=np.uint8), (0, 0), 1)
        for t in range(n):
            small = tex[2:2 + h // 10, 2:2 + w // 10].copy()
            small[h // 40: 3 * h // 40] = tex[2:2 + h // 20, 2 * t:2 * t + w // 10]  # a band that moves
            yield cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)  # generated lazily

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # The same clip at the working size first: it compiles (or loads) every kernel and sizes every buffer, so
    # what the 4000x3000 run adds to the peak is what the frame size costs, apart from Numba's compiler.
    extract(frames(w=640, h=480), IDTParams(camera_motion=False))
    working = peak_mb()
    tr = extract(frames(), IDTParams(camera_motion=False))
    print(json.dumps({"rows": len(tr), "width": tr.info["width"], "height": tr.info["height"],
                      "source": [tr.info.get("source_width"), tr.info.get("source_height")],
                      "max_x": float(tr.meta[:, 1].max()) if len(tr) else 0.0,
                      "working_peak_mb": working, "added_mb": peak_mb() - working}))
""")


def test_a_4000x3000_clip_runs_in_bounded_memory():
    """Four 4000x3000 frames took 8.9 GB and gave nothing at full size; at the working width a 4000x3000 clip
    costs little more memory than the same clip at 640x480 (each source frame is 12 MB; at full size the
    pyramids, flows and histograms would take gigabytes), and tracks are found.

    The bound is on what the large frames add, measured in one process after the same extraction at the working
    size: the whole process's peak also holds Numba's compiler when the kernel cache is cold (600 MB here, once
    over 1 GB in CI while another test process compiled the same kernels), which says nothing about frame size.
    """
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _HUGE], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert (out["width"], out["height"]) == (640, 480) and out["source"] == [4000, 3000]
    assert out["rows"] > 0 and out["max_x"] < 640  # positions in working pixels
    assert out["added_mb"] < 200, f"the 4000x3000 clip added {out['added_mb']:.0f} MB to the peak: {out}"
