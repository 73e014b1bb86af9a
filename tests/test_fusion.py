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
    assert main(["fuse", str(pa), str(pb), "--weights", "2", "1", "--normalize", "softmax", "--out", str(out),
                 "--report", str(tmp_path / "r.json")]) == 0
    assert "accuracy" in capsys.readouterr().out
    got = read_scores(out)
    np.testing.assert_allclose(got.scores, fuse_scores([pa, pb], weights=[2, 1], normalize="softmax").scores)
    assert (tmp_path / "r.json").exists()
    assert main(["fuse", str(pa), str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
    assert "missing.csv" in capsys.readouterr().err
