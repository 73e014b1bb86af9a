"""What a ``train-deep`` user sees: the same report.json + confusion.png as train-svm (evaluate() of its
scores.csv on the manifest split), a summary line instead of a raw JSON dict, and progress that suits a log file
(one line per epoch, no bar) or a terminal (a bar)."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from idtfv.classify import evaluate
from idtfv.data.synthetic import generate_dataset
from idtfv.deep.cli import main as train_deep_main
from idtfv.deep.models import build_model
from idtfv.deep.train import TrainConfig, train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small_default(tmp_path_factory):
    """The synthetic default dataset's generator, reduced as in test_deep_train.py: 4 classes x 3 actors."""
    out = tmp_path_factory.mktemp("default")
    return generate_dataset(out, n_classes=4, n_actors=3, n_frames=16, size=(80, 60), random_state=0)


@pytest.mark.slow
def test_train_deep_writes_the_evaluate_report_and_prints_a_summary(small_default, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.json").write_text('{"stale": true}\n')  # from an earlier, unfinished run: must not survive
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)  # a log file
    rc = train_deep_main(["--manifest", str(small_default), "--model", "tsn", "--modality", "rgb", "--split", "1",
                          "--out", str(out), "--epochs", "1", "--batch-size", "8", "--width", "8", "--depth", "10",
                          "--frames", "2", "--size", "32", "--device", "cpu", "--seed", "0"])
    shown = capsys.readouterr()
    assert rc == 0, shown.err
    report = json.loads((out / "report.json").read_text())
    # the independent reference: evaluate() of the run's own scores.csv on the manifest's split 1
    expected = evaluate(out / "scores.csv", manifest=small_default, split=1)
    assert report["accuracy"] == expected["accuracy"] and report["n_videos"] == expected["n_videos"] > 0
    assert report["confusion"] == expected["confusion"] and report["mAP"] == expected["mAP"]
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # written before the {"test": ...} line that ends log.jsonl (and before make's .done marker)
    assert "test" in json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert (out / "report.json").stat().st_mtime_ns <= (out / "log.jsonl").stat().st_mtime_ns
    # stdout: a train-svm-like summary line, no raw JSON dict
    lines = shown.out.strip().splitlines()
    assert not any(line.lstrip().startswith("{") for line in lines)
    pct = f"{100 * report['accuracy']:.2f}%"
    assert lines[-2].startswith(f"train-deep split 1: accuracy {pct} [{report['n_correct']}/{report['n_videos']} "
                                "correct")
    assert f"on {report['n_videos']} videos, 4 classes" in lines[-2]
    assert lines[-1].startswith("trained tsn (rgb) on ") and f"wrote {out}/" in lines[-1]
    # stderr of a log file: one line for the epoch, no bar (tqdm redraws with carriage returns)
    assert "\r" not in shown.err
    assert len(re.findall(r"^epoch 1/1: loss \d+\.\d{4}, train accuracy \d+\.\d%", shown.err, flags=re.M)) == 1


class _Clips(Dataset):
    def __init__(self, n=6):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 2, 16, 16, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], i % 2, i


def _train(tmp_path, name, *, progress):
    torch.manual_seed(0)
    model = build_model("tsn", num_classes=2, in_channels=3, width=8, depth=10)
    return train(model, _Clips(), config=TrainConfig(epochs=2, batch_size=3, device="cpu"), out_dir=tmp_path / name,
                 progress=progress)


def test_progress_is_one_line_per_epoch_in_a_log_and_a_bar_on_a_terminal(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    history = _train(tmp_path, "log", progress=True)
    err = capsys.readouterr().err
    assert err.splitlines() == [f"epoch {r['epoch']}/2: loss {r['loss']:.4f}, train accuracy "
                                f"{100 * r['accuracy']:.1f}%, lr {r['lr']:.3g}, {r['seconds']:.1f} s"
                                for r in history]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    _train(tmp_path, "tty", progress=True)
    err = capsys.readouterr().err
    assert "\r" in err and "epoch 1/2" in err and "epoch 2/2: loss" in err  # the bar, then the epoch's line
    _train(tmp_path, "quiet", progress=False)
    assert capsys.readouterr().err == ""
    logs = [[{k: v for k, v in json.loads(l).items() if k != "seconds"}
             for l in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in ("log", "tty", "quiet")]
    assert logs[0] == logs[1] == logs[2]  # what is shown changes nothing that is computed


def test_train_deep_validation_scores_feed_fuse_weights_validate(small_default, tmp_path, capsys):
    """--validation: whole training groups held out by the train-svm rule; their scores come from a model trained
    on the other training videos only (the reference: a plain run whose training set is exactly those videos) and
    fuse --weights validate takes them beside an iDT validation file of the same videos."""
    import dataclasses

    from idtfv import cli
    from idtfv.classify import read_scores, write_scores
    from idtfv.classify.channels import validation_split
    from idtfv.data.manifest import read_manifest, write_manifest

    common = ["--model", "tsn", "--modality", "rgb", "--split", "1", "--epochs", "1", "--batch-size", "4",
              "--width", "8", "--depth", "10", "--frames", "2", "--size", "32", "--device", "cpu", "--seed", "0",
              "--no-progress"]
    out = tmp_path / "run"
    assert train_deep_main(["--manifest", str(small_default), "--out", str(out), "--validation", "0.5", *common]) == 0
    assert "validation_scores.csv: 4 videos of groups a0" in capsys.readouterr().out
    man = read_manifest(small_default)
    train_rows = man.split(1, "train")
    held = validation_split([e.group for e in train_rows], fraction=0.5, seed=0)
    val_rows = [e for e, h in zip(train_rows, held) if h]
    val = read_scores(out / "validation_scores.csv")
    assert val.video_ids == [e.video_id for e in val_rows]
    assert len({e.group for e in val_rows}) == 1 and all(e.splits[1] == "train" for e in val_rows)
    assert [s[0] for s in val.label_sets] == [e.label for e in val_rows]
    assert json.loads((out / "run.json").read_text())["validation"]["n_train"] == 4
    # reference: train on the other training videos only, test on the validation videos
    ref_rows = [dataclasses.replace(e, splits={1: "test"} if h else {1: "train"}) for e, h in zip(train_rows, held)]
    ref_man = write_manifest(man.replace_rows(ref_rows), tmp_path / "ref.csv")
    assert train_deep_main(["--manifest", str(ref_man), "--out", str(tmp_path / "ref"), *common]) == 0
    ref = read_scores(tmp_path / "ref" / "scores.csv")
    assert ref.video_ids == val.video_ids
    np.testing.assert_allclose(val.scores, ref.scores, rtol=1e-6, atol=1e-6)
    # the test scores are those of the model trained on every training video (a run without --validation)
    assert train_deep_main(["--manifest", str(small_default), "--out", str(tmp_path / "plain"), *common]) == 0
    assert (tmp_path / "plain" / "scores.csv").read_bytes() == (out / "scores.csv").read_bytes()
    # fusion with an iDT-like score file of the same validation and test videos
    test = read_scores(out / "scores.csv")
    rng = np.random.default_rng(0)
    for name, sc in (("idt_val.csv", val), ("idt_test.csv", test)):
        write_scores(tmp_path / name, sc.video_ids, rng.normal(size=sc.scores.shape) + 3 * np.eye(4)[sc.labels],
                     sc.class_names, sc.label_sets)
    capsys.readouterr()
    rc = cli.main(["fuse", "--weights", "validate", "--validation",
                   f"{out / 'validation_scores.csv'},{tmp_path / 'idt_val.csv'}", str(out / "scores.csv"),
                   str(tmp_path / "idt_test.csv"), "--out", str(tmp_path / "fused.csv")])
    shown = capsys.readouterr()
    assert rc == 0, shown.err
    assert "chosen on 4 validation videos" in shown.out and (tmp_path / "fused.csv").is_file()
    # bad input: one training group cannot be split
    one_group = [dataclasses.replace(e, group="a01") for e in man.rows]
    bad = write_manifest(man.replace_rows(one_group), tmp_path / "one.csv")
    assert train_deep_main(["--manifest", str(bad), "--out", str(tmp_path / "bad"), "--validation", "0.5",
                            *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "2 groups" in err[0]
