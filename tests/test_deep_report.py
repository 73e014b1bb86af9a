"""What a ``train-deep`` user sees: the same report.json + confusion.png as train-svm (evaluate() of its
scores.csv on the manifest split), a summary line instead of a raw JSON dict, and progress that suits a log file
(one line per epoch, no bar) or a terminal (a bar)."""

from __future__ import annotations

import json
import re
import sys

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
