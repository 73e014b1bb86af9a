"""Train a model of ``MODELS`` on one split of a manifest and write the shared outputs.

``run_experiment`` writes to ``out_dir``: ``checkpoint.pt`` (see ``idtfv.deep.train``), ``log.jsonl`` (one line per
epoch, then one ``{"test": ...}`` line), ``scores.csv`` (test videos, ``idtfv.scores`` format),
``scores_train.csv`` (train videos, for stacking/fusion), ``features.npz`` (penultimate features of every video
of the split, train and test, view-averaged; ``idtfv.scores`` feature format), ``run.json`` (the options,
and the videos left out because their probe found no decodable frame), with ``validation_fraction``
``validation_scores.csv`` (and ``validation/``: that model's checkpoint and log), and ``report.json`` +
``confusion.png``:
:func:`idtfv.classify.evaluate` of ``scores.csv`` on the manifest split, the same report as ``idtfv train-svm``'s.
The report is written after the score and feature files and before the ``{"test": ...}`` line that ends
``log.jsonl``; a rerun into the same directory first removes the old report and figure. The run holds
``out_dir``'s lock (:func:`idtfv.lock.output_dir_lock`) while it writes there: a second run into the same directory
fails at once and writes nothing.
Test scores average the views (clips x crops) of each video (``aggregate_views``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from idtfv.errors import FormatError, ManifestError, ParameterError
from idtfv.lock import output_dir_lock

from .aggregate import aggregate_views
from .data import MODALITIES, SamplingConfig, VideoDataset
from .models import MODELS, build_model
from .pretrained import load_pretrained
from .runs import SCORES_TEST, SCORES_TRAIN
from .train import TrainConfig, predict, train

__all__ = ["default_sampling", "run_experiment", "REPORT", "CONFUSION", "VALIDATION_SCORES"]

#: The evaluation report and confusion-matrix figure of a run (as ``idtfv train-svm`` writes them).
REPORT = "report.json"
CONFUSION = "confusion.png"
#: Scores of the validation videos (``validation_fraction``), as ``idtfv train-svm --validation`` writes them.
VALIDATION_SCORES = "validation_scores.csv"

#: snippet length L of segment models per modality (TSN: 1 RGB frame, 10 flow fields, RGB difference of 5
#: frames = 4 differences).
SNIPPET_LEN = {"rgb": 1, "rgbdiff": 4, "flow": 10, "warped_flow": 10}


def default_sampling(model: str, modality: str, *, frames: int | None = None, size: int | None = None,
                     snippet_len: int | None = None, stride: int | None = None, num_clips: int = 1,
                     num_crops: int = 1) -> SamplingConfig:
    """The model's standard sampling (``ModelSpec``), with any given option overriding it."""
    if model not in MODELS:
        raise ParameterError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if modality not in MODALITIES:
        raise ParameterError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    spec = MODELS[model]
    seg = spec.sampler == "segments"
    pick = lambda given, default: default if given is None else given  # noqa: E731
    return SamplingConfig(sampler=spec.sampler, frames=pick(frames, spec.frames),
                          snippet_len=pick(snippet_len, SNIPPET_LEN[modality]) if seg else 1,
                          stride=pick(stride, spec.stride), size=pick(size, spec.size),
                          num_clips=num_clips, num_crops=num_crops).validate()


def run_experiment(manifest, *, model: str, modality: str, split: int, out_dir, sampling: SamplingConfig,
                   train_config: TrainConfig, width: int | None = None, depth: int | None = None,
                   rawframes=None, pretrained=None, progress: bool = True,
                   validation_fraction: float | None = None) -> dict:
    """Train on the split's train videos, test on its test videos, write the outputs; return a summary dict
    (``accuracy`` on the test videos, ``n_train``, ``n_test``, ``out``, ``validation`` (None, or the number of
    validation videos and groups), and ``report``: the dict written to ``report.json``).

    ``validation_fraction``: also hold out this fraction of the training groups (seeded by the training seed;
    :func:`idtfv.classify.validation_split`, the rule of ``idtfv train-svm --validation``, so both draw the same
    videos from the same training videos), train a second model of the same options on the other training videos
    (checkpoint and log in ``out_dir/validation/``) and write its scores of the held-out videos to
    ``validation_scores.csv``: the input of ``idtfv fuse --weights validate``. The test scores still come from the
    model trained on every training video."""
    from idtfv.classify import write_features, write_scores
    from idtfv.data.manifest import read_manifest

    if rawframes is not None and not Path(rawframes).is_dir():
        raise FormatError(rawframes, "rawframes directory not found; write it with `idtfv flow` (or extract-flow) "
                                     "or drop --rawframes to compute flow on the fly")
    m = read_manifest(manifest)
    train_rows, test_rows = m.split(split, "train"), m.split(split, "test")
    # videos whose probe found no decodable frame are reported and left out; the run goes on
    skipped = [e.video_id for e in train_rows + test_rows if e.frames == 0]
    if skipped:
        print(f"warning: skipping {len(skipped)} video(s) with no decodable frames (probe): "
              f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}", file=sys.stderr)
        train_rows = [e for e in train_rows if e.frames != 0]
        test_rows = [e for e in test_rows if e.frames != 0]
    if not train_rows or not test_rows:
        raise ManifestError(f"{manifest}: split {split} has {len(train_rows)} train and {len(test_rows)} test "
                            "videos; need both (check the split column)")
    unlabelled = [e.video_id for e in train_rows if e.label < 0]
    if unlabelled:
        raise ManifestError(f"{manifest}: {len(unlabelled)} training video(s) have no label (e.g. {unlabelled[0]}); "
                            "label them or move them out of the train split")
    if any(len(e.labels) > 1 for e in train_rows + test_rows):
        raise ManifestError(f"{manifest}: multi-label videos are not supported by train-deep (single-label "
                            "cross-entropy); use a single-label manifest")
    val_rows = fit_rows = None
    if validation_fraction is not None:
        from idtfv.classify import validation_split

        is_val = validation_split([e.group or "" for e in train_rows], fraction=validation_fraction,
                                  seed=train_config.seed)
        fit_rows = [e for e, v in zip(train_rows, is_val) if not v]
        val_rows = [e for e, v in zip(train_rows, is_val) if v]
    out = Path(out_dir)
    # from here to report.json: a second run into out fails at once (its checkpoint, log and scores untouched)
    with output_dir_lock(out):
        for stale in (REPORT, CONFUSION, VALIDATION_SCORES):  # a report in the directory belongs to a finished run
            (out / stale).unlink(missing_ok=True)
        spec = MODELS[model]
        in_channels = MODALITIES[modality][0] * sampling.snippet_len

        def new_net():
            torch.manual_seed(train_config.seed)  # the initial weights depend on the seed only
            return build_model(model, num_classes=len(m.class_names), in_channels=in_channels, width=width, depth=depth,
                               frames=sampling.frames if spec.time_arg else None)

        net = new_net()
        run = {"manifest": str(manifest), "model": model, "modality": modality, "split": split,
               "sampling": dataclasses.asdict(sampling), "train": dataclasses.asdict(train_config),
               "width": width, "depth": depth, "rawframes": str(rawframes) if rawframes else None,
               "skipped": skipped}
        if pretrained:
            report = load_pretrained(net, pretrained)
            print(f"pretrained {pretrained}: {report.summary()}", file=sys.stderr)
            run["pretrained"] = {"path": str(pretrained), "summary": report.summary(), "missing": report.missing,
                                 "unexpected": report.unexpected}
        validation = None
        if val_rows is not None:
            validation = {"fraction": float(validation_fraction), "seed": int(train_config.seed),
                          "n_train": len(fit_rows), "n_videos": len(val_rows),
                          "groups": sorted({e.group for e in val_rows if e.group}), "file": VALIDATION_SCORES}
            run["validation"] = validation
        (out / "run.json").write_text(json.dumps(run, indent=1) + "\n", encoding="utf-8")

        train_ds = VideoDataset(train_rows, modality=modality, config=sampling, train=True, rawframes=rawframes,
                                seed=train_config.seed)
        train(net, train_ds, config=train_config, out_dir=out, progress=progress)
        del train_ds  # frees its decoded-frame cache

        def score(model_net, rows, path):
            """Per-video scores of ``rows`` by ``model_net`` written to ``path``; ``(ids, scores, features,
            labels)``."""
            ds = VideoDataset(rows, modality=modality, config=sampling, train=False, rawframes=rawframes)
            scores, feats, index = predict(model_net, ds, batch_size=train_config.batch_size,
                                           device=train_config.device, progress=progress)
            view_ids = [rows[i].video_id for i in index]
            ids, agg = aggregate_views(view_ids, scores)
            _, fagg = aggregate_views(view_ids, feats)
            labels = np.array([r.label for r in rows], dtype=np.int64)  # ids come out in row order
            write_scores(path, ids, agg, m.class_names, labels)
            return ids, agg, fagg, labels

        results = {name: score(net, rows, out / (SCORES_TEST if name == "test" else SCORES_TRAIN))
                   for name, rows in (("train", train_rows), ("test", test_rows))}
        if val_rows is not None:  # a second model without the validation groups scores them
            vnet = new_net()
            if pretrained:
                load_pretrained(vnet, pretrained)
            fit_ds = VideoDataset(fit_rows, modality=modality, config=sampling, train=True, rawframes=rawframes,
                                  seed=train_config.seed)
            train(vnet, fit_ds, config=train_config, out_dir=out / "validation", progress=progress)
            del fit_ds
            score(vnet, val_rows, out / VALIDATION_SCORES)
        ids = results["train"][0] + results["test"][0]
        write_features(out / "features.npz", ids, np.concatenate([results["train"][2], results["test"][2]]),
                       np.concatenate([results["train"][3], results["test"][3]]))
        test_ids, test_scores, _, test_labels = results["test"]
        known = test_labels >= 0
        acc = float(np.mean(test_scores.argmax(1)[known] == test_labels[known])) if known.any() else float("nan")
        report = _write_report(out, m, split, title=f"{model} {modality} split {split}")
        summary = {"accuracy": acc, "n_train": len(train_rows), "n_test": len(test_rows), "out": str(out),
                   "validation": None if validation is None else {"n_videos": validation["n_videos"],
                                                                  "groups": validation["groups"]}}
        with open(out / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"test": summary}) + "\n")
        return {**summary, "report": report}


def _write_report(out: Path, manifest, split: int, *, title: str) -> dict:
    """:func:`idtfv.classify.evaluate` of ``out/scores.csv`` on the manifest's split: write ``out/report.json`` and
    ``out/confusion.png``; return the report. Its result warnings (a class without test videos, test videos
    missing from the scores) are printed as ``warning: ...`` lines on stderr, once each."""
    from idtfv.classify import evaluate

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = evaluate(out / SCORES_TEST, manifest=manifest, split=split, confusion_png=out / CONFUSION,
                          report_json=out / REPORT, title=title)
    seen = set()
    for w in caught:
        if not issubclass(w.category, UserWarning):  # e.g. a library's DeprecationWarning: as it was
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
            continue
        text = " ".join(str(w.message).split())
        if text not in seen:
            seen.add(text)
            print(f"warning: {text}", file=sys.stderr)
    return report


def set_threads(n: int) -> None:
    """Limit torch's intra-op threads (0 keeps torch's default)."""
    if n > 0:
        torch.set_num_threads(n)
