"""deep/ trainer, outputs and the ``train-deep`` CLI, on in-memory data and on the synthetic default dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from idtfv.data.synthetic import generate_dataset
from idtfv.deep.cli import main as train_deep_main
from idtfv.deep.stage import default_sampling
from idtfv.deep.data import VideoDataset
from idtfv.deep.models import MODELS, build_model
from idtfv.deep.train import TrainConfig, load_checkpoint, predict, train
from idtfv.errors import FormatError, ParameterError

torch.set_num_threads(1)


class _Planted(Dataset):
    """Clips whose class is the sign pattern of their mean brightness over time (learnable in a few steps)."""

    def __init__(self, n=12, c=3, t=3, s=32, classes=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % classes
        self.x = torch.randn(n, c, t, s, s, generator=g) * 0.5
        self.x[:, 0] += (self.y.float() - 1)[:, None, None, None] * 2.0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i]), i


def _tsn(seed=0, classes=3):
    torch.manual_seed(seed)
    return build_model("tsn", num_classes=classes, in_channels=3, width=8, depth=10)


def test_trainer_learns_and_logs(tmp_path):
    ds = _Planted()
    model = _tsn()
    hist = train(model, ds, config=TrainConfig(epochs=4, batch_size=4, optimizer="adamw", lr=3e-3, device="cpu"),
                 out_dir=tmp_path, progress=False)
    assert len(hist) == 4 and hist[-1]["loss"] < hist[0]["loss"]
    lines = [json.loads(l) for l in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2, 3, 4]
    assert lines[-1]["lr"] < lines[0]["lr"]  # cosine decay
    ck = load_checkpoint(tmp_path / "checkpoint.pt")  # weights_only=True
    assert ck["epoch"] == 4
    scores, feats, index = predict(model, ds, batch_size=5, device="cpu")
    assert scores.shape == (12, 3) and feats.shape == (12, model.fc.in_features)
    assert index.tolist() == list(range(12))
    with torch.no_grad():  # predict = the eval-mode forward, in dataset order
        np.testing.assert_allclose(scores, model.eval()(ds.x).numpy(), rtol=1e-4, atol=1e-5)


def test_resume_equals_uninterrupted_run(tmp_path):
    ds = _Planted(n=8)
    cfg = TrainConfig(epochs=3, batch_size=4, lr=0.05, device="cpu", seed=3)
    full = _tsn(1)
    train(full, ds, config=cfg, out_dir=tmp_path / "full", progress=False)
    again = _tsn(1)
    train(again, ds, config=cfg, out_dir=tmp_path / "again", progress=False)
    # a job killed after epoch 1, then resumed to epoch 3
    stop = _tsn(1)
    _train_epochs(stop, ds, cfg, tmp_path / "resumed", stop_after=1)
    resumed = _tsn(99)  # different init: everything must come from the checkpoint
    train(resumed, ds, config=cfg, out_dir=tmp_path / "resumed", progress=False)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    for (k, a), b in zip(full.state_dict().items(), again.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)  # same seed -> same bytes


def _train_epochs(model, ds, cfg, out, *, stop_after):
    """Run ``cfg`` but stop after ``stop_after`` epochs (a killed job), keeping the schedule of the full run."""
    import idtfv.deep.train as dt

    class _Stop(Exception):
        pass

    real = dt._atomic_save
    calls = {"n": 0}

    def save_then_maybe_stop(obj, path):
        real(obj, path)
        calls["n"] += 1
        if calls["n"] == stop_after:
            raise _Stop

    dt._atomic_save = save_then_maybe_stop
    try:
        with pytest.raises(_Stop):
            train(model, ds, config=cfg, out_dir=out, progress=False)
    finally:
        dt._atomic_save = real


def test_bad_checkpoint_and_options(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(FormatError, match="checkpoint"):
        train(_tsn(), _Planted(n=4), config=TrainConfig(epochs=1, device="cpu"), out_dir=tmp_path, progress=False)
    (tmp_path / "checkpoint.pt").unlink()
    train(_tsn(), _Planted(n=4), config=TrainConfig(epochs=1, device="cpu"), out_dir=tmp_path, progress=False)
    other = build_model("tsn", num_classes=3, in_channels=3, width=16, depth=10)  # another model, same dir
    with pytest.raises(FormatError, match="does not match"):
        train(other, _Planted(n=4), config=TrainConfig(epochs=2, device="cpu"), out_dir=tmp_path, progress=False)
    with pytest.raises(ParameterError, match="optimizer"):
        TrainConfig(optimizer="lbfgs").validate()
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="cuda"):
            TrainConfig(device="cuda").validate()


# ----------------------------------------------------------------------------- default dataset


@pytest.fixture(scope="module")
def small_default(tmp_path_factory):
    """The synthetic default dataset's generator, reduced: 4 classes x 3 actors, 16 frames of 80 x 60."""
    out = tmp_path_factory.mktemp("default")
    return generate_dataset(out, n_classes=4, n_actors=3, n_frames=16, size=(80, 60), random_state=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_overfit_tiny_batch_from_default_dataset(name, small_default):
    """A handful of AdamW steps fit 4 clips (one per class) of the default dataset, for every model."""
    from idtfv.data.manifest import read_manifest

    m = read_manifest(small_default)
    rows = [next(r for r in m.rows if r.label == c) for c in range(4)]
    modality = "flow" if name == "temporal" else "rgb"
    frames = {"tsn": 2, "tsm": 4, "tam": 4, "i3d": 4, "nonlocal": 4, "slowfast": 8, "c3d": 4,
              "cnn_lstm": 3}.get(name)
    cfg = default_sampling(name, modality, frames=frames, size=32)
    ds = VideoDataset(rows, modality=modality, config=cfg, train=False)
    x = torch.stack([ds[i][0] for i in range(4)])
    y = torch.tensor([ds[i][1] for i in range(4)])
    assert y.tolist() == [0, 1, 2, 3]
    torch.manual_seed(0)
    spec = MODELS[name]
    model = build_model(name, num_classes=4, in_channels=ds.in_channels, width=16 if name == "slowfast" else 8,
                        depth=10 if spec.has_depth else None, frames=cfg.frames if spec.time_arg else None)
    for mod in model.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    # nets without batch norm (Karpathy's towers, C3D) need the smaller step to stay stable
    has_bn = any(isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) for mod in model.modules())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3 if has_bn else 1e-3)
    first = None
    for step in range(60):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        first = float(loss.detach()) if first is None else first
        if float(loss.detach()) < 0.05:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.05 < first
    assert (model(x).argmax(1) == y).all()


@pytest.mark.slow
def test_train_deep_cli_end_to_end(small_default, tmp_path, capsys):
    from idtfv.classify import read_features, read_scores
    from idtfv.data.manifest import read_manifest

    out = tmp_path / "run"
    argv = ["--manifest", str(small_default), "--model", "tsn", "--modality", "rgb", "--split", "1",
            "--out", str(out), "--epochs", "2", "--batch-size", "8", "--width", "8", "--depth", "10",
            "--frames", "2", "--size", "48", "--crops", "3", "--device", "cpu", "--seed", "1", "--no-progress"]
    assert train_deep_main(argv) == 0
    summary = json.loads((out / "report.json").read_text())  # the CLI prints a summary line (test_deep_report.py)
    m = read_manifest(small_default)
    train_ids = [r.video_id for r in m.split(1, "train")]
    test_ids = [r.video_id for r in m.split(1, "test")]
    assert summary["n_videos"] == len(test_ids)
    for name in ("checkpoint.pt", "scores.csv", "scores_train.csv", "features.npz", "log.jsonl", "run.json"):
        assert (out / name).exists(), name
    sc = read_scores(out / "scores.csv")
    assert list(sc.video_ids) == test_ids and list(sc.class_names) == m.class_names
    assert summary["accuracy"] == pytest.approx(float(np.mean(sc.scores.argmax(1) == sc.labels)))
    feats = read_features(out / "features.npz")
    assert list(feats.video_ids) == train_ids + test_ids and feats.features.shape[1] == 64  # 8 w res5 channels
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [l.get("epoch") for l in log[:2]] == [1, 2] and "test" in log[-1]
    # same seed -> same score bytes
    out2 = tmp_path / "run2"
    assert train_deep_main([*argv[:9], str(out2), *argv[10:]]) == 0
    assert (out2 / "scores.csv").read_bytes() == (out / "scores.csv").read_bytes()
    # initialising from the first run's checkpoint: every tensor matched
    out3 = tmp_path / "run3"
    assert train_deep_main([*argv[:9], str(out3), *argv[10:], "--pretrained", str(out / "checkpoint.pt")]) == 0
    pre = json.loads((out3 / "run.json").read_text())["pretrained"]
    assert pre["missing"] == [] and pre["unexpected"] == [] and "0 shape mismatches" in pre["summary"]


@pytest.mark.slow
def test_train_deep_skips_unprobed_videos(small_default, tmp_path, capsys):
    """A video whose probe found no frame (frames = 0) is reported, left out, and the run goes on."""
    import csv

    with open(small_default, newline="") as fh:
        rows = list(csv.DictReader(fh))
    bad = next(r for r in rows if r["split1"] == "train")
    bad["path"] = "videos/broken.avi"
    bad["frames"] = "0"
    manifest = small_default.parent / "manifest_broken.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "run"
    rc = train_deep_main(["--manifest", str(manifest), "--model", "tsn", "--out", str(out), "--epochs", "1",
                          "--width", "8", "--frames", "1", "--size", "32", "--no-progress"])
    assert rc == 0
    assert bad["video_id"] in capsys.readouterr().err
    assert json.loads((out / "run.json").read_text())["skipped"] == [bad["video_id"]]


def test_train_deep_cli_bad_input(tmp_path, capsys):
    rc = train_deep_main(["--manifest", str(tmp_path / "none.csv"), "--model", "tsn", "--out", str(tmp_path / "o"),
                          "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "none.csv" in err and len(err.strip().splitlines()) == 1
    rc = train_deep_main(["--manifest", str(tmp_path / "none.csv"), "--model", "tsn", "--out", str(tmp_path / "o"),
                          "--crops", "3", "--frames", "0"])
    assert rc == 2 and "frames" in capsys.readouterr().err
    rc = train_deep_main(["--manifest", str(tmp_path / "none.csv"), "--model", "tsn", "--out", str(tmp_path / "o"),
                          "--rawframes", str(tmp_path / "nowhere")])
    assert rc == 2 and "nowhere: rawframes directory not found" in capsys.readouterr().err



@pytest.mark.parametrize("extra, needle", [
    (["--weight-decay", "inf"], "need finite lr > 0"), (["--lr", "inf"], "need finite lr > 0"),
    (["--workers", "-1"], "workers (--workers) must be >= 0"), (["--threads", "-2"], "--threads must be >= 0"),
    (["--out", "{tmp}/a_file"], "a_file: exists and is not a directory"),
])
def test_train_deep_refuses_bad_options_before_reading_anything(tmp_path, extra, needle, capsys):
    """An infinite --weight-decay or --lr trained (to NaN weights) without a word, a negative --workers or
    --threads was taken as the default, and --out naming a file said '[Errno 17] File exists'."""
    from idtfv.cli import main

    (tmp_path / "a_file").write_text("mine\n")
    argv = ["train-deep", "--manifest", str(tmp_path / "none.csv"), "--model", "tsn", "--out", str(tmp_path / "o"),
            "--no-progress", "--device", "cpu", *[x.format(tmp=tmp_path) for x in extra]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and needle in err, err
    assert (tmp_path / "a_file").read_text() == "mine\n" and not (tmp_path / "o").exists()

def test_stack_scores_matches_naive_softmax_concat(tmp_path, capsys):
    import argparse

    from idtfv.classify import read_features, write_scores
    from idtfv.deep.cli import run_stack

    rng = np.random.default_rng(0)
    names = ["a", "b", "c"]
    ids_tr, ids_te = ["v1", "v2", "v3"], ["v4", "v5"]
    labels = {"v1": 0, "v2": 1, "v3": 2, "v4": 1, "v5": 0}
    raw = {}
    for run, order in (("rgb", (ids_tr, ids_te)), ("flow", (ids_tr[::-1], ids_te[::-1]))):  # other row order
        d = tmp_path / run
        d.mkdir()
        for fname, ids in zip(("scores_train.csv", "scores.csv"), order):
            s = rng.normal(size=(len(ids), 3))
            raw.update({(run, v): s[i] for i, v in enumerate(ids)})
            write_scores(d / fname, ids, s, names, [labels[v] for v in ids])
    out = tmp_path / "stacked.npz"
    assert run_stack(argparse.Namespace(runs=[str(tmp_path / "rgb"), str(tmp_path / "flow")], out=str(out))) == 0
    f = read_features(out)
    assert list(f.video_ids) == ids_tr + ids_te
    assert f.labels.tolist() == [labels[v] for v in ids_tr + ids_te]
    for i, v in enumerate(f.video_ids):
        expect = np.concatenate([np.exp(raw[(r, v)]) / np.exp(raw[(r, v)]).sum() for r in ("rgb", "flow")])
        np.testing.assert_allclose(f.features[i], expect, rtol=1e-5)
    (tmp_path / "flow" / "scores.csv").unlink()
    assert run_stack(argparse.Namespace(runs=[str(tmp_path / "rgb"), str(tmp_path / "flow")], out=str(out))) == 2
    assert capsys.readouterr().err.startswith("error: ")



@pytest.mark.parametrize("out", ["rgb/scores.csv", "rgb/features.npz", "stacked.txt"])
def test_stack_scores_never_writes_over_a_run_file(tmp_path, out, capsys):
    """--out naming a run's scores.csv used to replace it with the stacked .npz (the run's test scores lost);
    a run's features.npz is train-deep's, and a name without .npz is not a feature file."""
    from idtfv.classify import write_scores
    from idtfv.cli import main

    rng = np.random.default_rng(1)
    d = tmp_path / "rgb"
    d.mkdir()
    write_scores(d / "scores_train.csv", ["v1", "v2", "v3"], rng.normal(size=(3, 2)), ["a", "b"], [0, 1, 0])
    write_scores(d / "scores.csv", ["v4", "v5"], rng.normal(size=(2, 2)), ["a", "b"], [1, 0])
    (d / "features.npz").write_bytes(b"train-deep's features")
    before = {f.name: f.read_bytes() for f in d.iterdir()}
    assert main(["stack-scores", str(d), "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out ") and len(err.strip().splitlines()) == 1, err
    assert {f.name: f.read_bytes() for f in d.iterdir()} == before and not (tmp_path / "stacked.txt").exists()

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_amp_training_step_matches_shapes(tmp_path):
    model = _tsn()
    hist = train(model, _Planted(n=8), config=TrainConfig(epochs=2, batch_size=4, device="cuda", amp=True),
                 out_dir=tmp_path, progress=False)
    assert len(hist) == 2 and np.isfinite(hist[-1]["loss"])
    scores, feats, _ = predict(model, _Planted(n=8), device="cuda")
    assert scores.shape == (8, 3) and np.isfinite(scores).all()


def test_presets():
    from idtfv.deep.cli import SMALL, resolve_preset

    assert resolve_preset("small", "cpu", "tsn") == (SMALL["width"], SMALL["depth"], SMALL["size"])
    assert resolve_preset("small", "cpu", "c3d") == (SMALL["width"], None, SMALL["size"])  # no depth knob
    assert resolve_preset("standard", "cpu", "tsn") == (None, None, None)
    assert resolve_preset("small", "cpu", "tsn", width=32, size=64) == (32, SMALL["depth"], 64)
    if not torch.cuda.is_available():
        assert resolve_preset("auto", "auto", "i3d") == resolve_preset("small", "cpu", "i3d")
