"""Temporal action detection: sliding windows scored by the clip-level linear SVMs, temporal NMS, THUMOS'14 mAP.

The iDT + Fisher vector + sliding window detector of the THUMOS'14 challenge (Oneata, Verbeek & Schmid 2014;
Wang et al. 2014), on this package's features:

1. **Windows.** For every length L of :attr:`DetectParams.window_seconds` (default 1, 2, 4, 8 s), windows of
   length L every ``stride_fraction * L`` (default a quarter). Times are snapped to a grid of time bins of
   ``bin_frames = round(stride_fraction * min(L) * fps)`` frames (6 frames at 25 fps with the defaults): a window
   is a whole number of bins, so its Fisher vector comes from prefix sums (:mod:`idtfv.encoding.temporal`), never
   from its trajectories again. A video shorter than every window length gets one window: the whole video.
2. **Scores.** Each window's Fisher vector (layout of the encode stage, normalised per channel and cell) is scored
   by the one-vs-rest linear SVMs trained on trimmed clips (``idtfv train-svm``'s ``model.npz``).
3. **Temporal NMS** per video and class (:func:`temporal_nms`): windows sorted by score; a window overlapping a
   kept one by temporal IoU above ``nms_iou`` is dropped; at most ``max_per_class`` kept per video and class.
4. **Evaluation**: THUMOS'14 average precision per class at temporal IoU 0.1..0.5 and their means, by
   :func:`idtfv.classify.evaluate.evaluate_detections` (the one home of the detection metric, also behind
   ``idtfv evaluate --detections``), with a bootstrap interval over videos.

Times: a trajectory belongs to the frame where it ends (:func:`idtfv.encoding.temporal.time_bins`); window
``[a, b)`` in bins is reported as ``[a * bin_frames / fps, b * bin_frames / fps]`` seconds.

Files: the ground-truth and detections CSVs of :mod:`idtfv.classify.intervals` (``video_id,class,start,end`` and
``video_id,class,start,end,score``, seconds).

The codebook and pyramid come from the encode run the SVM was trained on: ``vectors=`` (the ``idtfv encode``
output) names them in its record (:func:`idtfv.encoding.read_encode_record`), so no codebook is guessed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from idtfv.cache import open_npz
from idtfv.errors import FormatError, ParameterError
from idtfv.lock import output_dir_lock

from .evaluate import THUMOS_IOUS, detection_average_precision as average_precision, detection_map
from .intervals import (DETECTION_COLUMNS, GT_COLUMNS, Detection, read_detections, read_intervals, temporal_iou,
                        write_detections)

# The metric (evaluate) and the file formats (intervals) have their own homes; their names stay importable here.
__all__ = ["DetectParams", "Detection", "window_grid", "temporal_iou", "temporal_nms", "average_precision",
           "detection_map", "read_intervals", "write_detections", "read_detections", "detect_video",
           "run_detect", "THUMOS_IOUS", "GT_COLUMNS", "DETECTION_COLUMNS"]


@dataclass(frozen=True, kw_only=True)
class DetectParams:
    """Options of the sliding-window detector (frozen, validated, keyword-only).

    Parameters
    ----------
    window_seconds : window lengths in seconds (made a sorted tuple of floats), default ``(1, 2, 4, 8)``.
    stride_fraction : window stride as a fraction of its length, in (0, 1] (default 0.25).
    nms_iou : temporal IoU above which NMS drops the lower-scored window, in [0, 1) (default 0.3).
    max_per_class : detections kept per video and class after NMS (default 100).
    """

    window_seconds: tuple = (1.0, 2.0, 4.0, 8.0)
    stride_fraction: float = 0.25
    nms_iou: float = 0.3
    max_per_class: int = 100

    def __post_init__(self):
        given = self.window_seconds
        try:
            lengths = tuple(sorted({float(v) for v in given}))
        except (TypeError, ValueError):
            lengths = ()
        if not lengths or not all(math.isfinite(v) and v > 0 for v in lengths):
            raise ParameterError(f"window_seconds: expected positive numbers of seconds, e.g. 1,2,4,8; got "
                                 f"{given!r}")
        if isinstance(self.stride_fraction, bool) or not (isinstance(self.stride_fraction, (int, float))
                                                          and 0 < self.stride_fraction <= 1):
            raise ParameterError(f"stride_fraction: expected a fraction in (0, 1] of the window length, got "
                                 f"{self.stride_fraction!r}")
        if isinstance(self.nms_iou, bool) or not (isinstance(self.nms_iou, (int, float)) and 0 <= self.nms_iou < 1):
            raise ParameterError(f"nms_iou: expected a temporal IoU in [0, 1), got {self.nms_iou!r}")
        if isinstance(self.max_per_class, bool) or not isinstance(self.max_per_class, (int, np.integer)) \
                or self.max_per_class < 1:
            raise ParameterError(f"max_per_class: expected a positive integer, got {self.max_per_class!r}")
        object.__setattr__(self, "window_seconds", lengths)
        object.__setattr__(self, "stride_fraction", float(self.stride_fraction))
        object.__setattr__(self, "nms_iou", float(self.nms_iou))
        object.__setattr__(self, "max_per_class", int(self.max_per_class))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["window_seconds"] = list(d["window_seconds"])
        return d

    def bin_frames(self, fps: float) -> int:
        """Frames per time bin at ``fps``: the smallest stride, at least one frame."""
        return max(1, int(round(self.stride_fraction * self.window_seconds[0] * float(fps))))


# ------------------------------------------------------------------------------------------------ windows
def window_grid(n_bins: int, lengths_bins: Sequence[int], strides_bins: Sequence[int]) -> tuple[np.ndarray,
                                                                                                 np.ndarray]:
    """Sliding windows over ``n_bins`` bins: for each length, starts 0, stride, 2 stride, ... while inside.

    Returns ``(starts, ends)`` (n,) int64, windows ``[start, end)``, by length then start. Lengths longer than
    the video are skipped; if none fits, the one window ``[0, n_bins)``.
    """
    if n_bins < 1:
        raise ParameterError(f"n_bins must be >= 1, got {n_bins}")
    starts, ends = [], []
    for length, stride in zip(lengths_bins, strides_bins):
        if length < 1 or stride < 1:
            raise ParameterError(f"window length and stride must be >= 1 bin, got {length}, {stride}")
        if length > n_bins:
            continue
        s = np.arange(0, n_bins - length + 1, stride, dtype=np.int64)
        starts.append(s)
        ends.append(s + length)
    if not starts:
        return np.array([0], np.int64), np.array([n_bins], np.int64)
    return np.concatenate(starts), np.concatenate(ends)


def temporal_nms(segments, scores, iou_threshold: float, *, max_keep: int | None = None) -> np.ndarray:
    """Greedy temporal non-maximum suppression.

    Parameters
    ----------
    segments : (n, 2) start, end.
    scores : (n,) higher is better; ties keep the earlier index first.
    iou_threshold : a segment whose IoU with an already kept one is **above** this is dropped.
    max_keep : stop after this many kept segments.

    Returns
    -------
    (k,) int64 indices of the kept segments, best first.
    """
    seg = np.asarray(segments, np.float64).reshape(-1, 2)
    sc = np.asarray(scores, np.float64).reshape(-1)
    if seg.shape[0] != sc.shape[0]:
        raise ParameterError(f"segments ({seg.shape[0]}) and scores ({sc.shape[0]}) differ in length")
    order = np.argsort(-sc, kind="stable")
    alive = np.ones(seg.shape[0], bool)
    keep = []
    for i in order:
        if not alive[i]:
            continue
        keep.append(i)
        if max_keep is not None and len(keep) >= max_keep:
            break
        alive &= temporal_iou(seg[i], seg)[0] <= iou_threshold
        alive[i] = False
    return np.array(keep, np.int64)


# ------------------------------------------------------------------------------------------------ detection
def detect_video(video_id: str, arrays: Mapping[str, np.ndarray], models: Mapping, coef, intercept, class_names,
                 *, fps: float, n_frames: int, params: DetectParams, pyramid="1x1x1",
                 source="arrays") -> list[Detection]:
    """Sliding-window detections of one video (after per-class temporal NMS), best first per class.

    Parameters
    ----------
    video_id : id written into the detections.
    arrays : the video's extractor arrays (``meta``, ``traj``, ``hog``, ...).
    models : {channel: (DescriptorPCA, DiagGMM)} (``idtfv.encoding.load_codebooks``).
    coef, intercept : (n_classes, d), (n_classes,) the linear SVMs (``LinearSVM.coef_``, ``intercept_``).
    class_names : (n_classes,) names, in the score columns' order.
    fps, n_frames : the video's frame rate and frame count.
    params : :class:`DetectParams`.
    pyramid : the pyramid of the SVM's training vectors.
    """
    from idtfv.encoding import score_windows

    if not (fps and fps > 0):
        raise ParameterError(f"{video_id}: frame rate must be > 0, got {fps!r}; probe the manifest (idtfv dataset)")
    if n_frames < 1:
        raise ParameterError(f"{video_id}: the video has no frames")
    bf = params.bin_frames(fps)
    n_bins = -(-int(n_frames) // bf)
    lengths = [max(1, int(round(s * fps / bf))) for s in params.window_seconds]
    strides = [max(1, int(round(n * params.stride_fraction))) for n in lengths]
    starts, ends = window_grid(n_bins, lengths, strides)
    scores = score_windows(arrays, models, starts, ends, coef, intercept, bin_frames=bf, n_bins=n_bins,
                           pyramid=pyramid, source=source)
    seg = np.stack([starts * bf / fps, np.minimum(ends * bf, n_frames) / fps], axis=1)
    out = []
    for c, name in enumerate(class_names):
        for i in temporal_nms(seg, scores[:, c], params.nms_iou, max_keep=params.max_per_class):
            out.append(Detection(video_id, str(name), float(seg[i, 0]), float(seg[i, 1]), float(scores[i, c])))
    return out


def _video_timing(entry) -> tuple[float, int]:
    fps, frames = entry.fps, entry.frames
    if not fps or not frames:
        from idtfv.video import probe_video

        info = probe_video(entry.path)
        fps, frames = info.fps, info.frames
    return float(fps), int(frames)


def _codebook_and_pyramid(codebook, vectors, pyramid) -> tuple[Path, str]:
    """The codebook directory and pyramid to use: from the encode record of ``vectors`` (the SVM's training
    vectors), or the ``codebook`` and ``pyramid`` given."""
    if (codebook is None) == (vectors is None):
        raise ParameterError("give the encode output the SVM was trained on (--vectors FV.npz: its codebook and "
                             "pyramid are recorded beside it) or a codebook directory (--codebook), not "
                             f"{'both' if codebook is not None else 'neither'}")
    if vectors is None:
        return Path(codebook), "1x1x1" if pyramid is None else pyramid
    from idtfv.encoding import read_encode_record

    record = read_encode_record(vectors)
    if pyramid is not None and pyramid != record["pyramid"]:
        raise ParameterError(f"--pyramid {pyramid}: the vectors {vectors} were encoded with pyramid "
                             f"{record['pyramid']}; drop --pyramid (it is read from the encode record)")
    return Path(record["codebook_dir"]), record["pyramid"]


def run_detect(manifest, features, *, svm, out, codebook=None, vectors=None, params: DetectParams | None = None,
               pyramid: str | None = None, annotations=None) -> dict:
    """Detect actions in every video of an (untrimmed) manifest; write ``out/detections.csv`` (and, with
    ``annotations``, ``out/report.json``: :func:`idtfv.classify.evaluate.evaluate_detections`, THUMOS'14 mAP with
    bootstrap intervals).

    Parameters
    ----------
    manifest : manifest CSV of the videos to search (fps and frames from its probe columns, else probed).
    features : the ``idtfv features`` stamp of these videos (full descriptors, not ``--store sample``).
    svm : ``idtfv train-svm`` output directory (``model.npz`` + ``model.json``) or the model path.
    out : output directory.
    codebook : codebook directory of the encode stage the SVM was trained on (``CACHE/codebook-*``); or
    vectors : the ``idtfv encode`` output the SVM was trained on: its codebook and pyramid come from its record
        (``<vectors>.json``, :func:`idtfv.encoding.read_encode_record`). Exactly one of the two.
    params : :class:`DetectParams` (default options).
    pyramid : the encode stage's pyramid (default: the record's with ``vectors``, else ``1x1x1``).
    annotations : ground-truth CSV (``video_id,class,start,end``), optional.

    Returns
    -------
    dict: ``detections`` (path), ``n_videos``, ``n_detections``, ``missing`` {video_id: reason}, ``report`` (the
    evaluation, or None), ``codebook`` (directory used), ``seconds`` {features_load, detect}.
    """
    import time

    from idtfv.data.manifest import read_manifest
    from idtfv.encoding import codebook_sha256, encoded_dim, load_codebooks
    from idtfv.runner import read_stamp

    from .evaluate import evaluate_detections, write_report
    from .svm import LinearSVM

    params = DetectParams() if params is None else params
    if not isinstance(params, DetectParams):
        raise ParameterError(f"params: expected a DetectParams, got {type(params).__name__}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"--out {out}: exists and is not a directory; give a directory for detections.csv")
    codebook, pyramid = _codebook_and_pyramid(codebook, vectors, pyramid)
    man = read_manifest(manifest)
    stamp = read_stamp(features)
    if stamp["params"].get("store") == "sample":
        raise ParameterError(f"{features}: this features stage kept only a sample of each video's trajectories "
                             "(--store sample); detection needs all of them: rerun idtfv features with --store all")
    svm_path = Path(svm)
    if not svm_path.exists() and not svm_path.with_suffix(".npz").exists():
        raise FileNotFoundError(f"--svm {svm_path}: no such directory; give the idtfv train-svm output directory "
                                "(model.npz + model.json)")
    model_stem = svm_path / "model" if svm_path.is_dir() else svm_path
    model = LinearSVM.load(model_stem)
    model_npz = model_stem.with_suffix(".npz")
    class_names = model.metadata_.get("class_names") or [f"class{c}" for c in model.classes_]
    if not isinstance(class_names, list) or len(class_names) != model.coef_.shape[0]:
        raise FormatError(model_npz.with_suffix(".json"), f"'class_names' should list the model's "
                                                          f"{model.coef_.shape[0]} classes, got {class_names!r}; "
                                                          "rerun idtfv train-svm to write the model again")
    models, summary = load_codebooks(codebook)
    if summary.get("method") != "fisher":
        raise ParameterError(f"{codebook}: a {summary.get('method')!r} codebook; detection needs a Fisher (GMM) "
                             "codebook (idtfv encode --method fisher)")
    trained_on = model.metadata_.get("codebook_sha256")  # train-svm stores it for vectors of idtfv encode
    if isinstance(trained_on, str) and codebook_sha256(codebook) != trained_on:
        raise ParameterError(f"--svm {svm_path}: trained on vectors of codebook "
                             f"{model.metadata_.get('codebook', '?')} (content SHA-256 {trained_on[:12]}...), but "
                             f"detection would encode with {codebook} ({codebook_sha256(codebook)[:12]}...): the "
                             "scores would be meaningless; give the --vectors (or --codebook) the SVM was trained on")
    dim = encoded_dim(models, "fisher", pyramid)
    if model.coef_.shape[1] != dim:
        raise FormatError(model_npz, f"an SVM on {model.coef_.shape[1]}-dimensional vectors, but codebook "
                                     f"{codebook.name} with pyramid {pyramid} makes {dim}-dimensional ones: give the "
                                     "--svm trained on the vectors of this codebook (or the --vectors / --codebook "
                                     "of this SVM)")
    truth = read_intervals(annotations) if annotations is not None else None
    if truth is not None:
        if not truth:
            raise FormatError(annotations, "no ground-truth interval (a header only); detection mAP needs at least "
                                           "one, or leave out --annotations")
        unknown = sorted({t.label for t in truth} - set(class_names))
        if unknown:
            raise FormatError(annotations, f"classes {', '.join(unknown)} are not among the SVM's classes "
                                           f"({', '.join(class_names)})")
    with output_dir_lock(out):  # from the first video to report.json: a second run into out fails at once
        feat_dir = Path(stamp["dir"])
        detections: list[Detection] = []
        missing: dict[str, str] = {}
        t_load = t_detect = 0.0
        done = []
        for e in man.rows:
            path = feat_dir / f"{e.video_id}.npz"
            if not path.is_file():
                missing[e.video_id] = stamp["failed"].get(e.video_id, "no features file")
                continue
            t0 = time.perf_counter()
            # open_npz: any damage (not a ZIP, a member failing zlib or its CRC-32) is a FormatError naming path;
            # the channels are read one at a time while the windows are scored (a long video's five channels are
            # never in memory together), so "features_load" is the opening and the timing, "detect" the rest
            with open_npz(path, remedy="rerun idtfv features with --force") as z:
                fps, n_frames = _video_timing(e)
                t1 = time.perf_counter()
                detections += detect_video(e.video_id, z, models, model.coef_, model.intercept_, class_names,
                                           fps=fps, n_frames=n_frames, params=params, pyramid=pyramid, source=path)
            t_detect += time.perf_counter() - t1
            t_load += t1 - t0
            done.append(e.video_id)
        (out / "report.json").unlink(missing_ok=True)
        det_path = write_detections(out / "detections.csv", detections)
        report = None
        if truth is not None:
            report = evaluate_detections(detections, truth, class_names=class_names, videos=done)
            report["detector"] = params.to_dict()
            report["pyramid"] = pyramid
            report["codebook"] = codebook.name
            report["n_missing"] = len(missing)
            write_report(report, out / "report.json")
        return {"detections": det_path, "n_videos": len(done), "n_detections": len(detections), "missing": missing,
                "report": report, "codebook": str(codebook), "seconds": {"features_load": t_load, "detect": t_detect}}
