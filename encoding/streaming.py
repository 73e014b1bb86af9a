"""Streaming encode: Fisher vectors at dataset scale without ever storing the raw iDT descriptors.

UCF101's raw improved-trajectory descriptors run to hundreds of GB. The streaming mode stores only small things:

1. ``idtfv features --store sample [--sample-per-video N] [--subset FRACTION]`` runs
   :func:`idtfv.idt.stage.features_sample_item`: each video is extracted in its worker and only a seeded
   sample of its rows is stored (``sample_*`` arrays, ``n_rows``; rows drawn by
   ``idtfv.encoding.sampling.video_rng(seed, video_id)``). ``--subset`` extracts only a seeded, class-stratified
   fraction of the split's training videos (:func:`idtfv.sampling.training_subset`): the codebook needs only a sample.
2. ``idtfv encode --streaming`` (:func:`run_streaming_encode`) fits PCA + GMM per channel from those samples
   (``idtfv.encoding.sampling.load_training_sample`` reads ``sample_*`` arrays), then runs :func:`encode_streaming_item`
   for every video of the manifest through :func:`idtfv.runner.run_stage`: one worker call extracts the
   video and encodes it at once, and only its vector (``features`` (d,) float32, ``n_descriptors``) is stored in
   ``CACHE/encode-<hash12>/`` -- the same per-video files and feature file as ``idtfv encode``. A video whose full
   descriptors were kept (a ``--store all`` features file in the stamp's directory) is encoded from that file
   instead of being extracted again. Resume and failure isolation are the runner's.

Memory, by construction: a worker holds one video's descriptors (``n x 426`` float32 plus ``meta``), the PCA
projections and posteriors of one channel at a time (``n x D/2`` and ``n x K``), and the model (per channel
``D x D/2`` PCA and ``3 K D/2`` GMM numbers); the stage returns only the ``(d,)`` vector, so nothing that grows
with the dataset is kept except the per-video vectors and the fixed-size samples. The parent process holds at
most ``--pca-samples`` rows per channel while fitting, then the feature file (videos x d).

Cost: every sampled video is extracted twice (once for the sample, once to encode). Without ``--subset`` the
sample pass covers every video of the manifest (one sample stamp serves every split); ``--subset 1`` restricts it to
the split's training videos and ``--subset 0.1`` to a tenth of them, which keeps that extra pass small.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from idtfv.cache import open_npz
from idtfv.errors import FormatError, ParameterError
from idtfv.idt import DescriptorLayout

from .params import EncodeParams
from .record import write_encode_record
from .stage import (_check_params, encode_arrays, load_codebooks, prepare_codebooks, refuse_empty, report_empty,
                    write_encoded)

__all__ = ["encode_streaming_item", "run_streaming_encode"]

log = logging.getLogger(__name__)


def _kept_arrays(path: Path, channels) -> dict[str, np.ndarray] | None:
    """The full arrays of a kept ``--store all`` features file, or None (absent, sample-only or unreadable).

    A truncated or damaged file (not a ZIP, a member failing its CRC-32 or zlib) is not an error of the video:
    extracting it again gives the right answer, so it counts as absent, with a warning naming the file.
    """
    if not path.is_file():
        return None
    try:
        with open_npz(path, remedy="extracting the video again instead") as z:
            if not all(k in z for k in ("meta", *channels)):
                return None
            return {k: z[k] for k in ("meta", *channels)}
    except FormatError as exc:
        log.warning("%s", exc)
        return None


def encode_streaming_item(entry, params: Mapping) -> dict[str, np.ndarray]:
    """Stage function of ``run_stage``: extract one video and return only its vector.

    Parameters
    ----------
    entry : ``VideoEntry``; ``entry.path`` is the video.
    params : ``{"idt": IDTParams.to_dict(), "features_dir", "codebook_dir", "method", "pyramid",
        "streaming": True}``; ``features_dir/<video_id>.npz``, when it holds the full arrays, is used instead of
        extracting.

    Returns
    -------
    ``{"features": (d,) float32, "n_descriptors": () int64}`` -- as :func:`idtfv.encoding.stage.encode_item`.
    The descriptors (``n`` rows) exist only inside this call.
    """
    from threadpoolctl import threadpool_limits

    models, summary = load_codebooks(params["codebook_dir"])
    path = Path(params["features_dir"]) / f"{entry.video_id}.npz"
    arrays = _kept_arrays(path, tuple(models))
    source = path
    if arrays is None:
        from idtfv.idt import IDTParams, extract

        arrays = extract(entry.path, params=IDTParams.from_dict(dict(params["idt"]))).as_arrays()
        source = entry.path
    with threadpool_limits(1):  # videos run in parallel; BLAS inside a video does not
        vec = encode_arrays(arrays, models, method=summary["method"], pyramid=params["pyramid"], source=source)
    n = np.array(arrays["meta"].shape[0], np.int64)
    frames = arrays.get("info_json")
    del arrays
    out = {"features": vec, "n_descriptors": n}
    if int(n) == 0:
        reason = "no trajectories"
        if source is entry.path and frames is not None:  # extracted here: say why
            import json

            try:
                count = int(json.loads(str(frames))["frames"])
            except (KeyError, ValueError, TypeError):
                count = None
            need = int(params["idt"].get("track_length", 15)) + 1
            reason = (f"{count} frames; at least L+1={need} needed" if count is not None and count < need
                      else "no trajectory survived pruning")
        refuse_empty(out, reason)
    return out


def run_streaming_encode(manifest, features, params: EncodeParams, *, split: int, cache, out, jobs: int = 1,
                         scheduler=None, force: bool = False, codebook=None, keep_empty: bool = False) -> dict:
    """``idtfv encode --streaming``: codebooks from the stored samples, then extract + encode every video.

    Parameters
    ----------
    manifest : manifest CSV path (or a ``Manifest``); every video of it is encoded.
    features : stamp of a features stage (``--store sample``, possibly ``--subset``; a ``--store all`` stamp also
        works): its training videos fit the codebook, its ``params["idt"]`` are the extraction settings (and
        give the descriptor layout).
    params : the encoding options.
    codebook : an existing codebook directory to use instead of fitting one.
    keep_empty : keep videos without trajectories as zero vectors (default: left out, with a logged warning).
    Other parameters : as :func:`idtfv.encoding.stage.run_encode`.

    Returns
    -------
    dict as :func:`idtfv.encoding.stage.run_encode` (``missing`` is always empty: every video is extracted here).
    """
    from idtfv.data.manifest import Manifest, read_manifest
    from idtfv.runner import entry_fingerprint, read_stamp, run_stage

    params = _check_params(params)
    man = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    stamp_path = Path(features)
    stamp = read_stamp(stamp_path)
    idt_params = stamp["params"].get("idt")
    if not isinstance(idt_params, dict):
        raise FormatError(stamp_path, "stamp has no params.idt (the extraction settings); expected the stamp of "
                                      "idtfv features, rerun it")
    feat_dir = Path(stamp["dir"])
    subset = stamp["params"].get("subset")
    if isinstance(subset, dict) and subset.get("split") != split and codebook is None:
        log.warning("%s: the features sample was drawn from split %s's training videos (--subset), encoding split %d: "
                    "the codebook uses only the videos that are training videos in both; rerun idtfv features with "
                    "--split %d for a full sample", stamp_path, subset.get("split"), split, split)

    # the stamp's videos, not every file of the directory: a --subset run shares the stage directory with
    # fuller runs of the same settings
    done = set(stamp["done"])
    train = [e for e in man.split(split, "train")
             if e.video_id in done and (feat_dir / f"{e.video_id}.npz").is_file()]
    if codebook is None and not train:
        raise ParameterError(f"split {split} has no training video with a features sample in {feat_dir}; run "
                             "idtfv features --store sample (with the same --split) first")
    try:
        layout = DescriptorLayout.from_params(idt_params)
    except ParameterError as exc:
        problem = f"params.idt gives no descriptor layout ({exc}); rerun idtfv features"
        raise FormatError(stamp_path, problem) from None
    cb_dir = prepare_codebooks(feat_dir, [e.video_id for e in train], params, cache=cache, split=split,
                               layout=layout, jobs=jobs, force=force, codebook=codebook)
    models, summary = load_codebooks(cb_dir)
    method = summary["method"]

    stage_params = {"idt": idt_params, "features_dir": str(feat_dir.resolve()),
                    "codebook_dir": str(Path(cb_dir).resolve()), "method": method, "pyramid": params.pyramid,
                    "streaming": True}
    result = run_stage("encode", encode_streaming_item, man.rows, params=stage_params, cache_root=cache, jobs=jobs,
                       scheduler=scheduler, force=force, fingerprint=entry_fingerprint)  # extracted from the video
    n_ok, dim = write_encoded(out, result, man.rows, models=models, method=method, grids=params.grids,
                              keep_empty=keep_empty)
    write_encode_record(out, cb_dir, cache, method=method, pyramid=params.pyramid, split=split)  # out's codebook
    report_empty(result.empty, len(man.rows), kept=keep_empty)
    return {"codebook_dir": str(cb_dir), "encode_dir": str(result.dir), "k": summary["k"], "dim": dim,
            "n_videos": n_ok, "missing": {}, "failed": dict(result.failed), "empty": dict(result.empty),
            "result": result}
