"""Late fusion: naive per-video normalisation + weighted average, alignment by video id, clear errors."""

import math

import numpy as np
import pytest

from idtfv.classify import Scores, fuse_scores, read_scores, write_scores
from idtfv.errors import FormatError, ParameterError


def _naive_norm(row, method):
    if method == "none":
        return list(row)
    if method == "softmax":
        m = max(row)
        e = [math.exp(v - m) for v in row]
        return [v / sum(e) for v in e]
    mu = sum(row) / len(row)
    sd = math.sqrt(sum((v - mu) ** 2 for v in row) / len(row))
    return [(v - mu) / sd if sd > 0 else 0.0 for v in row]


@pytest.mark.parametrize("method", ["zscore", "softmax", "none"])
def test_weighted_average_against_naive(tmp_path, method):
    rng = np.random.default_rng(0)
    ids = [f"v{i}" for i in range(6)]
    a = rng.standard_normal((6, 4)) * 5
    b = rng.standard_normal((6, 4))
    a[2] = 1.5  # a constant row: z-score gives zeros
    perm = rng.permutation(6)  # the second file lists the videos in another order
    pa = write_scores(tmp_path / "a.csv", ids, a, list("wxyz"), [0, 1, 2, 3, 0, -1])
    pb = write_scores(tmp_path / "b.csv", [ids[i] for i in perm], b[perm], list("wxyz"),
                      [[0, 1, 2, 3, 0, 1][i] for i in perm])
    fused = fuse_scores([pa, pb], weights=[1.0, 3.0], normalize=method)
    assert fused.video_ids == ids
    for i in range(6):
        want = [(1 * p + 3 * q) / 4 for p, q in zip(_naive_norm(a[i], method), _naive_norm(b[i], method))]
        np.testing.assert_allclose(fused.scores[i], want, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(fused.labels, [0, 1, 2, 3, 0, 1])  # unknown label filled from the 2nd file


def test_fusion_can_beat_both_inputs():
    """Two noisy views of a planted truth with independent noise: the fused argmax is more accurate."""
    rng = np.random.default_rng(1)
    n, c = 2000, 10
    y = rng.integers(0, c, n)
    views = []
    for scale in (1.0, 7.0):  # different score scales: z-scoring makes them comparable
        s = rng.standard_normal((n, c)) * 1.2
        s[np.arange(n), y] += 1.0
        views.append(Scores([f"v{i}" for i in range(n)], s * scale, [str(j) for j in range(c)], y))
    accs = [np.mean(v.scores.argmax(1) == y) for v in views]
    fused = fuse_scores(views)
    assert np.mean(fused.scores.argmax(1) == y) > max(accs) + 0.05


def test_fusion_errors(tmp_path):
    s = np.zeros((2, 2))
    a = write_scores(tmp_path / "a.csv", ["v1", "v2"], s, ["p", "q"], [0, 1])
    b = write_scores(tmp_path / "b.csv", ["v1", "v3"], s, ["p", "q"], [0, 1])
    c = write_scores(tmp_path / "c.csv", ["v1", "v2"], s, ["q", "p"], [0, 1])
    d = write_scores(tmp_path / "d.csv", ["v1", "v2"], s, ["p", "q"], [1, 1])
    with pytest.raises(FormatError, match=r"b\.csv.*video ids differ.*'v2'"):
        fuse_scores([a, b])
    with pytest.raises(FormatError, match=r"c\.csv.*class names differ"):
        fuse_scores([a, c])
    with pytest.raises(FormatError, match=r"d\.csv.*conflicts"):
        fuse_scores([a, d])
    with pytest.raises(ParameterError, match="weights"):
        fuse_scores([a, a], weights=[1.0])
    with pytest.raises(ParameterError, match="weights"):
        fuse_scores([a, a], weights=[0.0, 0.0])
    with pytest.raises(ParameterError, match="normalize"):
        fuse_scores([a, a], normalize="rank")


def test_cli_fuse(tmp_path, capsys):
    from idtfv.cli import main

    rng = np.random.default_rng(2)
    ids = [f"v{i}" for i in range(20)]
    y = rng.integers(0, 3, 20)
    pa = write_scores(tmp_path / "a.csv", ids, rng.standard_normal((20, 3)), list("abc"), y)
    pb = write_scores(tmp_path / "b.csv", ids, rng.standard_normal((20, 3)), list("abc"), y)
    out = tmp_path / "f.csv"
    assert main(["fuse", str(pa), str(pb), "--weights", "2,1", "--normalize", "softmax", "--out", str(out),
                 "--report", str(tmp_path / "r.json")]) == 0
    assert "accuracy" in capsys.readouterr().out
    got = read_scores(out)
    np.testing.assert_allclose(got.scores, fuse_scores([pa, pb], weights=[2, 1], normalize="softmax").scores)
    assert (tmp_path / "r.json").exists()
    assert main(["fuse", str(pa), str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
    assert "missing.csv" in capsys.readouterr().err


def test_softmax_and_zscore_against_naive():
    rng = np.random.default_rng(3)
    s = rng.standard_normal((5, 4)) * 30  # large logits: the max shift keeps exp finite
    s[1] = 7.0  # a constant row
    from idtfv.classify import NORMALIZERS, softmax, zscore

    for i in range(5):
        np.testing.assert_allclose(softmax(s)[i], _naive_norm(s[i], "softmax"), rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(zscore(s)[i], _naive_norm(s[i], "zscore"), rtol=1e-12, atol=1e-12)
    assert np.all(zscore(s)[1] == 0) and np.allclose(softmax(s).sum(1), 1)
    assert NORMALIZERS["softmax"] is softmax and NORMALIZERS["zscore"] is zscore


def test_stack_scores_against_naive(tmp_path):
    from idtfv.classify import stack_scores

    rng = np.random.default_rng(4)
    ids = [f"v{i}" for i in range(5)]
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((5, 3)) * 4
    perm = [3, 0, 4, 1, 2]
    pa = write_scores(tmp_path / "a.csv", ids, a, list("xyz"), [0, 1, 2, -1, 0])
    pb = write_scores(tmp_path / "b.csv", [ids[i] for i in perm], b[perm], list("xyz"),
                      [[0, 1, 2, 1, 0][i] for i in perm])
    for method in ("softmax", "zscore", "none"):
        f = stack_scores([pa, pb], normalize=method)
        assert f.video_ids == ids and f.features.shape == (5, 6) and f.features.dtype == np.float32
        for i in range(5):
            want = _naive_norm(a[i], method) + _naive_norm(b[i], method)
            np.testing.assert_allclose(f.features[i], want, rtol=1e-6, atol=1e-6)
        assert f.labels.tolist() == [0, 1, 2, 1, 0]  # the unknown label filled from the 2nd input
    c = write_scores(tmp_path / "c.csv", ids[:4], a[:4], list("xyz"))
    with pytest.raises(FormatError, match=r"^run_c: video ids differ from run_a's"):
        stack_scores([pa, c], sources=["run_a", "run_c"])
    with pytest.raises(ParameterError, match="normalize"):
        stack_scores([pa], normalize="rank")
