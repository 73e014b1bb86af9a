"""Tests of the synthetic default dataset: decodable files, honest manifest, determinism, actor splits, classes that
differ by motion (not by appearance), and the planted camera motion."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest

from idtfv.data.manifest import read_manifest
from idtfv.data.synthetic import CLASSES, generate_dataset
from idtfv.errors import ParameterError
from idtfv.video import iter_frames, probe_video


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """8 classes x 6 actors x 24 frames, static camera (motion statistics are measured on raw frame differences)."""
    out = tmp_path_factory.mktemp("syn")
    return read_manifest(generate_dataset(out, n_actors=6, n_frames=24, camera_motion=0.0))


def _digest(root):
    """sha256 of every data file (not the generator's empty lock file ``.lock``)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def test_deterministic_bytes_and_seed_matters(tmp_path):
    kw = dict(n_classes=3, n_actors=3, n_frames=6, size=(64, 48))
    generate_dataset(tmp_path / "a", random_state=7, **kw)
    generate_dataset(tmp_path / "b", random_state=7, **kw)
    generate_dataset(tmp_path / "c", random_state=8, **kw)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert len(a) == 3 * 3 + 3 and a == b
    assert a["manifest.csv"] != c["manifest.csv"] or a != c
    assert sum(a[k] != c[k] for k in a if k.endswith(".avi")) == 9


def test_rerun_is_a_noop_and_force_redoes(tmp_path):
    kw = dict(n_classes=2, n_actors=3, n_frames=4, size=(48, 32))
    m = generate_dataset(tmp_path, **kw)
    stamp = m.stat().st_mtime_ns
    assert generate_dataset(tmp_path, **kw) == m and m.stat().st_mtime_ns == stamp
    generate_dataset(tmp_path, force=True, **kw)
    generate_dataset(tmp_path, **{**kw, "n_frames": 5})  # other parameters: regenerated
    assert {e.frames for e in read_manifest(m).rows} == {5}


def test_manifest_is_probed_and_honest(small):
    assert small.class_names == list(CLASSES)
    assert len(small) == 8 * 6
    for e in small.rows:
        info = probe_video(e.path)
        assert (e.frames, e.fps, e.width, e.height) == (info.frames, info.fps, info.width, info.height)
        assert (info.frames, info.width, info.height, info.fps) == (24, 160, 120, 25.0)
        assert e.label_name == CLASSES[e.label] and e.video_id.startswith(e.label_name + "_")
    assert sum(1 for _ in iter_frames(small.rows[0].path)) == 24


def test_splits_hold_out_whole_actors(small):
    for s, test_actors in ((1, {"a05", "a06"}), (2, {"a03", "a04"}), (3, {"a01", "a02"})):
        train, test = small.split(s, "train"), small.split(s, "test")
        assert {e.group for e in test} == test_actors
        assert not {e.group for e in train} & test_actors
        assert len(train) + len(test) == len(small)
        assert {e.label for e in test} == set(range(8))  # every class in every test fold


def _motion_features(path):
    """Shape of the motion-energy image (thresholded frame differences), folded left/right, in its bounding box."""
    frames = np.array(list(iter_frames(path, gray=True)), np.float32)
    moving = (np.abs(np.diff(frames, axis=0)) > 15).astype(np.float32)
    energy = moving.sum(0)
    ys, xs = np.nonzero(energy)
    y0, y1 = np.percentile(ys, [1, 99]).astype(int)
    x0, x1 = np.percentile(xs, [1, 99]).astype(int)
    grid = cv2.resize(energy[y0:y1 + 1, x0:x1 + 1], (6, 6), interpolation=cv2.INTER_AREA)
    grid = grid + grid[:, ::-1]
    per_frame = moving.sum((1, 2))
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    return np.concatenate([grid.ravel() / grid.sum(), [np.log((x1 - x0 + 1) / (y1 - y0 + 1)),
                                                      np.log1p(per_frame.mean() / area),
                                                      per_frame.std() / per_frame.mean()]])


def _drift(path):
    """How far the centre of the moving pixels travels from the first to the last third of the clip, in pixels."""
    frames = np.array(list(iter_frames(path, gray=True)), np.float32)
    moving = np.abs(np.diff(frames, axis=0)) > 15
    third = len(moving) // 3
    xs = np.arange(moving.shape[2])
    centre = [(m.sum(axis=0) @ xs) / max(1, m.sum()) for m in (moving[:third].sum(0), moving[-third:].sum(0))]
    return abs(centre[1] - centre[0])


def _appearance_features(path):
    first = next(iter_frames(path)).astype(np.float32)
    return np.concatenate([first.mean((0, 1)), first.std((0, 1))])


def _nearest_centroid_accuracy(X, y, train):
    mu, sd = X[train].mean(0), X[train].std(0) + 1e-9
    Z = (X - mu) / sd
    centroids = np.array([Z[train & (y == c)].mean(0) for c in range(y.max() + 1)])
    pred = np.argmin(((Z[~train, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    return float((pred == y[~train]).mean())


def test_classes_are_learnable_from_motion_not_appearance(small):
    y = np.array([e.label for e in small.rows])
    train = np.array([e.split_of(1) == "train" for e in small.rows])
    motion = np.array([_motion_features(e.path) for e in small.rows])
    appearance = np.array([_appearance_features(e.path) for e in small.rows])
    # held-out actors, 8 classes (chance 0.125): motion shape alone recognises most clips ...
    assert _nearest_centroid_accuracy(motion, y, train) >= 0.6
    # ... while colour statistics of the frames say nothing about the class
    assert _nearest_centroid_accuracy(appearance, y, train) <= 0.3
    # a planted difference seen in the pixels: walkers and runners travel, a one-hand waver stays in place
    drift = np.array([_drift(e.path) for e in small.rows])
    assert drift[np.isin(y, [0, 1])].min() > 3 * drift[y == 3].max()


def test_camera_motion_is_planted_and_recorded(tmp_path):
    out = generate_dataset(tmp_path, n_classes=3, n_actors=3, n_frames=8, camera_motion=1.0, random_state=1)
    clips = json.loads((tmp_path / "clips.json").read_text())["clips"]
    m = read_manifest(out)
    assert all(c["camera"] != "static" for c in clips.values())
    checked = 0
    h, w = 120, 160
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], float).T
    for e in m.rows:
        affine = np.array(clips[e.video_id]["camera_affine"]).reshape(-1, 2, 3)
        frames = list(iter_frames(e.path, gray=True))
        a = np.vstack([affine[0], [0, 0, 1]])
        b = np.vstack([affine[-1], [0, 0, 1]])
        between = (b @ np.linalg.inv(a))[:2]  # first frame -> last frame as the camera moved
        if np.abs(between @ corners - corners[:2]).max() < 2.0:
            continue  # the camera hardly moved over the clip
        warped = cv2.warpAffine(frames[0], between, (w, h), flags=cv2.INTER_LINEAR)
        inner = (slice(16, -16), slice(16, -16))  # away from borders entering the view
        err_comp = np.median(np.abs(warped[inner].astype(float) - frames[-1][inner]))
        err_raw = np.median(np.abs(frames[0][inner].astype(float) - frames[-1][inner]))
        assert err_comp < 0.5 * err_raw, (e.video_id, err_comp, err_raw)
        checked += 1
    assert checked >= 3
    # no camera motion: the background stays put (the median pixel does not change between frames)
    static = generate_dataset(tmp_path / "static", n_classes=2, n_actors=3, n_frames=4, camera_motion=0.0)
    for e in read_manifest(static).rows:
        f = np.array(list(iter_frames(e.path, gray=True)), np.float32)
        assert np.median(np.abs(np.diff(f, axis=0))) <= 1.0


def test_default_parameters_advertised():
    import inspect

    sig = inspect.signature(generate_dataset).parameters
    assert (sig["n_classes"].default, sig["n_actors"].default, sig["n_frames"].default, sig["size"].default) == \
        (8, 12, 40, (160, 120))


@pytest.mark.parametrize("kw,match", [({"n_classes": 9}, "n_classes"), ({"n_actors": 2}, "n_actors"),
                                      ({"n_frames": 1}, "n_frames"), ({"size": (8, 8)}, "size"),
                                      ({"camera_motion": 2.0}, "camera_motion")])
def test_bad_parameters(tmp_path, kw, match):
    with pytest.raises(ParameterError, match=match):
        generate_dataset(tmp_path, **kw)


@pytest.mark.parametrize("argv, needle", [
    (["dataset", "--seed", "-1", "--out", "{tmp}/ds/manifest.csv"], "--seed must be a non-negative integer"),
    (["dataset-untrimmed", "--seed", "-1", "--out", "{tmp}/un/manifest.csv"], "--seed) must be a non-negative"),
    (["dataset-untrimmed", "--out", "{tmp}/a_file/manifest.csv"], "a_file: exists and is not a directory"),
])
def test_generators_refuse_a_negative_seed_or_a_file_in_the_way(tmp_path, argv, needle, capsys):
    """A negative --seed was a ValueError traceback from NumPy's generator; a file where dataset-untrimmed's
    directory goes was '[Errno 17] File exists'. Both are now one error line, before anything is written."""
    from idtfv.cli import main

    (tmp_path / "a_file").write_text("mine\n")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and needle in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"] and (tmp_path / "a_file").read_text() == "mine\n"
