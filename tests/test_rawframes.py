"""Rawframes writer/reader (idtfv.idt.rawframes): quantisation, JPEG and .npz round trips, atomicity, errors."""

from __future__ import annotations

import numpy as np
import pytest

from idtfv.errors import FormatError, ParameterError
from idtfv.idt.rawframes import (
    RawframesReader,
    RawframesWriter,
    dequantize_flow,
    load_flow_npz,
    quantize_flow,
    save_flow_npz,
)

BOUND = 20.0
STEP = 2 * BOUND / 255  # quantisation step (px)


def smooth_flows(n=3, h=48, w=64, seed=0):
    """Smooth flows of up to 25 px (some clipped at +-20) plus a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for k in range(n):
        f = np.stack([25 * np.sin(xx / 9 + k) * np.cos(yy / 13), 8 * np.cos(xx / 17 - yy / 11 + k)], -1)
        out.append((f + rng.normal(scale=0.1, size=f.shape)).astype(np.float32))
    return out


def test_quantisation_formula_and_clipping():
    f = np.array([[[-25.0, -20.0], [0.0, 20.0], [7.3, 30.0]]], np.float32)
    qx, qy = quantize_flow(f, BOUND)
    expected = np.rint((np.clip(f, -20, 20) + 20) * 255 / 40).astype(np.uint8)
    np.testing.assert_array_equal(qx, expected[..., 0])
    np.testing.assert_array_equal(qy, expected[..., 1])
    assert qx[0, 0] == 0 and qy[0, 1] == 255 and qx[0, 1] == 128  # round(127.5) = 128 (half to even)
    back = dequantize_flow(qx, qy, BOUND)
    assert np.all(np.abs(back - np.clip(f, -20, 20)) <= STEP / 2 + 1e-6)
    with pytest.raises(ParameterError, match="bound"):
        quantize_flow(f, 0)


def test_jpeg_round_trip_quality_100(tmp_path):
    rng = np.random.default_rng(1)
    flows = smooth_flows()
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(4)]
    with RawframesWriter(tmp_path / "vid", bound=BOUND, quality=100) as wr:
        for k in range(4):
            wr.add_frame(frames[k])
            if k < 3:
                wr.add_flow(flows[k])
    names = sorted(p.name for p in (tmp_path / "vid").iterdir())
    assert names == [f"flow_x_0000{i}.jpg" for i in (1, 2, 3)] + [f"flow_y_0000{i}.jpg" for i in (1, 2, 3)] + [
        f"img_0000{i}.jpg" for i in (1, 2, 3, 4)]
    reader = RawframesReader(tmp_path, "vid", bound=BOUND)
    rgb, flow = reader.frames(), reader.flow()
    assert (reader.n_frames, reader.n_flows, reader.has_frames, reader.has_flow) == (4, 3, True, True)
    assert rgb.shape == (4, 48, 64, 3) and flow.shape == (3, 48, 64, 2) and flow.dtype == np.float32
    err = np.abs(flow - np.clip(np.stack(flows), -BOUND, BOUND))
    # quantisation (<= step/2) plus at most one grey level of JPEG error at quality 100
    assert err.max() <= 1.5 * STEP + 1e-5
    assert np.mean(err <= STEP) > 0.9  # measured 0.95: most values land within one step
    assert err.mean() < 0.5 * STEP
    # RGB frames come back as RGB (not BGR): compare channel means of the noise frames
    np.testing.assert_allclose(rgb.reshape(4, -1, 3).mean(1), np.stack(frames).reshape(4, -1, 3).mean(1), atol=2)


def test_npz_round_trip_is_exact_up_to_float16(tmp_path):
    flows = np.stack(smooth_flows(seed=2))
    path = save_flow_npz(tmp_path / "v.npz", flows, bound=BOUND)
    got, bound = load_flow_npz(path)
    assert got.dtype == np.float16 and got.shape == flows.shape and bound == BOUND
    np.testing.assert_array_equal(got, flows.astype(np.float16))  # not clipped
    assert np.abs(got.astype(np.float32) - flows).max() <= np.abs(flows).max() * 2.0**-11
    again = save_flow_npz(tmp_path / "w.npz", flows, bound=BOUND)
    assert again.read_bytes() == path.read_bytes()  # deterministic bytes


def test_writer_is_atomic_and_replaces(tmp_path):
    target = tmp_path / "vid"
    with pytest.raises(RuntimeError):
        with RawframesWriter(target) as wr:
            wr.add_frame(np.zeros((8, 8, 3), np.uint8))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind
    for n in (3, 2):
        with RawframesWriter(target) as wr:
            for _ in range(n):
                wr.add_frame(np.zeros((8, 8, 3), np.uint8))
    assert len(list(target.iterdir())) == 2 and list(tmp_path.iterdir()) == [target]


def test_reader_random_access_matches_whole_reads(tmp_path):
    """Frames and flows read by index equal the same rows of the whole-video read, in any order."""
    rng = np.random.default_rng(3)
    flows = smooth_flows(n=4, h=16, w=24)
    with RawframesWriter(tmp_path / "v") as wr:
        for k in range(5):
            wr.add_frame(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8))
            if k < 4:
                wr.add_flow(flows[k])
    r = RawframesReader(tmp_path, "v")
    every_f, every_fl = r.frames(), r.flow()
    idx = [3, 0, 3, 1]
    np.testing.assert_array_equal(r.frames(idx), every_f[idx])
    np.testing.assert_array_equal(r.flow(np.array(idx)), every_fl[idx])
    # each flow image decodes to the formula: q * 2b / 255 - b with q the stored grey level
    import cv2

    qx = cv2.imread(str(tmp_path / "v" / "flow_x_00002.jpg"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_allclose(every_fl[1, ..., 0], qx.astype(np.float64) * 40 / 255 - 20, atol=1e-5)
    with pytest.raises(ParameterError, match="out of range"):
        r.flow([4])


def test_reader_npz_clips_to_the_smaller_bound_and_counts_frames(tmp_path):
    flows = np.stack(smooth_flows(n=3, h=8, w=10, seed=4))  # up to 25 px
    save_flow_npz(tmp_path / "v.npz", flows, bound=15.0)
    r = RawframesReader(tmp_path, "v", bound=BOUND)
    assert (r.n_frames, r.n_flows, r.has_frames) == (4, 3, False)
    got = r.flow()
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.clip(flows.astype(np.float16).astype(np.float32), -15, 15))
    np.testing.assert_array_equal(RawframesReader(tmp_path, "v", bound=10.0).flow([2]),
                                  np.clip(flows[2:3].astype(np.float16).astype(np.float32), -10, 10))
    with pytest.raises(FormatError, match="no img_"):
        r.frames([0])
    # JPEG flow wins over a .npz of the same video; frames come from the directory
    with RawframesWriter(tmp_path / "v") as wr:
        for _ in range(4):
            wr.add_frame(np.zeros((8, 10, 3), np.uint8))
        for _ in range(3):
            wr.add_flow(np.full((8, 10, 2), 5.0, np.float32))
    both = RawframesReader(tmp_path, "v")
    assert both.has_frames and np.abs(both.flow() - 5.0).max() <= STEP


def test_reader_errors(tmp_path):
    with pytest.raises(FormatError, match="no rawframes for this video"):
        RawframesReader(tmp_path, "missing")
    d = tmp_path / "gap"
    with RawframesWriter(d) as wr:
        for f in smooth_flows(n=3, h=8, w=8):
            wr.add_flow(f)
    (d / "flow_x_00002.jpg").unlink()
    with pytest.raises(FormatError, match="without gaps"):
        RawframesReader(tmp_path, "gap")
    (d / "flow_x_00003.jpg").unlink()
    with pytest.raises(FormatError, match="1 flow_x but 3 flow_y"):
        RawframesReader(tmp_path, "gap")
    (d / "flow_x_00001.jpg").write_bytes(b"not a jpeg")
    for name in ("flow_y_00002.jpg", "flow_y_00003.jpg"):
        (d / name).unlink()
    with pytest.raises(FormatError, match=r"flow_x_00001\.jpg: missing or not a readable JPEG"):
        RawframesReader(tmp_path, "gap").flow([0])
    with pytest.raises(ParameterError, match="bound"):
        RawframesReader(tmp_path, "gap", bound=0)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(FormatError, match="bad.npz"):
        load_flow_npz(tmp_path / "bad.npz")
    with pytest.raises(FormatError, match="bad.npz"):
        RawframesReader(tmp_path, "bad")


def test_streamed_flow_npz_holds_what_save_flow_npz_holds(tmp_path):
    """FlowNpzWriter (the flow stage's npz output, written as the flows come) against save_flow_npz of the stacked
    flows: the same arrays; deterministic bytes; an aborted writer leaves nothing."""
    from idtfv.idt.rawframes import FlowNpzWriter

    flows = smooth_flows(n=5)
    save_flow_npz(tmp_path / "whole.npz", np.stack(flows), bound=BOUND)
    for name in ("a.npz", "b.npz"):
        writer = FlowNpzWriter(tmp_path / "out" / name, bound=BOUND)
        for f in flows:
            writer.add_flow(f)
        assert writer.commit() == tmp_path / "out" / name
    want, want_bound = load_flow_npz(tmp_path / "whole.npz")
    got, got_bound = load_flow_npz(tmp_path / "out" / "a.npz")
    assert got.dtype == want.dtype == np.float16 and got.shape == (5, 48, 64, 2)
    np.testing.assert_array_equal(got, want)
    assert got_bound == want_bound == BOUND
    assert (tmp_path / "out" / "a.npz").read_bytes() == (tmp_path / "out" / "b.npz").read_bytes()
    with np.load(tmp_path / "out" / "a.npz") as z:  # numpy's own reader: members flow and bound, as savez's
        assert z.files == ["flow", "bound"]
    writer = FlowNpzWriter(tmp_path / "gone" / "c.npz", bound=BOUND)
    writer.add_flow(flows[0])
    writer.abort()
    assert list((tmp_path / "gone").iterdir()) == []
    with pytest.raises(ParameterError, match=r"flow must be \(h, w, 2\)"):
        bad = FlowNpzWriter(tmp_path / "bad.npz", bound=BOUND)
        bad.add_flow(flows[0])
        bad.add_flow(flows[0][:10])
    bad.abort()


def test_flow_stage_npz_memory_does_not_grow_with_length(tmp_path):
    """extract_video(fmt="npz") writes the flows as they come: tracemalloc's peak for 40 flows is about that for
    8 (it held every flow before: 40 x 0.3 MB at 320x240 in float16, stacked once more at the end)."""
    import tracemalloc

    import cv2

    from idtfv.idt.rawframes import load_flow_npz
    from idtfv.idt.stage import extract_video

    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (240, 400)).astype(np.uint8), (0, 0), 2)

    def video(n):
        path = tmp_path / f"v{n}.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (320, 240))
        for t in range(n):
            writer.write(cv2.cvtColor(np.ascontiguousarray(texture[:, 2 * t: 2 * t + 320]), cv2.COLOR_GRAY2BGR))
        writer.release()
        return path

    peaks = {}
    for n in (9, 41):
        path = video(n)
        extract_video(path, tmp_path / "warm", method="farneback", fmt="npz")  # warm-up: imports, kernels
        tracemalloc.start()
        try:
            extract_video(path, tmp_path / "out", method="farneback", fmt="npz")
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        flow, _ = load_flow_npz(tmp_path / "out" / f"v{n}.npz")
        assert flow.shape == (n - 1, 240, 320, 2)
    one_flow = 240 * 320 * 2 * 2
    assert peaks[41] < peaks[9] + 4 * one_flow, peaks  # 32 more flows held would add 32 x one_flow (x2 stacked)
