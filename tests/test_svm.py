"""Linear SVM on the linear kernel: same optimum as liblinear (LinearSVC), kernel blocks, multi-label,
C selection against an explicit cross-validation, persistence, determinism, and ``idtfv train-svm``."""

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.svm import LinearSVC

from idtfv.classify import read_scores, write_features
from idtfv.classify._kernel_svm import linear_kernel, primal_weights
from idtfv.classify.svm import LinearSVM, select_C
from idtfv.errors import FormatError, ParameterError


def _problem(n=90, d=30, c=4, seed=0, sep=0.6):
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((c, d))
    y = np.arange(n) % c
    X = sep * mu[y] + rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), y


def _liblinear(X, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at huge max_iter never matters here
        return LinearSVC(dual=True, tol=1e-10, max_iter=1_000_000, **kw).fit(X.astype(np.float64), y)


@pytest.mark.parametrize("loss", ["squared_hinge", "hinge"])
@pytest.mark.parametrize("C", [1.0, 100.0])
def test_matches_linearsvc(loss, C):
    """Same problem as LinearSVC(loss, C, intercept_scaling=1): same weights, bias and predictions."""
    X, y = _problem()
    Xt, _ = _problem(n=60, seed=1)
    ours = LinearSVM(C=C, loss=loss, tol=1e-7, max_iter=100_000).fit(X, y)
    ref = _liblinear(X, y, C=C, loss=loss)
    assert ours.converged_
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-4)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, atol=1e-4)
    np.testing.assert_allclose(ours.decision_function(Xt), ref.decision_function(Xt.astype(np.float64)), atol=1e-4)
    np.testing.assert_array_equal(ours.predict(Xt), ref.predict(Xt.astype(np.float64)))


def test_no_bias_and_intercept_scaling_match_linearsvc():
    X, y = _problem(seed=2)
    ours = LinearSVM(C=10.0, intercept_scaling=0.0, tol=1e-7, max_iter=100_000).fit(X, y)
    ref = _liblinear(X, y, C=10.0, fit_intercept=False)
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-4)
    np.testing.assert_array_equal(ours.intercept_, 0.0)
    ours = LinearSVM(C=10.0, intercept_scaling=3.0, tol=1e-7, max_iter=100_000).fit(X, y)
    ref = _liblinear(X, y, C=10.0, intercept_scaling=3.0)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, atol=1e-4)
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-4)


def test_linear_kernel_blocks_and_index():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((37, 11)).astype(np.float32)
    idx = np.array([5, 0, 36, 7, 7, 20, 1, 30, 2])
    for index, block in [(None, 4), (None, 100), (idx, 2), (idx, 5)]:
        K = linear_kernel(X, index=index, block_rows=block)
        Xs = X if index is None else X[index]
        np.testing.assert_allclose(K, Xs.astype(np.float64) @ Xs.T.astype(np.float64), rtol=1e-5, atol=1e-5)
        assert K.dtype == np.float32 and np.array_equal(K, K.T)
    beta = rng.standard_normal((3, len(idx)))
    np.testing.assert_allclose(primal_weights(X, beta, index=idx, block_rows=2), beta @ X[idx].astype(np.float64))


def test_multilabel_is_independent_binary_svms():
    X, y = _problem(n=80, c=3, seed=4)
    rng = np.random.default_rng(5)
    Y = np.zeros((80, 3), dtype=bool)
    Y[np.arange(80), y] = True
    Y[rng.random((80, 3)) < 0.2] = True  # some videos get a second/third label
    ours = LinearSVM(C=5.0, tol=1e-7, max_iter=100_000).fit(X, Y)
    np.testing.assert_array_equal(ours.classes_, [0, 1, 2])
    for c in range(3):
        ref = _liblinear(X, Y[:, c].astype(int), C=5.0)
        np.testing.assert_allclose(ours.coef_[c], ref.coef_[0], atol=1e-4)
        np.testing.assert_allclose(ours.intercept_[c], ref.intercept_[0], atol=1e-4)


def test_deterministic_across_jobs_and_save_load(tmp_path):
    X, y = _problem(n=60, c=5, seed=6)
    a = LinearSVM(C=100.0, n_jobs=1, random_state=3).fit(X, y)
    b = LinearSVM(C=100.0, n_jobs=2, random_state=3).fit(X, y)
    assert a.coef_.tobytes() == b.coef_.tobytes() and a.intercept_.tobytes() == b.intercept_.tobytes()
    npz, js = a.save(tmp_path / "m", extra={"class_names": list("abcde")})
    back = LinearSVM.load(npz)
    assert back.decision_function(X).tobytes() == a.decision_function(X).tobytes()
    assert json.loads(js.read_text())["class_names"] == list("abcde")
    js.write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        LinearSVM.load(npz)



def _npy_bytes():
    import io

    buf = io.BytesIO()
    np.save(buf, np.ones((5, 4)))
    return buf.getvalue()


@pytest.mark.parametrize("damage, needle", [
    (lambda npz, js: npz.write_bytes(npz.read_bytes()[:200]), "not a readable .npz"),  # truncated copy
    (lambda npz, js: npz.write_bytes(b""), "an empty file"),
    (lambda npz, js: npz.write_bytes(_npy_bytes()), "single .npy array"),
    (lambda npz, js: np.savez(npz, coef=np.full((5, 4), np.nan), intercept=np.ones(5), classes=np.arange(5)),
     "NaN"),
    (lambda npz, js: js.write_text("[1, 2]"), "a JSON list"),
    (lambda npz, js: js.write_bytes(js.read_bytes().replace(b'"b"', b'"\xe9"')), "not UTF-8"),
])
def test_a_damaged_model_file_is_a_format_error_naming_it(tmp_path, damage, needle):
    """idtfv detect --svm DIR reads a model a user may have copied or edited: each damage is a FormatError naming
    the file (before, a truncated or empty model.npz, a .npy, a JSON list or Latin-1 text were tracebacks)."""
    X, y = _problem(n=30, c=5, seed=2)
    npz, js = LinearSVM(C=1.0).fit(X, y).save(tmp_path / "m", extra={"class_names": list("abcde")})
    damage(npz, js)
    with pytest.raises(FormatError, match=needle) as info:
        LinearSVM.load(npz)
    assert str(info.value).startswith(str(tmp_path / "m."))


def test_a_model_json_with_a_bom_or_crlf_loads(tmp_path):
    X, y = _problem(n=30, c=5, seed=2)
    a = LinearSVM(C=1.0).fit(X, y)
    npz, js = a.save(tmp_path / "m")
    js.write_bytes(b"\xef\xbb\xbf" + js.read_bytes().replace(b"\n", b"\r\n"))
    assert LinearSVM.load(npz).decision_function(X).tobytes() == a.decision_function(X).tobytes()

def test_absent_class_and_bad_params():
    X, y = _problem(n=40, c=2, seed=7)
    m = LinearSVM(C=1.0).fit(X, y, classes=[0, 1, 2])  # class 2 has no training video
    s = m.decision_function(X)
    assert s.shape == (40, 3) and (s[:, 2] < 0).all()
    with pytest.raises(ParameterError, match="C must be a positive"):
        LinearSVM(C=-1.0).fit(X, y)
    with pytest.raises(ParameterError, match="loss must be one of"):
        LinearSVM(loss="log").fit(X, y)


def test_select_C_equals_explicit_cross_validation():
    """The kernel-sliced CV gives the same fold accuracies as retraining on explicit feature subsets."""
    from sklearn.model_selection import StratifiedKFold

    X, y = _problem(n=90, c=3, seed=8, sep=0.3)
    K = linear_kernel(X)
    Cs = [0.01, 1.0, 100.0]
    got = select_C(K, y, classes=[0, 1, 2], Cs=Cs, n_folds=3, random_state=0, tol=1e-6, max_iter=100_000)
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    expect = []
    for C in Cs:
        accs = []
        for tr, va in folds:
            m = LinearSVM(C=C, tol=1e-6, max_iter=100_000).fit(X[tr], y[tr], classes=[0, 1, 2])
            accs.append(np.mean(m.predict(X[va]) == y[va]))
        expect.append(np.mean(accs))
    np.testing.assert_allclose(got["scores"], expect, atol=1e-12)
    assert got["best_C"] == Cs[int(np.argmax(expect))]
    grouped = select_C(K, y, classes=[0, 1, 2], Cs=Cs, n_folds=3, groups=np.arange(90) // 10)
    assert grouped["grouped"] and grouped["n_folds"] == 3


# ------------------------------------------------------------------------------------------- CLI


def _write_dataset(tmp_path, n_per_class=12, c=4, d=24, seed=0):
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((c, d))
    lines = ["video_id,path,label,label_name,group,split1,frames,fps,width,height"]
    ids, feats, labels = [], [], []
    for k in range(c):
        for j in range(n_per_class):
            vid = f"v_c{k}_{j:02d}"
            split = "train" if j < 2 * n_per_class // 3 else "test"
            lines.append(f"{vid},{vid}.avi,{k},cls{k},g{j % 4},{split},,,,")
            ids.append(vid)
            feats.append(mu[k] + 0.8 * rng.standard_normal(d))
            labels.append(k)
    man = tmp_path / "manifest.csv"
    man.write_text("\n".join(lines) + "\n")
    # feature rows shuffled, one test video missing (failed extraction)
    order = rng.permutation(len(ids))[1:]
    fv = write_features(tmp_path / "fv.npz", [ids[i] for i in order], np.array(feats)[order],
                        np.array(labels)[order])
    missing = ids[np.setdiff1d(np.arange(len(ids)), order)[0]]
    return man, fv, missing


def test_cli_train_svm_end_to_end(tmp_path, capsys):
    from idtfv.cli import main

    man, fv, missing = _write_dataset(tmp_path)
    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        rc = main(["train-svm", "--manifest", str(man), "--features", str(fv), "--split", "1", "--out", str(out),
                   "--cv-C", "--C-grid", "1", "100", "--jobs", "2", "--seed", "1"])
        assert rc == 0
        outs.append(out)
    text = capsys.readouterr().out
    assert "accuracy" in text
    a, b = outs
    for name in ("scores.csv", "report.json", "model.npz", "model.json", "confusion.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    report = json.loads((a / "report.json").read_text())
    sc = read_scores(a / "scores.csv")
    assert missing not in sc.video_ids
    # the report's accuracy is the naive accuracy of the written scores
    assert report["accuracy"] == pytest.approx(np.mean(sc.scores.argmax(1) == sc.labels))
    assert report["accuracy"] > 0.8  # 4 well-separated classes: far above chance (0.25)
    assert report["training"]["C"] in (1.0, 100.0) and report["training"]["cv"]["Cs"] == [1.0, 100.0]
    assert report["training"]["n_missing_train"] + report["training"]["n_missing_test"] == 1
    model = LinearSVM.load(a / "model.npz")
    from idtfv.classify import read_features

    f = read_features(fv)
    pos = {v: i for i, v in enumerate(f.video_ids)}
    np.testing.assert_allclose(model.decision_function(f.features[[pos[v] for v in sc.video_ids]]), sc.scores,
                               rtol=0, atol=1e-12)


def test_cli_train_svm_bad_input(tmp_path, capsys):
    from idtfv.cli import main

    man, fv, _ = _write_dataset(tmp_path)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    assert main(["train-svm", "--manifest", str(man), "--features", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.npz" in err and len(err.strip().splitlines()) == 1
    assert main(["train-svm", "--manifest", str(man), "--features", str(tmp_path / "nope.npz"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "nope.npz" in capsys.readouterr().err


def test_cli_train_svm_multilabel(tmp_path):
    """Hollywood2-style manifest (``label`` = ids joined by ';'): per-class SVMs, mAP, no confusion matrix."""
    from idtfv.cli import main

    rng = np.random.default_rng(9)
    mu = rng.standard_normal((3, 16)) * 2
    lines = ["video_id,path,label,label_name,group,split1,frames,fps,width,height"]
    ids, X = [], []
    names = ["run", "kiss", "eat"]
    for i in range(48):
        labs = sorted({i % 3} | ({(i + 1) % 3} if i % 4 == 0 else set()))
        lines.append(f"v{i},v{i}.avi,{';'.join(map(str, labs))},{';'.join(names[j] for j in labs)},,"
                     f"{'train' if i < 32 else 'test'},,,,")
        ids.append(f"v{i}")
        X.append(mu[labs].sum(0) + rng.standard_normal(16))
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    write_features(tmp_path / "f.npz", ids, np.array(X))
    out = tmp_path / "o"
    assert main(["train-svm", "--manifest", str(tmp_path / "m.csv"), "--features", str(tmp_path / "f.npz"),
                 "--out", str(out), "--C", "1"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["multilabel"] and rep["confusion"] is None and not (out / "confusion.png").exists()
    assert rep["mAP"] > 0.8
    sc = read_scores(out / "scores.csv")
    assert sc.video_ids[0] == "v32" and sc.label_sets[0] == (0, 2)  # 32 % 3 = 2 and 32 % 4 == 0 adds 33 % 3 = 0


def test_report_json_is_written_last_and_a_stale_one_goes_first(tmp_path, monkeypatch):
    """report.json marks a finished run: every other output is in place before it, and a rerun removes the old one
    before writing anything, so a run killed half way never looks complete."""
    from idtfv.classify.stage import run_svm_split

    man, fv, _ = _write_dataset(tmp_path)
    out = tmp_path / "svm"
    written = []
    real_replace = os.replace

    def recording_replace(src, dst, *args, **kwargs):
        written.append(Path(dst).name)
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", recording_replace)
    run_svm_split(man, fv, 1, out, C=1.0)
    assert written[-1] == "report.json" and written.count("report.json") == 1, written
    assert {"scores.csv", "confusion.png", "model.npz", "model.json"} <= set(written[:-1])

    def killed(*args, **kwargs):  # the process dies while saving the model of the second run
        raise KeyboardInterrupt

    monkeypatch.setattr(LinearSVM, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        run_svm_split(man, fv, 1, out, C=10.0)
    assert not (out / "report.json").exists()


def test_train_svm_outputs_do_not_depend_on_jobs(tmp_path):
    """Result files hold no run-environment detail: --jobs 1 and --jobs 2 give the same bytes, model.json too."""
    from idtfv.cli import main

    man, fv, _ = _write_dataset(tmp_path)
    for jobs in ("1", "2"):
        assert main(["train-svm", "--manifest", str(man), "--features", str(fv), "--out", str(tmp_path / jobs),
                     "--jobs", jobs, "--C", "10"]) == 0
    names = sorted(p.name for p in (tmp_path / "1").iterdir())
    assert names == [".lock", "confusion.png", "model.json", "model.npz", "report.json", "scores.csv"]  # .lock: empty
    for name in names:
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes(), name
    assert "n_jobs" not in (tmp_path / "1" / "model.json").read_text()


def _small_dataset(tmp_path, train, test, names=None, seed=0):
    """Manifest + features: ``train``/``test`` are the label ids of the split's videos (features near a class
    mean; test videos of class 2 are drawn near class 0's mean, so they are misclassified)."""
    rng = np.random.default_rng(seed)
    mu = 3 * rng.standard_normal((max(train + test) + 1, 8))
    lines = ["video_id,path,label,label_name,group,split1,frames,fps,width,height"]
    ids, X, y = [], [], []
    for i, (k, split) in enumerate([(k, "train") for k in train] + [(k, "test") for k in test]):
        name = names[k] if names else f"c{k}"
        lines.append(f"v{i},v{i}.avi,{k},{name},,{split},,,,")
        ids.append(f"v{i}")
        X.append((mu[0] if split == "test" and k == 2 else mu[k]) + rng.standard_normal(8))
        y.append(k)
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    write_features(tmp_path / "f.npz", ids, np.array(X), np.array(y))
    return tmp_path / "m.csv", tmp_path / "f.npz"


def test_train_svm_on_small_data_reports_undefined_figures_as_such(tmp_path, capsys):
    """Only class c2 has test videos, all misclassified: accuracy 0; the per-class figures of c0 and c1 and the AP
    of c2 (every test video is positive: the ranking measures nothing) are undefined, not 0 or 100%."""
    from idtfv.cli import main

    man, fv = _small_dataset(tmp_path, train=[0, 1, 2] * 4, test=[2, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "Mean of empty slice"
        assert main(["train-svm", "--manifest", str(man), "--features", str(fv), "--out", str(tmp_path / "o")]) == 0
    out, err = capsys.readouterr()
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["accuracy"] == 0.0 and rep["mean_class_accuracy"] == 0.0
    assert rep["mAP"] is None and rep["average_precision"] == {"c0": None, "c1": None, "c2": None}
    assert rep["per_class_accuracy"] == {"c0": None, "c1": None, "c2": 0.0}
    assert "accuracy 0.00%" in out and "mAP n/a" in out and "100.00%" not in out
    warned = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1 and "'c0'" in warned[0] and "'c1'" in warned[0] and "undefined" in warned[0], err
    assert "RuntimeWarning" not in err and len(err.splitlines()) == 1


def test_train_svm_refuses_label_ids_with_gaps(tmp_path, capsys):
    """Labels 0, 1, 3: id 2 names no video, so the manifest would give a placeholder class 'class2'."""
    from idtfv.cli import main

    man, fv = _small_dataset(tmp_path, train=[0, 1, 3] * 4, test=[0, 1, 3])
    for command in ("train-svm", "train-knn"):
        assert main([command, "--manifest", str(man), "--features", str(fv), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and "m.csv" in err, err
        assert "label id 2" in err and "0..3" in err and not (tmp_path / "o" / "report.json").exists()


def test_train_svm_warns_about_a_class_without_training_videos(tmp_path, capsys):
    from idtfv.cli import main

    man, fv = _small_dataset(tmp_path, train=[0, 1] * 5, test=[0, 1, 2], names=["run", "jump", "swim"])
    assert main(["train-svm", "--manifest", str(man), "--features", str(fv), "--out", str(tmp_path / "o")]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1 and "'swim'" in warned[0] and "no training video" in warned[0], warned


def test_select_C_refuses_folds_with_no_defined_metric():
    """Multi-label data where every video carries every label: no fold has a negative, so no AP is defined and no C
    can be chosen (a clear error, not numpy's all-NaN ValueError)."""
    X, _ = _problem(n=12, c=2, seed=9)
    Y = np.ones((12, 2), dtype=bool)
    with pytest.raises(ParameterError, match="no validation fold has a defined mAP"):
        select_C(linear_kernel(X), Y, classes=[0, 1], Cs=[1.0, 10.0], n_folds=3)
    with pytest.raises(ParameterError, match="needs at least 13 training videos, got 12"):
        select_C(linear_kernel(X), Y, classes=[0, 1], Cs=[1.0], n_folds=13)
