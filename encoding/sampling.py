"""Seeded per-video descriptor sampling, for fitting PCA and GMM without loading every video at once.

Every video draws its sample from its own generator, seeded by ``(seed, crc32(video_id))``: the rows a video
contributes do not depend on the order in which videos are visited, on other videos, or on the process.

Two ways to use it:

1. From stored per-video ``.npz`` files (``idtfv encode``): :func:`load_training_sample` reads each training
   video's row count, splits the total sample (default 256,000) evenly across videos (videos with fewer rows give
   all of theirs and the rest is shared among the others), then reads one video at a time and keeps its rows.
2. Streaming (the raw descriptors are never kept): the features stage calls :func:`idtfv.sampling.keep_sample` on
   each video's arrays as soon as they exist and stores only ``sample_*`` arrays (plus whatever it keeps of the
   rest); e.g. in a stage function::

       arrays = idtfv.idt.extract(entry.path).as_arrays()
       small = keep_sample(arrays, n_keep=2000, seed=seed, video_id=entry.video_id)
       return small  # or {**arrays, **small} to keep everything

   :func:`load_training_sample` uses ``sample_*`` arrays whenever a file has them, so PCA and GMM are fitted from
   the samples alone; each video's Fisher vector is then computed from its descriptors by
   ``idtfv.encoding.stage.encode_arrays`` (in the extraction job itself, or from the stored ``.npz``).
   Memory stays bounded by one video's descriptors plus the model.

The channels' widths are not constants here: they follow the extractor's options
(:class:`idtfv.idt.DescriptorLayout`), which :func:`features_layout` reads from the features stage's stamp or a
features file's ``info_json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from idtfv.cache import open_npz
from idtfv.errors import FormatError, ParameterError
from idtfv.idt import DescriptorLayout
from idtfv.sampling import SAMPLE_PREFIX, sample_rows, split_quota, video_rng

__all__ = ["CHANNELS", "load_training_sample", "count_rows", "features_layout", "channel_descriptors"]

#: Descriptor channels of improved trajectories (``.npz`` keys), in LEAR's order.
CHANNELS = DescriptorLayout.CHANNELS


def open_features(path):
    """Open a features ``.npz`` (``idtfv.cache.open_npz``): reading a missing, truncated or corrupt file raises a
    FormatError naming it and saying how to recompute it."""
    return open_npz(path, remedy="rerun idtfv features with the same options to recompute it (the runner redoes "
                                 "missing and corrupt results)")


def channel_descriptors(arrays: Mapping, ch: str, width: int, n: int, source) -> np.ndarray:
    """Channel ``ch`` of a video's arrays (a dict or an open features archive: read here), checked: ``(n, width)``
    (the codebook's PCA input) and finite; else a :class:`FormatError` naming ``source``."""
    X = np.asarray(arrays[ch])
    if X.shape != (n, width):
        raise FormatError(source, f"{ch!r} has shape {X.shape}, expected ({n}, {width}) as the codebook's "
                                  f"descriptors; encode features extracted with the codebook's extractor options")
    if not np.isfinite(X).all():
        raise FormatError(source, f"{ch!r} contains NaN or infinity")
    return X


def features_layout(path=None, *, stamp_params: Mapping | None = None) -> DescriptorLayout:
    """The descriptor layout of a features stage's files.

    Parameters
    ----------
    path : path-like, optional
        One features ``.npz`` of the stage: its ``info_json`` holds the extractor's options (``params``).
    stamp_params : mapping, optional
        The stage stamp's ``params``; its ``idt`` (``IDTParams.to_dict()``) decides when present.

    Returns
    -------
    DescriptorLayout
        From ``stamp_params["idt"]``, else from the file's ``info_json``, else the reference layout (files
        written without the extractor's options, e.g. from LEAR's text).
    """
    idt = (stamp_params or {}).get("idt")
    if isinstance(idt, Mapping):
        return DescriptorLayout.from_params(idt)
    if path is None:
        return DescriptorLayout()
    path = Path(path)
    with open_features(path) as z:
        if "info_json" not in z.files:
            return DescriptorLayout()
        try:
            info = json.loads(str(z["info_json"][()]))
            return DescriptorLayout.from_info(info if isinstance(info, dict) else {})
        except (ValueError, TypeError) as exc:  # json.JSONDecodeError, ParameterError
            raise FormatError(path, f"info_json does not hold the extractor's options ({exc}); rerun idtfv "
                                    "features with --force for this video") from None


def count_rows(path) -> tuple[int, bool]:
    """(rows available for sampling, whether they come from ``sample_*`` arrays) of one features file."""
    path = Path(path)
    with open_features(path) as z:
        key = SAMPLE_PREFIX + "meta" if SAMPLE_PREFIX + "meta" in z.files else "meta"
        if key not in z.files:
            raise FormatError(path, "features file has no 'meta' array; expected the extractor's .npz keys "
                                    "(meta, traj, hog, hof, mbhx, mbhy)")
        return int(z[key].shape[0]), key != "meta"


def load_training_sample(paths: Mapping[str, str | Path], *, total: int, seed: int, channels=CHANNELS,
                         layout: DescriptorLayout | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Seeded sample of about ``total`` descriptors per channel, spread evenly over the given videos.

    Parameters
    ----------
    paths : video_id -> features ``.npz`` (full arrays and/or ``sample_*`` arrays).
    total : rows wanted per channel (capped at what the videos have).
    seed : sampling seed.
    channels : the channels to sample (names of :data:`CHANNELS`).
    layout : the files' descriptor layout (default: :func:`features_layout` of the first video's file); every
        file must have its widths.

    Returns
    -------
    (sample, info): ``sample[channel]`` (n, D_channel) float32, ``D_channel`` the layout's width (same rows for
    every channel, videos in sorted id order);
    ``info`` = {"videos", "rows_available", "rows", "from_samples"}.
    """
    if total < 1:
        raise ParameterError(f"sample size must be >= 1 descriptors, got {total}")
    vids = sorted(paths)
    if layout is None:
        layout = features_layout(paths[vids[0]]) if vids else DescriptorLayout()
    widths = layout.channel_widths
    unknown = [ch for ch in channels if ch not in widths]
    if unknown:
        raise ParameterError(f"unknown descriptor channel(s) {', '.join(unknown)}; expected names from "
                             f"{','.join(CHANNELS)}")
    counts = []
    n_from_samples = 0
    for v in vids:
        n, from_sample = count_rows(paths[v])
        counts.append(n)
        n_from_samples += from_sample
    quota = split_quota(counts, total)
    n_total = int(quota.sum())
    out = {ch: np.empty((n_total, widths[ch]), np.float32) for ch in channels}
    pos = 0
    for v, n, q in zip(vids, counts, quota):
        if q == 0:
            continue
        path = Path(paths[v])
        idx = sample_rows(n, int(q), rng=video_rng(seed, v))
        with open_features(path) as z:
            prefix = SAMPLE_PREFIX if SAMPLE_PREFIX + "meta" in z.files else ""
            for ch in channels:
                key = prefix + ch
                if key not in z.files:
                    raise FormatError(path, f"features file has no {key!r} array; expected keys meta, traj, hog, "
                                            "hof, mbhx, mbhy")
                a = z[key]
                if a.shape != (n, widths[ch]):
                    raise FormatError(path, f"array {key!r} has shape {a.shape}, expected ({n}, {widths[ch]}) "
                                            f"({layout.describe()}); every features file of a stage must come "
                                            "from the same extractor options")
                out[ch][pos:pos + q] = a[idx]
        pos += int(q)
    info = {"videos": len(vids), "rows_available": int(sum(counts)), "rows": n_total,
            "from_samples": int(n_from_samples)}
    return out, info
