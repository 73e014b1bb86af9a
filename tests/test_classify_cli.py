"""The classify subcommands' command lines: list options (``evaluate --split``, ``fuse --weights``) take one value
or a comma list per occurrence, so they never swallow the score files after them; every bad input is one
``error:`` line with exit status 2 that shows plain numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from idtfv.classify import evaluate, fuse_scores, read_scores, write_scores
from idtfv.cli import main

NAMES = ["cls0", "cls1", "cls2"]


def _manifest(tmp_path):
    """12 videos, label i % 3; split 1 tests v0..v5, split 2 tests v6..v11."""
    lines = ["video_id,path,label,label_name,group,split1,split2,frames,fps,width,height"]
    for i in range(12):
        k = i % 3
        lines.append(f"v{i},v{i}.avi,{k},cls{k},,{'test' if i < 6 else 'train'},{'train' if i < 6 else 'test'},,,,")
    path = tmp_path / "m.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _scores(tmp_path, name, ids, seed, labels=None):
    s = np.random.default_rng(seed).standard_normal((len(ids), 3))
    return write_scores(tmp_path / name, ids, s, NAMES, labels)


@pytest.fixture
def split_files(tmp_path):
    man = _manifest(tmp_path)
    one = _scores(tmp_path, "one.csv", [f"v{i}" for i in range(6)], 1)
    two = _scores(tmp_path, "two.csv", [f"v{i}" for i in range(6, 12)], 2)
    return man, one, two


def _report(tmp_path, argv, capsys):
    out = tmp_path / "ev"
    assert main(["evaluate", *map(str, argv), "--out", str(out)]) == 0, capsys.readouterr().err
    return json.loads((out / "report.json").read_text())


def test_evaluate_split_before_the_score_file(tmp_path, split_files, capsys):
    man, one, _ = split_files
    got = _report(tmp_path, ["--manifest", man, "--split", "1", one], capsys)
    want = evaluate(one, manifest=man, split=1)
    assert got["accuracy"] == pytest.approx(want["accuracy"]) and got["splits"][0]["split"] == 1
    y = np.arange(6) % 3
    assert got["accuracy"] == pytest.approx(np.mean(read_scores(one).scores.argmax(1) == y))


@pytest.mark.parametrize("split_args", [["--split", "1,2"], ["--split", "1", "--split", "2"]])
def test_evaluate_one_split_per_file_as_a_comma_list_or_repeated(tmp_path, split_files, split_args, capsys):
    man, one, two = split_files
    got = _report(tmp_path, ["--manifest", man, *split_args, one, two], capsys)
    want = evaluate([one, two], manifest=man, split=[1, 2])
    assert [s["split"] for s in got["splits"]] == [1, 2] and got["n_splits"] == 2
    assert got["accuracy"] == pytest.approx(want["accuracy"])
    assert got["accuracy"] == pytest.approx(np.mean([s["accuracy"] for s in want["splits"]]))


@pytest.mark.parametrize("weights", [["--weights", "2,1"], ["--weights", "2", "--weights", "1"]])
def test_fuse_weights_before_the_score_files(tmp_path, weights, capsys):
    ids = [f"v{i}" for i in range(8)]
    y = np.arange(8) % 3
    a = _scores(tmp_path, "a.csv", ids, 3, y)
    b = _scores(tmp_path, "b.csv", ids, 4, y)
    out = tmp_path / "fused.csv"
    assert main(["fuse", *weights, str(a), str(b), "--out", str(out)]) == 0, capsys.readouterr().err
    np.testing.assert_allclose(read_scores(out).scores, fuse_scores([a, b], weights=[2, 1]).scores, rtol=0, atol=1e-9)
    # the fused file is the weighted average of the per-video z-scores (an independent computation)
    z = [(s - s.mean(1, keepdims=True)) / s.std(1, keepdims=True) for s in (read_scores(a).scores,
                                                                             read_scores(b).scores)]
    np.testing.assert_allclose(read_scores(out).scores, (2 * z[0] + z[1]) / 3, rtol=0, atol=1e-9)


def _bad_inputs(tmp_path):
    man = _manifest(tmp_path)
    one = _scores(tmp_path, "one.csv", [f"v{i}" for i in range(6)], 1, np.arange(6) % 3)
    two = _scores(tmp_path, "two.csv", [f"v{i}" for i in range(6)], 2, np.arange(6) % 3)
    feats = tmp_path / "f.npz"
    from idtfv.classify import write_features

    rng = np.random.default_rng(0)
    write_features(feats, [f"v{i}" for i in range(12)], rng.standard_normal((12, 4)), np.arange(12) % 3)
    common = ["--manifest", str(man), "--features", str(feats), "--out", str(tmp_path / "o")]
    return {
        "fuse-weight-count": (["fuse", "--weights", "1", str(one), str(two), "--out", str(tmp_path / "f.csv")],
                              "got 1 weight for 2 score files"),
        "fuse-negative": (["fuse", "--weights=-1,2", str(one), str(two), "--out", str(tmp_path / "f.csv")],
                          "got -1, 2"),
        "fuse-all-zero": (["fuse", str(one), str(two), "--weights", "0,0", "--out", str(tmp_path / "f.csv")],
                          "got 0, 0"),
        "fuse-not-a-number": (["fuse", "--weights", "1,x", str(one), str(two), "--out", str(tmp_path / "f.csv")],
                              "'x'"),
        "evaluate-split-count": (["evaluate", "--manifest", str(man), "--split", "1", str(one), str(two)],
                                 "one split number per score file (2), got 1"),
        "evaluate-split-not-a-number": (["evaluate", "--manifest", str(man), "--split", "1,x", str(one)], "'x'"),
        "evaluate-split-without-manifest": (["evaluate", "--split", "1", str(one)], "--manifest"),
        "evaluate-no-such-split": (["evaluate", "--manifest", str(man), "--split", "7", str(one)], "split 7"),
        "train-svm-jobs": (["train-svm", *common, "--jobs", "0"], "--jobs"),
        "train-svm-folds": (["train-svm", *common, "--cv-C", "--folds", "1"], "--folds"),
        "train-svm-C": (["train-svm", *common, "--C", "0"], "--C"),
        "train-svm-C-grid": (["train-svm", *common, "--cv-C", "--C-grid", "1,-2"], "--C-grid"),
        "train-knn-k": (["train-knn", *common, "--k", "0"], "--k"),
        "train-svm-more-folds-than-videos": (["train-svm", *common, "--cv-C", "--folds", "7"], "--folds"),
        "train-svm-out-is-a-file": (["train-svm", *common[:-1], str(one)], "not a directory"),
        "evaluate-out-is-a-file": (["evaluate", str(one), "--out", str(two)], "not a directory"),
        "fuse-out-under-a-file": (["fuse", str(one), str(two), "--out", str(one / "f.csv")],
                                  "a file is in the way"),  # was '[Errno 17] File exists: one.csv'
        "train-svm-features-npy": (["train-svm", *common[:3], str(_npy(tmp_path)), *common[4:]], "single .npy array"),
        "train-knn-features-text": (["train-knn", *common[:3], str(one), *common[4:]], "not an .npz (zip) archive"),
        "train-svm-features-0-columns": (["train-svm", *common[:3], str(_zero_columns(tmp_path)), *common[4:]],
                                         "0 columns"),
    }


def _npy(tmp_path):
    """A plain .npy array under a .npz name (np.load returns the array itself, not an archive)."""
    path = tmp_path / "array.npz"
    with open(path, "wb") as fh:
        np.save(fh, np.ones((12, 4), np.float32))
    return path


def _zero_columns(tmp_path):
    path = tmp_path / "d0.npz"
    np.savez(path, video_ids=np.array([f"v{i}" for i in range(12)]), features=np.ones((12, 0), np.float32),
             labels=np.arange(12) % 3)
    return path


@pytest.mark.parametrize("case", [
    "fuse-weight-count", "fuse-negative", "fuse-all-zero", "fuse-not-a-number", "evaluate-split-count",
    "evaluate-split-not-a-number", "evaluate-split-without-manifest", "evaluate-no-such-split", "train-svm-jobs",
    "train-svm-folds", "train-svm-C", "train-svm-C-grid", "train-knn-k", "train-svm-more-folds-than-videos",
    "train-svm-out-is-a-file", "evaluate-out-is-a-file", "train-svm-features-npy", "train-knn-features-text",
    "train-svm-features-0-columns", "fuse-out-under-a-file"])
def test_every_bad_input_is_one_error_line_with_plain_numbers(tmp_path, case, capsys):
    argv, needle = _bad_inputs(tmp_path)[case]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert needle in err, err
    assert "np.float64" not in err and "Traceback" not in err


@pytest.mark.parametrize("outputs", [["--out", "{b}"], ["--out", "{a}"], ["--out", "f.csv", "--report", "{a}"],
                                     ["--out", "f.csv", "--report", "f.csv"]])
def test_fuse_never_writes_over_its_input_files(tmp_path, outputs, capsys, monkeypatch):
    """--out or --report naming a score file being fused used to replace it (the fused file took its place)."""
    monkeypatch.chdir(tmp_path)
    ids = [f"v{i}" for i in range(6)]
    a = _scores(tmp_path, "a.csv", ids, 5, np.arange(6) % 3)
    b = _scores(tmp_path, "b.csv", ids, 6, np.arange(6) % 3)
    before = {p: p.read_bytes() for p in (a, b)}
    argv = [x.format(a=a, b=b.name) for x in outputs]  # b by a relative name: the same file however it is spelt
    assert main(["fuse", str(a), str(b), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert {p: p.read_bytes() for p in (a, b)} == before
    assert not (tmp_path / "f.csv").exists()


def test_train_svm_refuses_a_codebook_other_than_the_vectors_own(tmp_path, capsys):
    """Vectors of a K=2 codebook (one channel, PCA 3: 12 columns) given with a K=1 codebook (6 columns per cell)
    used to be cut as two pyramid cells of the wrong codebook: per-channel results computed on the wrong
    columns, without a word. The encode record beside the vectors names their codebook (compared by content: a
    copy of the right one is accepted)."""
    import shutil

    from idtfv.encoding import DescriptorPCA, DiagGMM
    from idtfv.encoding.record import write_encode_record
    from idtfv.encoding.stage import save_codebooks
    from idtfv.classify import write_features

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6))
    cache = tmp_path / "cache"
    books = {}
    for k in (2, 1):
        pca = DescriptorPCA(n_components=3).fit(X)
        gmm = DiagGMM(n_components=k, max_iter=5).fit(pca.transform(X))
        books[k] = save_codebooks(cache / f"codebook-00000000000{k}", {"hog": (pca, gmm)},
                                  {"method": "fisher", "k": k, "channels": ["hog"]}, seed=0)
    man = _manifest(tmp_path)
    vectors = write_features(tmp_path / "fv.npz", [f"v{i}" for i in range(12)], rng.normal(size=(12, 12)),
                             np.arange(12) % 3)
    write_encode_record(vectors, books[2], cache, method="fisher", pyramid="1x1x1", split=1)
    shutil.copytree(books[2], tmp_path / "copy_of_k2")
    common = ["train-svm", "--manifest", str(man), "--features", str(vectors)]
    assert main([*common, "--codebook", str(tmp_path / "copy_of_k2"), "--out", str(tmp_path / "ok")]) == 0
    capsys.readouterr()
    assert main([*common, "--codebook", str(books[1]), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --codebook ") and "not the codebook these vectors were encoded with" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_evaluate_refuses_one_score_file_given_twice_for_one_split(tmp_path, split_files, capsys):
    man, one, _ = split_files
    link = tmp_path / "again.csv"
    link.symlink_to(one)
    for argv in ([one, one], [one, link]):  # the same file (by path or through a link) would count as two splits
        assert main(["evaluate", *map(str, argv), "--out", str(tmp_path / "ev")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is given twice" in err[0] and not (tmp_path / "ev").exists()
    # one file holding every video, evaluated on two splits: two different evaluations, allowed
    both = _scores(tmp_path, "all.csv", [f"v{i}" for i in range(12)], 3)
    got = _report(tmp_path, ["--manifest", man, "--split", "1,2", both, both], capsys)
    assert [s["split"] for s in got["splits"]] == [1, 2]
