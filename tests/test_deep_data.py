"""deep/ data side: samplers, transforms, warped flow (the extractor's definition), datasets, view aggregation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from idtfv.deep import transforms as T
from idtfv.deep.aggregate import aggregate_views
from idtfv.deep.data import FrameSource, SamplingConfig, VideoDataset
from idtfv.deep.sampling import clip_indices, segment_indices, segment_views
from idtfv.data.manifest import VideoEntry
from idtfv.errors import FormatError, ParameterError
from idtfv.idt import RawframesReader, quantize_flow
from idtfv.idt.rawframes import RawframesWriter, save_flow_npz

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- samplers


def test_segment_indices_test_mode_centres():
    idx = segment_indices(30, 3, train=False)
    assert idx.tolist() == [[5], [15], [25]]
    idx = segment_indices(30, 3, snippet_len=5, train=False)  # 26 starts, segments of 26/3
    assert idx.shape == (3, 5) and (np.diff(idx, axis=1) == 1).all()
    assert idx[:, 0].tolist() == [4, 13, 21]


def test_segment_indices_train_stays_in_segment_and_is_seeded():
    for seed in range(20):
        idx = segment_indices(40, 4, snippet_len=3, train=True, random_state=seed)
        starts = idx[:, 0]
        seg = 38 / 4
        assert all(np.floor(k * seg) <= s < (k + 1) * seg for k, s in enumerate(starts))
        assert idx.max() < 40
    a = segment_indices(40, 4, train=True, random_state=7)
    assert np.array_equal(a, segment_indices(40, 4, train=True, random_state=7))


@pytest.mark.parametrize("train", [True, False])
def test_samplers_on_videos_shorter_than_a_clip(train):
    loop = segment_indices(3, 2, snippet_len=5, train=train, random_state=0, mode="loop")
    assert loop.tolist() == [[0, 1, 2, 0, 1]] * 2
    pad = segment_indices(3, 2, snippet_len=5, train=train, random_state=0, mode="pad")
    assert pad.tolist() == [[0, 1, 2, 2, 2]] * 2
    c = clip_indices(5, 4, stride=2, train=train, random_state=0, mode="loop")
    assert c.tolist() == [[0, 2, 4, 1]]
    c = clip_indices(5, 4, stride=2, train=train, random_state=0, mode="pad")
    assert c.tolist() == [[0, 2, 4, 4]]
    one = clip_indices(1, 8, train=train, random_state=0)
    assert one.tolist() == [[0] * 8]


def test_clip_indices_multi_clip_and_train_range():
    c = clip_indices(100, 16, stride=2, train=False, num_clips=3)  # span 31, room 69
    assert c[:, 0].tolist() == [0, 34, 69] and (np.diff(c, axis=1) == 2).all()
    assert clip_indices(100, 16, train=False)[0, 0] == (100 - 16) // 2
    starts = {int(clip_indices(20, 8, train=True, random_state=s)[0, 0]) for s in range(200)}
    assert starts == set(range(13))


def test_sampler_errors():
    with pytest.raises(ParameterError, match="frames"):
        segment_indices(0, 3, train=False)
    with pytest.raises(ParameterError, match="mode"):
        clip_indices(10, 4, train=False, mode="wrap")


# ----------------------------------------------------------------------------- transforms


def _flow_clip(rng, f=2, h=6, w=8):
    return rng.normal(size=(f, h, w, 2)).astype(np.float32)


def test_flip_negates_flow_x_only():
    rng = np.random.default_rng(0)
    flow = _flow_clip(rng)
    out = T.hflip(flow, flow=True)
    assert np.array_equal(out[..., 0], -flow[:, :, ::-1, 0])
    assert np.array_equal(out[..., 1], flow[:, :, ::-1, 1])
    rgb = rng.uniform(0, 255, size=(2, 4, 5, 3)).astype(np.float32)
    assert np.array_equal(T.hflip(rgb), rgb[:, :, ::-1])
    # a rightward-moving pattern flipped moves leftward: same physics as flow of the flipped video
    assert np.array_equal(T.hflip(T.hflip(flow, flow=True), flow=True), flow)


def test_ten_crop_and_three_crop():
    rng = np.random.default_rng(1)
    flow = _flow_clip(rng, h=10, w=14)
    crops = T.ten_crop(flow, 6, flow=True)
    assert len(crops) == 10 and all(c.shape == (2, 6, 6, 2) for c in crops)
    assert np.array_equal(crops[0], flow[:, :6, :6])
    assert np.array_equal(crops[3], flow[:, 4:, 8:])
    assert np.array_equal(crops[4], flow[:, 2:8, 4:10])
    for a, b in zip(crops[:5], crops[5:]):
        assert np.array_equal(b[..., 0], -a[:, :, ::-1, 0])
    three = T.three_crop(flow, 6)
    assert [np.array_equal(c, flow[:, 2:8, l:l + 6]) for c, l in zip(three, (0, 4, 8))] == [True] * 3


def test_resize_scales_flow_vectors():
    flow = np.ones((1, 4, 6, 2), np.float32) * np.array([3.0, -2.0], np.float32)
    out = T.resize(flow, 8, 18, flow=True)
    np.testing.assert_allclose(out[..., 0], 9.0, rtol=1e-6)
    np.testing.assert_allclose(out[..., 1], -4.0, rtol=1e-6)
    assert T.resize_short(np.zeros((1, 12, 16, 3), np.float32), 6).shape == (1, 6, 8, 3)


def test_multi_scale_crop_is_seeded_and_uses_tsn_scales():
    frames = np.random.default_rng(2).uniform(size=(3, 40, 60, 3)).astype(np.float32)
    a = T.multi_scale_crop(frames, 16, random_state=5)
    b = T.multi_scale_crop(frames, 16, random_state=5)
    assert a.shape == (3, 16, 16, 3) and np.array_equal(a, b)
    with pytest.raises(ParameterError, match="does not fit"):
        T.crop(frames, 30, 0, 20, 20)


STEP = 40 / 255  # quantisation step of the +-20 px flow grid


def _pan_video(path, *, n=5, h=72, w=96, shift=(2.0, 1.0), seed=0):
    """An MJPG .avi of a smooth texture under a camera pan of ``shift`` px per frame (the only motion)."""
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.normal(size=(h + 40, w + 40)).astype(np.float32), (0, 0), 2.0)
    big = cv2.normalize(big, None, 0, 255, cv2.NORM_MINMAX)
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    for k in range(n):
        m = np.float32([[1, 0, 20 - shift[0] * k], [0, 1, 20 - shift[1] * k]])
        g = cv2.warpAffine(big, m, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)
        wr.write(np.dstack([np.clip(g, 0, 255).astype(np.uint8)] * 3))
    wr.release()
    return path


@pytest.fixture(scope="module")
def pan_and_extract_flow(tmp_path_factory):
    """A panning clip and what ``extract-flow --method dis --preset fast [--warped] --format npz`` writes for it."""
    from idtfv.idt.cli import flow_main

    root = tmp_path_factory.mktemp("pan")
    path = _pan_video(root / "pan.avi")
    for name, extra in (("plain", []), ("warped", ["--warped"])):
        assert flow_main([str(path), "-o", str(root / name), "--format", "npz", "--video-id", "pan", "--method",
                          "dis", "--preset", "fast", "--backend", "cpu", *extra]) == 0
    return path, root


def test_on_the_fly_flow_and_warped_flow_equal_extract_flow(pan_and_extract_flow):
    """deep computes exactly what extract-flow writes for the same frames and solver, plain and warped, up to the
    rawframes quantisation (half a step) and the .npz's float16."""
    path, root = pan_and_extract_flow
    src = FrameSource(_entry("pan", 0, path))
    n = src.num_frames() - 1
    for name, got in (("plain", src.flow(np.arange(n))), ("warped", src.warped_flow(np.arange(n)))):
        ref = RawframesReader(root / name, "pan").flow()
        assert got.shape == ref.shape == (4, 72, 96, 2)
        assert np.abs(got - ref).max() <= STEP / 2 + 0.01, name
        # and deep's fields lie on the rawframes JPEG grid (-20 + k STEP)
        k = (got + 20) / STEP
        assert np.abs(k - np.rint(k)).max() < 1e-3
    # the planted pan: plain flow is the pan, warped flow (camera motion removed) is near zero
    plain, warped = src.flow(np.arange(n)), src.warped_flow(np.arange(n))
    np.testing.assert_allclose(np.median(plain[:, 8:-8, 8:-8].reshape(-1, 2), axis=0), [2.0, 1.0], atol=0.2)
    assert np.abs(warped).mean() < 0.1 and np.quantile(np.abs(warped), 0.99) < 0.5
    # fields computed in another order (and by another source) are the same
    again = FrameSource(_entry("pan", 0, path)).warped_flow(np.arange(n)[::-1])[::-1]
    np.testing.assert_array_equal(again, warped)


def test_warped_flow_dataset_equals_flow_dataset_on_extract_flow_warped(pan_and_extract_flow):
    """The warped_flow modality on the video gives the network what the flow modality gives on extract-flow
    --warped's output (same values through the same resize, crop and scaling)."""
    path, root = pan_and_extract_flow
    cfg = SamplingConfig(sampler="clip", frames=4, size=48, short_side=54)
    on_the_fly = VideoDataset([_entry("pan", 0, path)], modality="warped_flow", config=cfg, train=False)[0][0]
    from_raw = VideoDataset([_entry("pan", 0, path)], modality="flow", config=cfg, train=False,
                            rawframes=root / "warped")[0][0]
    assert on_the_fly.shape == (2, 4, 48, 48)
    assert float((on_the_fly - from_raw).abs().max()) * 20 <= STEP / 2 + 0.01


# ----------------------------------------------------------------------------- datasets


def _write_rawframes(root, vid, n, *, h=24, w=32, fx=5.0, fy=-3.0):
    d = root / vid
    d.mkdir(parents=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        img = np.full((h, w, 3), 10 * i, np.uint8)
        img[..., 0] = rng.integers(0, 255, (h, w))
        cv2.imwrite(str(d / f"img_{i + 1:05d}.jpg"), img)
        if i < n - 1:
            qx, qy = quantize_flow(np.full((h, w, 2), [fx, fy], np.float32))
            cv2.imwrite(str(d / f"flow_x_{i + 1:05d}.jpg"), qx)
            cv2.imwrite(str(d / f"flow_y_{i + 1:05d}.jpg"), qy)


def _entry(vid, label, path="/nonexistent.avi"):
    return VideoEntry(video_id=vid, path=path, label=label, label_name=f"c{label}", splits={1: "train"})


def test_dataset_flow_stack_from_rawframes(tmp_path):
    _write_rawframes(tmp_path, "v0", 12)
    _write_rawframes(tmp_path, "v1", 4)  # shorter than one 5-flow snippet: looped
    cfg = SamplingConfig(sampler="segments", frames=2, snippet_len=5, size=16, num_crops=10)
    ds = VideoDataset([_entry("v0", 0), _entry("v1", 1)], modality="flow", config=cfg, train=False,
                      rawframes=tmp_path)
    assert len(ds) == 20 and ds.in_channels == 10
    x, y, v = ds[0]
    assert x.shape == (10, 2, 16, 16) and y == 0 and v == 0
    q = 40 / 255  # one JPEG level
    np.testing.assert_allclose(x[0::2].numpy(), 5.0 / 20, atol=q)    # x channels (flow x / bound)
    np.testing.assert_allclose(x[1::2].numpy(), -3.0 / 20, atol=q)   # y channels
    xf, _, _ = ds[5]  # first flipped crop: x negated
    np.testing.assert_allclose(xf[0::2].numpy(), -5.0 / 20, atol=q)
    np.testing.assert_allclose(xf[1::2].numpy(), -3.0 / 20, atol=q)
    xs, ys, vs = ds[10]
    assert xs.shape == (10, 2, 16, 16) and ys == 1 and vs == 1


def test_dataset_rgb_rgbdiff_train_is_seeded(tmp_path):
    _write_rawframes(tmp_path, "v0", 9)
    entries = [_entry("v0", 3)]
    cfg = SamplingConfig(sampler="clip", frames=4, stride=2, size=16)
    ds = VideoDataset(entries, modality="rgb", config=cfg, train=True, rawframes=tmp_path, seed=4)
    a, _, _ = ds[0]
    b, _, _ = VideoDataset(entries, modality="rgb", config=cfg, train=True, rawframes=tmp_path, seed=4)[0]
    assert a.shape == (3, 4, 16, 16) and torch.equal(a, b)
    ds.set_epoch(1)
    assert not torch.equal(ds[0][0], a)
    diff = VideoDataset(entries, modality="rgbdiff", config=SamplingConfig(sampler="segments", frames=2,
                        snippet_len=4, size=16), train=False, rawframes=tmp_path)
    d, _, _ = diff[0]
    assert d.shape == (12, 2, 16, 16)
    # G and B of frame i are 10 i: every difference of consecutive frames is +10 there
    assert float(d[1::3].mean()) * 0.226 * 255 == pytest.approx(10.0, abs=1.0)  # JPEG chroma noise averages out


def test_dataset_decodes_video_and_computes_flow(tmp_path):
    path = tmp_path / "v.avi"
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (48, 32))
    rng = np.random.default_rng(0)
    tex = rng.integers(0, 255, (32, 80), dtype=np.uint8)
    tex = cv2.GaussianBlur(tex, (5, 5), 1.5)
    for i in range(6):
        frame = tex[:, 2 * i:2 * i + 48]  # texture moving left by 2 px per frame
        wr.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    wr.release()
    e = _entry("v", 0, path)
    cfg = SamplingConfig(sampler="clip", frames=8, size=24, short_side=32)  # 5 flows < 8: looped
    ds = VideoDataset([e], modality="flow", config=cfg, train=False)
    x, _, _ = ds[0]
    assert x.shape == (2, 8, 24, 24)
    assert float(x[0].mean()) * 20 == pytest.approx(-2.0, abs=0.5)   # x flow about -2 px
    assert abs(float(x[1].mean()) * 20) < 0.5
    w = VideoDataset([e], modality="warped_flow", config=cfg, train=False)[0][0]
    assert float(w.abs().mean()) * 20 < 0.5  # global translation is camera motion: removed
    r = VideoDataset([e], modality="rgb", config=cfg, train=False)[0][0]
    assert r.shape == (3, 8, 24, 24)
    # the decoded-video cache is bounded in memory (LRU)
    two = [e, _entry("v_again", 1, path)]
    for mb, kept in ((1e-3, [1]), (64, [0, 1])):
        ds = VideoDataset(two, modality="rgb", config=cfg, train=False, cache_mb=mb)
        ds[0], ds[1], ds[1]
        assert list(ds._cache) == kept


def test_dataset_errors(tmp_path):
    cfg = SamplingConfig(sampler="clip", frames=2, size=8)
    with pytest.raises(ParameterError, match="modality"):
        VideoDataset([_entry("a", 0)], modality="depth", config=cfg, train=False)
    ds = VideoDataset([_entry("a", 0)], modality="rgb", config=cfg, train=False, rawframes=tmp_path)
    with pytest.raises(FormatError, match="no rawframes for this video.*extract-flow"):
        ds[0]
    with pytest.raises(ParameterError, match="num_crops"):
        SamplingConfig(num_crops=4).validate()


# ----------------------------------------------------------------------------- aggregation


def test_aggregate_views_matches_naive():
    rng = np.random.default_rng(0)
    ids = ["b", "a", "b", "c", "a", "b"]
    s = rng.normal(size=(6, 4))
    out_ids, agg = aggregate_views(ids, s)
    assert out_ids == ["b", "a", "c"]
    for i, v in enumerate(out_ids):
        rows = [s[j] for j in range(6) if ids[j] == v]
        np.testing.assert_allclose(agg[i], sum(rows) / len(rows))
    _, mx = aggregate_views(ids, s, how="max")
    np.testing.assert_allclose(mx[2], s[3])
    with pytest.raises(ParameterError):
        aggregate_views(ids, s[:3])


def test_dataset_reads_extract_flow_rawframes_and_npz(tmp_path):
    """Rawframes written by idtfv.idt.rawframes (JPEG and .npz forms) read back as the planted flow."""
    rng = np.random.default_rng(0)
    h, w, n = 20, 24, 5
    flow = np.zeros((n - 1, h, w, 2), np.float32)
    flow[..., 0] = 3.0
    flow[..., 1] = np.linspace(-30, 30, w)[None, None, :]  # beyond the bound on the sides
    with RawframesWriter(tmp_path / "jpg" / "v0") as wr:
        for i in range(n):
            wr.add_frame(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        for f in flow:
            wr.add_flow(f)
    (tmp_path / "npz").mkdir()
    save_flow_npz(tmp_path / "npz" / "v0.npz", flow)
    cfg = SamplingConfig(sampler="clip", frames=3, size=16, short_side=20)
    for root in ("jpg", "npz"):
        ds = VideoDataset([_entry("v0", 0)], modality="flow", config=cfg, train=False, rawframes=tmp_path / root)
        x = ds[0][0].numpy() * 20  # back to pixels
        expect = np.clip(flow[0, 2:18, 4:20], -20, 20)  # centre 16 x 16 crop of the 20 x 24 field
        np.testing.assert_allclose(x[0], np.broadcast_to(expect[..., 0], (3, 16, 16)), atol=0.2)
        np.testing.assert_allclose(x[1], np.broadcast_to(expect[..., 1], (3, 16, 16)), atol=0.2)


def test_segment_views_multi_clip():
    v = segment_views(30, 3, num_clips=2)  # segments of 10: offsets 2.5 and 7.5
    assert v.shape == (2, 3, 1) and v[:, :, 0].tolist() == [[2, 12, 22], [7, 17, 27]]
    for n, k, l in [(30, 3, 1), (40, 4, 5), (3, 2, 5), (7, 8, 1)]:
        assert np.array_equal(segment_views(n, k, snippet_len=l)[0], segment_indices(n, k, snippet_len=l, train=False))
