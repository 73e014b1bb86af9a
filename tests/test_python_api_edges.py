"""The Python API's promise at its edges: bad input raises one of idtfv's errors saying what was expected, what was
given and how to fix it -- never a TypeError/IndexError from inside, nor NaN scores or a result on garbage.

Each test plants one bad input the hunt (docs/FAILURE_MODES.md, "Python API") found answered otherwise.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny_frames
from idtfv.errors import FormatError, IdtfvError, ParameterError, VideoError


def _grey(n=4):
    return [np.ascontiguousarray(f[:, :, 0]) for f in tiny_frames(frames=n)]


def _counting(used: list):
    """A function giving a generator of ``_grey()`` frames that appends to ``used`` for each frame read."""
    def frames():
        for f in _grey():
            used.append(1)
            yield f
    return frames


# ------------------------------------------------------------------------------------------------ extract
def test_float_frames_are_told_how_to_scale_not_to_truncate():
    """0..1 floats: the advice was '.astype(np.uint8)', which makes black frames."""
    from idtfv.idt import extract

    frames = [f.astype(np.float32) / 255 for f in _grey()]
    with pytest.raises(VideoError, match=r"<frames>\[0\]: .*got dtype float32; .*f \* 255.* for 0\.\.1 values"):
        extract(frames)


def test_none_and_rgba_frames_are_named():
    from idtfv.idt import extract

    frames = _grey()
    with pytest.raises(VideoError, match=r"<frames>\[2\]: expected a uint8 frame array .* got NoneType"):
        extract(frames[:2] + [None] + frames[2:])  # was "got dtype object; convert with .astype(np.uint8)"
    with pytest.raises(VideoError, match=r"<frames>: expected a stack of frames .*got an array of shape \(48, 64\)"):
        extract(frames[0])  # one frame: was "<frames>[0]: ... got shape (64,)"
    rgba = [np.dstack([f, f, f, f]) for f in frames]
    with pytest.raises(VideoError, match=r"got shape \(48, 64, 4\); drop the alpha channel"):
        extract(rgba)


@pytest.mark.parametrize("threads", [1, 2])
def test_an_error_of_the_frames_iterable_propagates_as_is(threads):
    from idtfv.idt import IDTParams, extract

    class Mine(Exception):
        pass

    def frames():
        yield from _grey(3)
        raise Mine("from the caller's reader")

    with pytest.raises(Mine, match="from the caller's reader"):
        extract(frames(), IDTParams(track_length=3, nt_cells=1, scales=1, camera_motion=False, threads=threads))


def test_a_backend_typo_or_a_hook_that_is_not_callable_fails_before_any_frame():
    """With frames, ``backend="nope"`` was accepted (frames use no decoder) and a non-callable ``on_frame`` failed
    with a TypeError after the first frame's work. Both are ParameterErrors naming the argument, before any frame is
    read from the caller's iterable."""
    from idtfv.idt import extract

    used = []
    frames = _counting(used)

    with pytest.raises(ParameterError, match=r"^backend: expected one of auto, opencv, pyav, got 'nope'"):
        extract(frames(), backend="nope")
    with pytest.raises(ParameterError, match=r"^on_frame: expected a callable or None, got int"):
        extract(frames(), on_frame=1)
    with pytest.raises(ParameterError, match=r"^on_tracks: expected a callable or None, got str"):
        extract(frames(), on_tracks="draw")
    assert used == []


def test_trajectory_writer_options_are_parameter_errors(tmp_path):
    """A bad ``format``/``compresslevel``/``threads`` raised a bare ValueError; now the project's ParameterError
    (still a ValueError)."""
    from idtfv.idt import TrajectoryWriter

    for kwargs, needle in (({"format": "csv"}, "format must be 'npz' or 'lear'"),
                           ({"compresslevel": 10}, "compresslevel must be an integer 0-9"),
                           ({"threads": 0}, "threads must be a positive integer")):
        with pytest.raises(ParameterError, match=needle):
            TrajectoryWriter(tmp_path / "t.npz", **kwargs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["file_as_folder", "directory"])
def test_an_unusable_output_fails_before_any_frame_is_extracted(tmp_path, where):
    """A file where the output's folder goes raised FileExistsError; a directory as the output failed only at
    close(), after the whole extraction. Now: one IdtfvError naming the output, before the first frame."""
    from idtfv.idt import extract_to_file

    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" / "v.npz" if where == "file_as_folder" else tmp_path
    used = []
    frames = _counting(used)

    with pytest.raises(IdtfvError, match=rf"^{tmp_path}"):
        extract_to_file(frames(), out)
    assert used == []


def test_an_unwritable_output_folder_is_one_line_naming_the_output(tmp_path, monkeypatch):
    """(Planted: the tests may run as root.) The npz's first temporary file failed after the first batch with
    'PermissionError: ... /dir/tmpXXXX'."""
    import errno
    import os
    import tempfile

    from idtfv.idt import TrajectoryWriter

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    out = tmp_path / "v.npz"
    with pytest.raises(IdtfvError, match=rf"^{out}: cannot write in {tmp_path} \(permission denied\)"):
        TrajectoryWriter(out)


def test_numpy_scalars_are_accepted_as_the_python_values_they_hold():
    from idtfv.idt import IDTParams

    p = IDTParams(track_length=np.int64(15), stride=np.int32(5), quality=np.float32(0.5),
                  camera_motion=np.bool_(False), end=np.int64(40))
    assert p == IDTParams(track_length=15, stride=5, quality=0.5, camera_motion=False, end=40)
    assert [type(getattr(p, k)) for k in ("track_length", "quality", "camera_motion", "end")] == \
        [int, float, bool, int]
    json.dumps(p.to_dict())  # JSON-safe as ever (cache keys, info["params"])
    with pytest.raises(ParameterError, match=r"IDTParams.quality: expected a finite number"):
        IDTParams(quality=np.float64("nan"))
    with pytest.raises(ParameterError, match=r"IDTParams.stride: expected an integer >= 1"):
        IDTParams(stride=np.int64(0))


# ------------------------------------------------------------------------------------------------ encoding
def _X(n=300, d=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_fisher_vector_of_an_unfitted_gmm_says_fit_it():
    from idtfv.encoding import DiagGMM, fisher_vector

    for gmm, what in ((DiagGMM(4), "an unfitted DiagGMM"), (None, "NoneType")):
        with pytest.raises(ParameterError, match=rf"gmm: expected a fitted DiagGMM .*got {what}; fit it first"):
            fisher_vector(_X(), gmm)  # was TypeError: cannot unpack non-iterable ...


def test_fisher_cells_must_be_integer_ids():
    from idtfv.encoding import DiagGMM, fisher_vectors_cells

    X = _X()
    gmm = DiagGMM(2, random_state=0).fit(X)
    cells = np.arange(300) % 2
    F = fisher_vectors_cells(X, gmm, cells, 2)
    np.testing.assert_array_equal(fisher_vectors_cells(X, gmm, cells.astype(float), 2), F)  # integral: as before
    for bad in (cells + 0.5, np.where(cells == 1, np.nan, 0.0)):  # were truncated (0.5 -> 0; NaN -> garbage id)
        with pytest.raises(ParameterError, match=r"cells: expected integer cell ids .*got dtype float64"):
            fisher_vectors_cells(X, gmm, bad, 2)


def test_pca_transform_refuses_nan_instead_of_projecting_it():
    from idtfv.encoding import DescriptorPCA

    pca = DescriptorPCA(3).fit(_X())
    X = _X(5, seed=1)
    ref = (X - pca.mean_.astype(np.float32)) @ pca._projection()  # valid input: same numbers as before
    np.testing.assert_array_equal(pca.transform(X), ref)
    X[3, 2] = np.nan
    with pytest.raises(ParameterError, match=r"PCA input row 3 contains NaN"):
        pca.transform(X)  # was a (5, 3) result with a NaN row


def test_gmm_refuses_descriptors_whose_squares_overflow_float32():
    from idtfv.encoding import DiagGMM

    with pytest.raises(ParameterError, match=r"descriptors reach \|x\| = .*e\+30.*rescale them"):
        DiagGMM(4, random_state=0).fit(_X() * 1e30)  # was ZeroDivisionError from the EM kernel


# ------------------------------------------------------------------------------------------------ classify
def _train(n=30, d=5, C=3):
    rng = np.random.default_rng(0)
    y = np.arange(n) % C
    X = rng.normal(size=(n, d)).astype(np.float32)
    X[np.arange(n), y] += 3
    return X, y


@pytest.mark.parametrize("model", ["svm", "knn"])
def test_classifiers_refuse_nan_features(model):
    from idtfv.classify import KNNClassifier, LinearSVM

    make = (lambda: LinearSVM(C=1.0)) if model == "svm" else KNNClassifier
    X, y = _train()
    bad = X.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ParameterError, match=r"X row 7 contains NaN or infinity"):
        make().fit(bad, y)  # was NaN scores for every video
    with pytest.raises(ParameterError, match=r"X row 7 contains NaN or infinity"):
        make().fit(X, y).decision_function(bad)


def test_svm_refuses_bad_targets_and_rows():
    from idtfv.classify import LinearSVM

    X, y = _train()
    cases = [
        (dict(y=np.array(["a", "b", "c"])[y]), r"y must hold integer class ids, got dtype <U1"),  # ValueError
        (dict(y=y + 0.5), r"y must hold integer class ids, got dtype float64"),  # silently truncated
        (dict(y=np.zeros_like(y)), r"y holds one class \(0\), need at least 2"),  # an all-positive "classifier"
        (dict(y=np.full((30, 3), 2)), r"multi-label targets \(n, C\) must hold 0/1 indicators"),
        (dict(y=y[:3], index=np.array([0, 1, 99])), r"index must lie in \[0, 30\).*got 99"),  # IndexError
        (dict(y=y[:3], index=np.array([0, 1, -1])), r"index must lie in \[0, 30\).*got -1"),  # the last row
    ]
    for kw, msg in cases:
        kw = dict(kw)
        with pytest.raises(ParameterError, match=msg):
            LinearSVM(C=1.0).fit(X, kw.pop("y"), **kw)
    # class ids need not be 0..C-1 (they are the score columns' ids), nor ints when integral
    np.testing.assert_array_equal(LinearSVM(C=1.0).fit(X, 2 * y + 5).predict(X),
                                  2 * LinearSVM(C=1.0).fit(X, y.astype(float)).predict(X) + 5)


def test_evaluate_checks_in_memory_scores_as_it_checks_score_files():
    from idtfv.classify import Scores, evaluate

    rng = np.random.default_rng(0)
    S, L = rng.normal(size=(12, 3)), np.arange(12) % 3
    ids, names = [f"v{i}" for i in range(12)], ["a", "b", "c"]
    assert evaluate(Scores(ids, S, names, L), n_bootstrap=10)["n_videos"] == 12
    nan = S.copy()
    nan[4, 0] = np.nan
    cases = [
        (Scores(ids, nan, names, L), r"scores contain NaN or infinity"),  # argmax took NaN as the best class
        (Scores(ids, S, names, np.full(12, 7)), r"label 7 is not a class id in \[0, 3\)"),  # IndexError
        (Scores(ids, S[:, :2], names, L), r"scores must have shape \(n videos, 3 classes\).*got \(12, 2\)"),
        (Scores(ids, S[:, 0], names, L), r".*got \(12,\)"),  # IndexError: too many indices
        (Scores(ids, S, names, L[:5]), r"12 score rows but 12 video ids, labels of shape \(5,\)"),  # 5 of 12 used
    ]
    for sc, msg in cases:
        with pytest.raises(FormatError, match=r"^<scores>: " + msg):
            evaluate(sc, n_bootstrap=10)


def test_fusion_checks_in_memory_scores_too():
    from idtfv.classify import Scores, fuse_scores, stack_scores

    rng = np.random.default_rng(0)
    S, L = rng.normal(size=(6, 2)), np.arange(6) % 2
    good = Scores([f"v{i}" for i in range(6)], S, ["a", "b"], L)
    bad = Scores(good.video_ids, np.where(S > 1.0, np.inf, S), ["a", "b"], L)
    assert np.isfinite(fuse_scores([good, good]).scores).all()
    for fuse in (fuse_scores, stack_scores):
        with pytest.raises(FormatError, match=r"^<scores>: scores contain NaN or infinity"):
            fuse([good, bad])  # was NaN fused scores (z-scores of inf)
