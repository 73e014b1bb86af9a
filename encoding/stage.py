"""The encode stage: sample -> PCA -> GMM (or k-means) per channel -> one vector per video -> feature file.

``run_encode(manifest, features, params)`` (behind ``idtfv encode``; ``params`` an
:class:`~idtfv.encoding.params.EncodeParams`):

1. reads the manifest and the features stage stamp; videos without a features file are skipped and reported;
2. draws a seeded sample of the split's training descriptors (default 256,000 per channel, spread evenly across
   training videos, one video in memory at a time; ``idtfv.encoding.sampling``);
3. fits, per channel (Traj, HOG, HOF, MBHx, MBHy; their widths are the features' descriptor layout,
   :class:`idtfv.idt.DescriptorLayout`), PCA to half the dimensions (optionally whitened) and a diagonal
   GMM (``fisher``, default K=256) or a k-means codebook (``bof`` K=4000, ``vlad`` K=256), saved as ``.npz`` +
   ``.json`` in ``CACHE/codebook-<hash12>/`` (the hash covers every fitting parameter and the features directory);
4. encodes every video of the manifest through :func:`idtfv.runner.run_stage` (resumable, parallel, failure
   isolation): ``CACHE/encode-<hash12>/<video_id>.npz`` holds ``features`` (d,) float32;
5. writes the feature file (``video_ids``, ``features`` (n, d) float32, ``labels``) with
   ``idtfv.scores.write_features``.

Small datasets: the sample is capped at what the training videos have, and K at ``n_samples //
MIN_SAMPLES_PER_COMPONENT`` (logged as a warning), so the default K=256 stays usable on the built-in dataset.

Vector layout: for each channel in ``channels`` order, for each pyramid cell (grids in order, cells numbered as in
``idtfv.encoding.pyramid``), the cell's normalised encoding (Fisher: ``[u_1..u_K, v_1..v_K]``, improved).
"""

from __future__ import annotations

import logging
import os
from collections import ChainMap
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from idtfv.errors import FormatError, ParameterError
from idtfv.lock import LOCK_NAME, exclusive_lock

from . import codebook_io
from .bof import bof_histograms
from .fisher import fisher_vectors_cells
from .gmm import DiagGMM
from .kmeans import KMeansCodebook
from .params import CHANNELS, METHODS, EncodeParams
from .pca import DescriptorPCA
from .pyramid import POSITION_COLUMNS, cell_ids, n_cells, parse_pyramid
from .record import write_encode_record
from .sampling import channel_descriptors, features_layout, load_training_sample, open_features
from .vlad import vlad_vectors

__all__ = ["run_encode", "prepare_codebooks", "write_encoded", "encode_item", "refuse_empty", "report_empty", "encode_arrays", "fit_codebooks",
           "load_codebooks", "codebook_params", "MIN_SAMPLES_PER_COMPONENT", "encoded_dim"]

log = logging.getLogger(__name__)

#: K is capped so that every component has at least this many training descriptors on average.
MIN_SAMPLES_PER_COMPONENT = 20
CODEBOOK_SUMMARY = "codebook.json"


def _check_params(params) -> EncodeParams:
    if not isinstance(params, EncodeParams):
        raise ParameterError(f"params: expected an EncodeParams (idtfv.encoding.params), got "
                             f"{type(params).__name__}; build one with EncodeParams(method=..., k=...)")
    return params


# ------------------------------------------------------------------------------------------------ fitting
def _fit_channel(ch: str, X: np.ndarray, *, method: str, k: int, pca_whiten: bool, seed: int, gmm_iter: int):
    pca = DescriptorPCA(whiten=pca_whiten).fit(X)
    Y = pca.transform(X)
    # One seed per channel, derived from the run seed (no shared global state between threads).
    rs = int(np.random.default_rng([int(seed) & 0xFFFFFFFF, list(CHANNELS).index(ch)]).integers(2**31 - 1))
    if method == "fisher":
        model = DiagGMM(k, max_iter=gmm_iter, random_state=rs).fit(Y)
        log.info("%s: PCA %d -> %d (%.1f%% variance), GMM K=%d: %d EM iterations (%s), log-likelihood %.4f",
                 ch, X.shape[1], Y.shape[1], 100 * pca.explained_variance_ratio_.sum(), k, model.n_iter_,
                 "converged" if model.converged_ else "stopped at --gmm-iter", model.lower_bound_)
    else:
        model = KMeansCodebook(k, random_state=rs).fit(Y)
        log.info("%s: PCA %d -> %d, k-means K=%d, inertia %.4g", ch, X.shape[1], Y.shape[1], k, model.inertia_)
    return pca, model


def fit_codebooks(sample: Mapping[str, np.ndarray], params: EncodeParams, *, jobs: int = 1) -> tuple[dict, int]:
    """Fit PCA + codebook per channel on a training sample.

    Parameters
    ----------
    sample : channel -> (n, D) float32 descriptors.
    params : ``method`` (``fisher``: diagonal GMM; ``bof``, ``vlad``: k-means), ``k`` (default per method; capped
        at ``n // MIN_SAMPLES_PER_COMPONENT`` with a warning), ``pca_whiten``, ``seed``, ``gmm_iter``.
    jobs : channels fitted at once (threads; BLAS limited to one thread each, so the result does not depend on it).

    Returns
    -------
    ({channel: (DescriptorPCA, DiagGMM | KMeansCodebook)}, k used)
    """
    from joblib import Parallel, delayed
    from threadpoolctl import threadpool_limits

    params = _check_params(params)
    k = params.codebook_size
    n = min(len(v) for v in sample.values())
    cap = max(1, n // MIN_SAMPLES_PER_COMPONENT)
    if k > cap:
        log.warning("only %d training descriptors per channel: codebook size lowered from K=%d to K=%d "
                    "(at least %d descriptors per component); pass --k to choose it", n, k, cap,
                    MIN_SAMPLES_PER_COMPONENT)
        k = cap
    if n < 2:
        raise ParameterError(f"only {n} training descriptors: cannot fit PCA; check the split's training videos")
    channels = list(sample)
    n_jobs = max(1, min(len(channels), (os.cpu_count() or 1) if jobs == -1 else int(jobs)))
    with threadpool_limits(1):
        fitted = Parallel(n_jobs=n_jobs, backend="threading")(
            delayed(_fit_channel)(ch, sample[ch], method=params.method, k=k, pca_whiten=params.pca_whiten,
                                  seed=params.seed, gmm_iter=params.gmm_iter) for ch in channels)
    stopped = [ch for ch, (_, model) in zip(channels, fitted) if params.method == "fisher" and not model.converged_]
    if stopped:  # said once, in plain words: "converged": false in codebook.json is not a failure
        log.info("GMM: on %s, EM stopped at --gmm-iter %d iterations before the log-likelihood's change per "
                 "iteration fell under its tolerance (%g nats per descriptor), hence \"converged\": false in "
                 "codebook.json. That is normal for iDT codebooks: the last iterations change the codebook little "
                 "and the accuracy is insensitive to them. To run EM longer, pass --gmm-iter 100 (make: "
                 "ENCODE_ARGS=\"--gmm-iter 100\").", ", ".join(stopped), params.gmm_iter, fitted[0][1].tol)
    return dict(zip(channels, fitted)), k


def _model_name(method: str) -> str:
    return "gmm" if method == "fisher" else "kmeans"


def save_codebooks(directory, models: Mapping, summary: dict, *, seed: int) -> Path:
    """Write ``pca_<ch>`` and ``gmm_<ch>`` / ``kmeans_<ch>`` (.npz + .json), then ``codebook.json`` (last)."""
    from idtfv.cache import atomic_write_json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = _model_name(summary["method"])
    for ch, (pca, model) in models.items():
        codebook_io.save_model(directory / f"pca_{ch}", pca, seed=seed, extra={"channel": ch})
        codebook_io.save_model(directory / f"{name}_{ch}", model, seed=seed, extra={"channel": ch})
    atomic_write_json(directory / CODEBOOK_SUMMARY, summary)
    return directory


_LOADED: dict[str, tuple[dict, dict]] = {}


def load_codebooks(directory) -> tuple[dict, dict]:
    """({channel: (pca, model)}, summary) of a codebook directory (cached per process)."""
    directory = Path(directory)
    key = str(directory.resolve())
    if key in _LOADED:
        return _LOADED[key]
    summary = codebook_io.load_summary(directory / CODEBOOK_SUMMARY)  # a FormatError naming a missing/bad key
    name = _model_name(summary["method"])
    expect = "DiagGMM" if name == "gmm" else "KMeansCodebook"
    models = {ch: (codebook_io.load_model(directory / f"pca_{ch}", expect="DescriptorPCA"),
                   codebook_io.load_model(directory / f"{name}_{ch}", expect=expect))
              for ch in summary["channels"]}
    _LOADED[key] = (models, summary)
    return models, summary


# ------------------------------------------------------------------------------------------------ encoding
#: method -> (encoder(Y (N, d), model, cells (N, G), n_cells) -> (C, per-cell length), per-cell length(d, model)).
ENCODERS = {
    "fisher": (fisher_vectors_cells, lambda d, m: 2 * m.means_.shape[0] * d),
    "vlad": (vlad_vectors, lambda d, m: m.centers_.shape[0] * d),
    "bof": (bof_histograms, lambda d, m: m.centers_.shape[0]),
}


def encoded_dim(models: Mapping, method: str, grids) -> int:
    """Length of one video's vector (``grids``: parsed grids, or a pyramid string such as ``"1x1x1,1x3x1"``)."""
    if isinstance(grids, str):
        grids = parse_pyramid(grids)
    per_cell = ENCODERS[method][1]
    return n_cells(grids) * sum(per_cell(pca.components_.shape[0], model) for pca, model in models.values())


def encode_arrays(arrays: Mapping[str, np.ndarray], models: Mapping, *, method: str = "fisher",
                  pyramid="1x1x1", source="arrays", consume: bool = False) -> np.ndarray:
    """One video's vector from its descriptor arrays (also the streaming entry point).

    Parameters
    ----------
    arrays : ``meta (n, 10)`` and the channels of ``models`` (``traj (n, 30)``, ``hog (n, 96)``, ... with the
        reference options; each channel as wide as its PCA was fitted on): a dict, or an open features archive
        (:func:`idtfv.encoding.sampling.open_features`), from which each channel is read when it is encoded and
        dropped before the next, so that one channel's descriptors are in memory at a time.
    models : {channel: (DescriptorPCA, DiagGMM | KMeansCodebook)} (:func:`load_codebooks`).
    method : ``fisher``, ``bof`` or ``vlad``.
    pyramid : e.g. ``"1x1x1,1x3x1,1x1x2"``.
    source : name used in error messages (the file).
    consume : the channels' arrays may be overwritten (their PCA centres them in place): for a reader that gives a
        fresh array per access, such as the archive.

    Returns
    -------
    (d,) float32, channels in ``models`` order, each the concatenation of its normalised cell encodings.
    A video without trajectories gives zeros.
    """
    grids = parse_pyramid(pyramid)
    C = n_cells(grids)
    if method not in ENCODERS:
        raise ParameterError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if "meta" not in arrays:
        raise FormatError(source, "no 'meta' array; expected the extractor's keys meta, traj, hog, hof, mbhx, mbhy")
    meta = np.asarray(arrays["meta"])
    if meta.ndim != 2 or meta.shape[1] < 10:
        raise FormatError(source, f"'meta' has shape {meta.shape}, expected (n, 10)")
    n = meta.shape[0]
    cells = cell_ids(meta[:, list(POSITION_COLUMNS)], grids)
    parts = []
    for ch, (pca, model) in models.items():
        if ch not in arrays:
            raise FormatError(source, f"no {ch!r} array; expected keys meta, {', '.join(CHANNELS)}")
        X = channel_descriptors(arrays, ch, pca.n_features_in_, n, source)
        Z = pca.transform(X, overwrite_input=True) if consume else pca.transform(X)  # (a caller's stand-in PCA)
        del X  # (an archive's channel is ours: gone before the next channel is read)
        parts.append(ENCODERS[method][0](Z, model, cells, C).ravel())
        del Z
    return np.concatenate(parts).astype(np.float32)


def encode_item(entry, params: Mapping) -> dict[str, np.ndarray]:
    """Stage function of ``run_stage``: the vector of one video from its features file.

    ``params``: ``{"features_dir", "codebook_dir", "method", "pyramid"}``. Returns ``{"features": (d,) float32,
    "n_descriptors": () int64}``.
    """
    from threadpoolctl import threadpool_limits

    path = Path(params["features_dir"]) / f"{entry.video_id}.npz"
    models, summary = load_codebooks(params["codebook_dir"])
    # a corrupt file is a FormatError naming it and how to recompute it; each channel is read when it is encoded
    with open_features(path) as z, threadpool_limits(1):  # one level of parallelism: videos run in parallel
        meta = {"meta": z["meta"]} if "meta" in z else {}  # read once: the count below
        vec = encode_arrays(ChainMap(meta, z), models, method=summary["method"], pyramid=params["pyramid"],
                            source=path, consume=True)
    out = {"features": vec, "n_descriptors": np.array(meta["meta"].shape[0], np.int64)}
    refuse_empty(out)
    return out


def features_fingerprint(entry, params: Mapping) -> str | None:
    """The ``fingerprint`` of an encode stage whose input is a features result (``run_stage``): the fingerprint of
    the video that result was computed from, as the features stage stored it (None when it stored none)."""
    from idtfv.runner import stored_fingerprint

    return stored_fingerprint(params["features_dir"], entry.video_id)


def refuse_empty(out: Mapping[str, np.ndarray], reason: str = "no trajectories in its features file") -> None:
    """Raise :class:`idtfv.runner.EmptyResult` (the zero vector kept) for a video without descriptors."""
    if int(out["n_descriptors"]) == 0:
        from idtfv.runner import EmptyResult

        raise EmptyResult(reason, out)


def report_empty(empty: Mapping[str, str], total: int, *, kept: bool) -> None:
    """Log one warning line for the videos without trajectories (``{video_id: reason}``)."""
    if not empty:
        return
    shown = "; ".join(f"{vid} ({why})" for vid, why in list(empty.items())[:3])
    more = f"; ... and {len(empty) - 3} more" if len(empty) > 3 else ""
    what = ("kept as zero vectors (--keep-empty), left out of the codebook" if kept else
            "left out of encoding and training (--keep-empty keeps them as zero vectors for evaluation)")
    log.warning("%d of %d videos have no trajectories, %s: %s%s", len(empty), total, what, shown, more)


# ------------------------------------------------------------------------------------------------ the stage
def codebook_params(params: EncodeParams, *, features_dir, split: int, train_ids) -> dict:
    """Everything the codebook depends on (hashed into its directory name): the features directory, the split
    and its training videos, what their features were computed from (the videos' fingerprints the features stage
    stored: a training video replaced in place gives another codebook) and :meth:`EncodeParams.codebook_key`."""
    import hashlib

    from idtfv.runner import stored_fingerprint

    ids = sorted(train_ids)
    names = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    sources = "\n".join(f"{v} {stored_fingerprint(features_dir, v) or '-'}" for v in ids)
    return {"features_dir": str(Path(features_dir).resolve()), "split": int(split), "train_videos": names,
            "train_sources": hashlib.sha256(sources.encode()).hexdigest()[:16], **_check_params(params).codebook_key()}


def run_encode(manifest, features, params: EncodeParams, *, split: int, cache, out, jobs: int = 1,
               scheduler=None, force: bool = False, codebook=None, keep_empty: bool = False) -> dict:
    """Fit the codebooks on the split's training videos, encode every video, write the feature file.

    Parameters
    ----------
    manifest : manifest CSV path (or a ``Manifest``).
    features : the features stage stamp JSON (``{"stage", "dir", "params", "done", "failed"}``); the descriptor
        layout comes from its ``params["idt"]`` (else from the files' ``info_json``).
    params : the encoding options (``idtfv encode --help``).
    split : split number whose ``train`` videos fit PCA and the codebook.
    cache : directory for ``codebook-<hash>`` and ``encode-<hash>``.
    out : feature file to write (``.npz``: ``video_ids``, ``features`` (n, d) float32, ``labels``).
    jobs, scheduler, force : runner options (``jobs`` also fits channels in parallel).
    codebook : an existing codebook directory to use instead of fitting one (its method wins over
        ``params.method``).
    keep_empty : write videos without trajectories (the stamp's ``empty``, or a features file of 0 rows) to the
        feature file as zero vectors (for evaluation: ``train-svm`` leaves all-zero training vectors out). By
        default they are left out, with a logged warning.

    Returns
    -------
    dict: ``codebook_dir``, ``encode_dir``, ``k``, ``dim``, ``n_videos``, ``missing`` {video_id: reason},
    ``failed`` {video_id: message}, ``empty`` {video_id: reason}, ``sample`` info.
    """
    from idtfv.data.manifest import Manifest, read_manifest
    from idtfv.runner import read_stamp, run_stage

    params = _check_params(params)
    man = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    stamp = read_stamp(features)
    if stamp["params"].get("store") == "sample":
        raise ParameterError(f"{features}: this features stage kept only a sample of each video's descriptors "
                             "(--store sample); encode it with idtfv encode --streaming, or rerun idtfv features "
                             "with --store all")
    feat_dir = Path(stamp["dir"])
    cache = Path(cache)

    missing: dict[str, str] = {}
    available = []
    empty_features = dict(stamp.get("empty", {}))
    for e in man.rows:
        if e.video_id in empty_features and not keep_empty:
            continue
        if (feat_dir / f"{e.video_id}.npz").is_file():
            available.append(e)
        else:
            missing[e.video_id] = stamp["failed"].get(e.video_id, "no features file")
    if missing:
        log.warning("%d of %d videos have no features and are skipped: %s", len(missing), len(man.rows),
                    ", ".join(list(missing)[:5]) + (" ..." if len(missing) > 5 else ""))
    have = {e.video_id for e in available}
    train = [e for e in man.split(split, "train") if e.video_id in have and e.video_id not in empty_features]
    if not train:
        raise ParameterError(f"split {split} has no training video with features (manifest {len(man.rows)} videos, "
                             f"{len(have)} with features in {feat_dir}); check --split and the features stage")

    layout = features_layout(feat_dir / f"{train[0].video_id}.npz", stamp_params=stamp["params"])
    cb_dir = prepare_codebooks(feat_dir, [e.video_id for e in train], params, cache=cache, split=split,
                               layout=layout, jobs=jobs, force=force, codebook=codebook)
    models, summary = load_codebooks(cb_dir)
    method = summary["method"]

    stage_params = {"features_dir": str(feat_dir.resolve()), "codebook_dir": str(cb_dir.resolve()),
                    "method": method, "pyramid": params.pyramid}
    result = run_stage("encode", encode_item, available, params=stage_params, cache_root=cache, jobs=jobs,
                       scheduler=scheduler, force=force, fingerprint=features_fingerprint)
    n_ok, dim = write_encoded(out, result, available, models=models, method=method, grids=params.grids,
                              keep_empty=keep_empty)
    write_encode_record(out, cb_dir, cache, method=method, pyramid=params.pyramid, split=split)  # out's codebook
    ids = {e.video_id for e in man.rows}
    empty = {**{v: why for v, why in empty_features.items() if v in ids}, **result.empty}
    report_empty(empty, len(man.rows), kept=keep_empty)
    return {"codebook_dir": str(cb_dir), "encode_dir": str(result.dir), "k": summary["k"], "dim": dim,
            "n_videos": n_ok, "missing": missing, "failed": dict(result.failed), "empty": empty, "result": result}


def prepare_codebooks(features_dir, train_ids, params: EncodeParams, *, cache, split: int, layout=None,
                      jobs: int = 1, force: bool = False, codebook=None) -> Path:
    """Fit (or reuse) the codebooks of the training videos' features files; return their directory.

    ``features_dir/<video_id>.npz`` may hold the full arrays or only ``sample_*`` arrays (streaming mode, see
    :func:`idtfv.encoding.sampling.load_training_sample`); ``layout`` is their
    :class:`~idtfv.idt.DescriptorLayout` (default: read from the first file). The directory is
    ``cache/codebook-<hash12>`` of :func:`codebook_params`; an existing complete one is reused unless ``force``.
    ``codebook``: an existing codebook directory to use as it is (nothing is fitted).
    """
    from idtfv.cache import param_hash

    if codebook is not None:
        cb_dir = Path(codebook)
        load_codebooks(cb_dir)  # a clear error now if it is not a complete codebook directory
        return cb_dir
    params = _check_params(params)
    feat_dir = Path(features_dir)
    cb_params = codebook_params(params, features_dir=feat_dir, split=split, train_ids=train_ids)
    cb_dir = Path(cache) / f"codebook-{param_hash(cb_params)}"
    if not force and (cb_dir / CODEBOOK_SUMMARY).is_file():
        return cb_dir
    cb_dir.mkdir(parents=True, exist_ok=True)
    # one fit at a time: a second encode of the same codebook waits, then finds it complete (its own fit could mix
    # its channels' files with the first's)
    with exclusive_lock(cb_dir / LOCK_NAME, what="codebook fit", wait=True):
        if force or not (cb_dir / CODEBOOK_SUMMARY).is_file():
            _fit_and_save(cb_dir, feat_dir, train_ids, params, cb_params, layout=layout, jobs=jobs)
    return cb_dir


def _fit_and_save(cb_dir: Path, feat_dir: Path, train_ids, params: EncodeParams, cb_params: dict, *, layout,
                  jobs: int) -> None:
    """Sample the training descriptors, fit the codebooks and save them in ``cb_dir`` (under its lock)."""
    paths = {v: feat_dir / f"{v}.npz" for v in train_ids}
    if layout is None and paths:
        layout = features_layout(paths[min(paths)])
    sample, info = load_training_sample(paths, total=params.pca_samples, seed=params.seed,
                                        channels=params.channel_names, layout=layout)
    log.info("sampled %d descriptors per channel from %d training videos (%d available)", info["rows"],
             info["videos"], info["rows_available"])
    models, k_used = fit_codebooks(sample, params, jobs=jobs)
    del sample
    summary = {"method": params.method, "k": k_used, "k_requested": params.k,
               "channels": list(params.channel_names), "params": cb_params,
               "layout": None if layout is None else layout.to_dict(), "sample": info,
               "reports": {ch: m.report() for ch, (_, m) in models.items() if isinstance(m, DiagGMM)}}
    save_codebooks(cb_dir, models, summary, seed=params.seed)
    _LOADED.pop(str(cb_dir.resolve()), None)


def write_encoded(out, result, entries, *, models: Mapping, method: str, grids,
                  keep_empty: bool = False) -> tuple[int, int]:
    """Gather the per-video vectors of an encode stage run into the feature file ``out``.

    ``entries``: the videos encoded (in order); the failed ones (``result.failed``) are left out, and so are the
    empty ones (``result.empty``: no trajectory) unless ``keep_empty`` (zero vectors). Returns
    ``(videos written, dim)``.
    """
    dim = encoded_dim(models, method, grids)
    empty = getattr(result, "empty", {}) or {}
    ok = [e for e in entries if e.video_id not in result.failed and (keep_empty or e.video_id not in empty)]
    F = np.empty((len(ok), dim), np.float32)
    for i, e in enumerate(ok):
        with np.load(result.path(e.video_id), allow_pickle=False) as z:
            F[i] = z["features"]
    labels = np.array([e.label for e in ok], np.int64)
    _write_features(out, [e.video_id for e in ok], F, labels)
    return len(ok), dim


def _write_features(path, video_ids, features, labels) -> None:
    from idtfv.scores import write_features

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_features(path, video_ids, features, labels)
