"""evaluate(): every number against a naive computation written here (loops over videos and ranks)."""

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from idtfv.classify import Scores, evaluate, write_scores
from idtfv.classify.evaluate import average_precision
from idtfv.errors import FormatError, ParameterError


def _naive_ap(scores, pos):
    """Mean over positives of the precision at that positive's rank (distinct scores)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    hits, precs = 0, []
    for rank, i in enumerate(order, start=1):
        if pos[i]:
            hits += 1
            precs.append(hits / rank)
    return sum(precs) / len(precs)


def _random(n=50, c=7, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    s = rng.standard_normal((n, c))
    s[np.arange(n), y] += 1.0  # better than chance
    return s, y


def test_average_precision_against_naive_and_sklearn():
    rng = np.random.default_rng(1)
    for _ in range(20):
        s = rng.standard_normal(30)
        pos = rng.random(30) < 0.3
        pos[0] = True
        assert average_precision(s, pos) == pytest.approx(_naive_ap(s, pos), abs=1e-12)
        tied = np.round(s)  # many ties: must follow sklearn's threshold convention
        assert average_precision(tied, pos) == pytest.approx(average_precision_score(pos, tied), abs=1e-12)
    assert np.isnan(average_precision(s, np.zeros(30, bool)))


def test_single_split_metrics_against_naive(tmp_path):
    s, y = _random()
    n, c = s.shape
    ids = [f"v{i}" for i in range(n)]
    sc = Scores(ids, s, [f"c{j}" for j in range(c)], y.astype(np.int64))
    rep = evaluate(sc, confusion_png=tmp_path / "cm.png", report_json=tmp_path / "r.json")
    pred = [max(range(c), key=lambda j: s[i, j]) for i in range(n)]
    assert rep["accuracy"] == pytest.approx(sum(p == t for p, t in zip(pred, y)) / n)
    for j in range(c):
        mem = [i for i in range(n) if y[i] == j]
        want = sum(pred[i] == j for i in mem) / len(mem) if mem else None
        got = rep["per_class_accuracy"][f"c{j}"]
        assert (got is None and want is None) or got == pytest.approx(want)
    top5 = sum(y[i] in sorted(range(c), key=lambda j: -s[i, j])[:5] for i in range(n)) / n
    assert rep["top5"] == pytest.approx(top5)
    aps = [_naive_ap(s[:, j], y == j) for j in range(c) if (y == j).any()]
    assert rep["mAP"] == pytest.approx(np.mean(aps))
    cm = np.zeros((c, c), int)
    for p, t in zip(pred, y):
        cm[t][p] += 1
    assert rep["confusion"] == cm.tolist()
    on_disk = json.loads((tmp_path / "r.json").read_text())
    assert on_disk["accuracy"] == rep["accuracy"]
    png = (tmp_path / "cm.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_several_splits_are_averaged_and_no_top5_below_5_classes(tmp_path):
    paths, accs = [], []
    for k in range(3):
        s, y = _random(n=40, c=4, seed=10 + k)
        p = write_scores(tmp_path / f"s{k}.csv", [f"v{i}" for i in range(40)], s, list("abcd"), y)
        paths.append(p)
        accs.append(np.mean(s.argmax(1) == y))
    rep = evaluate(paths)
    assert rep["n_splits"] == 3
    assert rep["accuracy"] == pytest.approx(np.mean(accs))
    assert rep["accuracy_std"] == pytest.approx(np.std(accs))
    assert [x["accuracy"] for x in rep["splits"]] == pytest.approx(accs)
    assert rep["top5"] is None
    assert sum(map(sum, rep["confusion"])) == 120  # summed over splits


def test_multilabel_map():
    rng = np.random.default_rng(3)
    n, c = 40, 5
    T = rng.random((n, c)) < 0.3
    T[np.arange(n), rng.integers(0, c, n)] = True
    s = rng.standard_normal((n, c)) + T
    sets = [tuple(np.flatnonzero(r)) for r in T]
    sc = Scores([f"v{i}" for i in range(n)], s, list("abcde"), np.full(n, -1), sets)
    rep = evaluate(sc)
    assert rep["multilabel"] and rep["confusion"] is None
    assert rep["mAP"] == pytest.approx(np.mean([_naive_ap(s[:, j], T[:, j]) for j in range(c)]))
    assert rep["accuracy"] == pytest.approx(np.mean(T[np.arange(n), s.argmax(1)]))


def _manifest(tmp_path):
    lines = ["video_id,path,label,label_name,group,split1,split2,frames,fps,width,height"]
    for i in range(12):
        k = i % 3
        lines.append(f"v{i},v{i}.avi,{k},cls{k},,{'test' if i < 6 else 'train'},{'train' if i < 6 else 'test'},,,,")
    p = tmp_path / "m.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_manifest_labels_split_and_errors(tmp_path):
    man = _manifest(tmp_path)
    rng = np.random.default_rng(4)
    s = rng.standard_normal((5, 3))
    names = ["cls0", "cls1", "cls2"]
    p = write_scores(tmp_path / "s.csv", [f"v{i}" for i in range(5)], s, names)  # no labels in the file
    with pytest.warns(UserWarning, match="lacks 1 of the 6 test videos of split 1 \\(e.g. 'v5'\\)"):
        rep = evaluate(p, manifest=man, split=1)
    y = np.arange(5) % 3
    assert rep["accuracy"] == pytest.approx(np.mean(s.argmax(1) == y))
    assert rep["splits"][0]["n_missing"] == 1 and rep["n_videos"] == 5
    with pytest.raises(FormatError, match="none of the 6 test videos of split 2"):
        evaluate(p, manifest=man, split=2)  # these are split-2 training videos
    with pytest.raises(FormatError, match="no video has a known label"):
        evaluate(write_scores(tmp_path / "u.csv", ["v0"], s[:1], names))
    bad = write_scores(tmp_path / "b.csv", ["v0", "zz"], s[:2], names)
    with pytest.raises(FormatError, match="'zz' is not in the manifest"):
        evaluate(bad, manifest=man)
    other = write_scores(tmp_path / "o.csv", ["v0"], s[:1], ["x", "y", "z"])
    with pytest.raises(FormatError, match="class names differ"):
        evaluate(other, manifest=man)
    wrong = write_scores(tmp_path / "w.csv", ["v0"], s[:1], names, [2])
    with pytest.raises(FormatError, match="label"):
        evaluate(wrong, manifest=man)
    with pytest.raises(ParameterError, match="needs manifest"):
        evaluate(p, split=1)


def test_cli_evaluate(tmp_path, capsys):
    from idtfv.cli import main

    s, y = _random(n=30, c=6, seed=5)
    p = write_scores(tmp_path / "s.csv", [f"v{i}" for i in range(30)], s, list("abcdef"), y)
    assert main(["evaluate", str(p), "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert f"accuracy {100 * np.mean(s.argmax(1) == y):.2f}%" in out
    assert (tmp_path / "ev" / "confusion.png").exists() and (tmp_path / "ev" / "report.json").exists()
    (tmp_path / "bad.csv").write_text("nonsense\n")
    assert main(["evaluate", str(tmp_path / "bad.csv")]) == 2
    assert "bad.csv" in capsys.readouterr().err


def test_missing_test_videos_of_the_split_are_warned_once(tmp_path, capsys):
    from idtfv.cli import main

    man = _manifest(tmp_path)  # split 1: test videos v0..v5
    s = np.random.default_rng(6).standard_normal((3, 3))
    p = write_scores(tmp_path / "s.csv", ["v0", "v2", "v4"], s, ["cls0", "cls1", "cls2"])  # one per class
    with pytest.warns(UserWarning, match=r"lacks 3 of the 6 test videos of split 1 \(e\.g\. 'v1', 'v3', 'v5'\)"):
        rep = evaluate(p, manifest=man, split=1)
    assert rep["splits"][0]["n_missing"] == 3 and rep["n_videos"] == 3
    assert main(["evaluate", "--manifest", str(man), "--split", "1", str(p)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and "s.csv" in err[0] and "3 of the 6" in err[0], err


def test_a_class_without_test_videos_has_undefined_figures_and_no_numpy_warning(tmp_path):
    """Classes a, b have no test video; every test video is of class c, so c's AP (a ranking without negatives)
    is undefined too: all null, said once, left out of the means (never 'mAP 100%')."""
    import warnings

    s = np.array([[2.0, 0.0, 1.0], [0.0, 2.0, 1.0]])
    sc = Scores(["v0", "v1"], s, list("abc"), np.array([2, 2]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rep = evaluate(sc)
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "'a'" in messages[0] and "'b'" in messages[0] and "'c'" in messages[0], messages
    assert rep["accuracy"] == 0.0 and rep["mean_class_accuracy"] == 0.0 and rep["mAP"] is None
    assert rep["per_class_accuracy"] == {"a": None, "b": None, "c": 0.0}
    assert rep["average_precision"] == {"a": None, "b": None, "c": None}
    # with a negative in the split, c's AP is defined again and is the naive one
    s3 = np.vstack([s, [[1.5, 0.5, 3.0]]])
    sc = Scores(["v0", "v1", "v2"], s3, list("abc"), np.array([2, 2, 0]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rep = evaluate(sc)
    for j, name in ((0, "a"), (2, "c")):
        want = average_precision_score(np.array([2, 2, 0]) == j, s3[:, j])
        assert rep["average_precision"][name] == pytest.approx(want)
    assert rep["average_precision"]["b"] is None and rep["per_class_accuracy"]["b"] is None
    assert len(caught) == 1 and "'b'" in str(caught[0].message) and "'a'" not in str(caught[0].message)
