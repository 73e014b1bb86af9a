"""k-NN baseline against a brute-force loop; the CLI end to end."""

import json

import numpy as np
import pytest

from idtfv.classify import write_features
from idtfv.classify.knn import KNNClassifier, nearest_neighbors


def _naive_knn_scores(Xtr, ytr, Xte, k, metric, c):
    out = np.zeros((len(Xte), c))
    for i, x in enumerate(Xte):
        if metric == "cosine":
            sims = [float(x @ t / (np.linalg.norm(x) * np.linalg.norm(t))) for t in Xtr]
        else:
            sims = [-float(((x - t) ** 2).sum()) for t in Xtr]
        order = sorted(range(len(Xtr)), key=lambda j: (-sims[j], j))[:k]
        for r, j in enumerate(order):
            out[i, ytr[j]] += 1 + 1e-6 * (k - r) / k
    return out


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_knn_against_brute_force(metric):
    rng = np.random.default_rng(0)
    Xtr = rng.standard_normal((40, 6)).astype(np.float32)
    ytr = rng.integers(0, 3, 40)
    Xte = rng.standard_normal((15, 6)).astype(np.float32)
    knn = KNNClassifier(n_neighbors=5, metric=metric).fit(Xtr, ytr, classes=[0, 1, 2])
    want = _naive_knn_scores(Xtr.astype(np.float64), ytr, Xte.astype(np.float64), 5, metric, 3)
    np.testing.assert_allclose(knn.decision_function(Xte), want, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(knn.predict(Xte), want.argmax(1))
    idx, _ = nearest_neighbors(Xtr, Xte, 1, metric=metric)
    assert idx.shape == (15, 1)


def test_knn_recovers_planted_classes_and_distance_weights():
    rng = np.random.default_rng(1)
    mu = rng.standard_normal((4, 20)) * 3
    ytr = np.repeat(np.arange(4), 10)
    Xtr = mu[ytr] + rng.standard_normal((40, 20))
    yte = np.repeat(np.arange(4), 5)
    Xte = mu[yte] + rng.standard_normal((20, 20))
    for weights in ("uniform", "distance"):
        for metric in ("cosine", "l2"):
            pred = KNNClassifier(n_neighbors=3, metric=metric, weights=weights).fit(Xtr, ytr).predict(Xte)
            assert np.mean(pred == yte) >= 0.95


def test_cli_train_knn(tmp_path, capsys):
    from idtfv.cli import main

    rng = np.random.default_rng(2)
    mu = rng.standard_normal((3, 10)) * 2
    lines = ["video_id,path,label,label_name,group,split1,frames,fps,width,height"]
    ids, X, y = [], [], []
    for i in range(30):
        k = i % 3
        lines.append(f"v{i},v{i}.avi,{k},c{k},,{'train' if i < 21 else 'test'},,,,")
        ids.append(f"v{i}")
        X.append(mu[k] + rng.standard_normal(10))
        y.append(k)
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    write_features(tmp_path / "f.npz", ids, np.array(X), y)
    out = tmp_path / "knn"
    assert main(["train-knn", "--manifest", str(tmp_path / "m.csv"), "--features", str(tmp_path / "f.npz"),
                 "--out", str(out), "--k", "3"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["n_videos"] == 9 and rep["accuracy"] >= 0.8
    assert "accuracy" in capsys.readouterr().out
    assert main(["train-knn", "--manifest", str(tmp_path / "m.csv"), "--features", str(tmp_path / "f.npz"),
                 "--out", str(out), "--k", "100"]) == 2
    assert "n_neighbors must be in 1..21" in capsys.readouterr().err


def test_knn_row_indices_equal_copies():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((50, 8)).astype(np.float32)
    y = rng.integers(0, 4, 30)
    tr, te = rng.permutation(50)[:30], rng.permutation(50)[:12]
    a = KNNClassifier(n_neighbors=4).fit(X, y, classes=range(4), index=tr).decision_function(X, index=te)
    b = KNNClassifier(n_neighbors=4).fit(X[tr], y, classes=range(4)).decision_function(X[te])
    np.testing.assert_array_equal(a, b)
    idx, _ = nearest_neighbors(X, X, 3, train_index=tr, test_index=te, block_rows=7)
    idx2, _ = nearest_neighbors(X[tr], X[te], 3)
    np.testing.assert_array_equal(idx, idx2)
