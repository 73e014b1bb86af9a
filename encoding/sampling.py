"""Seeded per-video descriptor sampling, for fitting PCA and GMM without loading every video at once.

Every video draws its sample from its own generator, seeded by ``(seed, crc32(video_id))``: the rows a video
contributes do not depend on the order in which videos are visited, on other videos, or on the process.

Two ways to use it:

1. From stored per-video ``.npz`` files (``idtfv encode``): :func:`load_training_sample` reads each training
   video's row count, splits the total sample (default 256,000) evenly across videos (videos with fewer rows give
   all of theirs and the rest is shared among the others), then reads one video at a time and keeps its rows.
2. Streaming (the raw descriptors are never kept): the features stage calls :func:`keep_sample` on each video's
   arrays as soon as they exist and stores only ``sample_*`` arrays (plus whatever it keeps of the rest); e.g.
   in a stage function::

       arrays = idtfv.idt.extract(entry.path).as_arrays()
       small = keep_sample(arrays, n_keep=2000, seed=seed, video_id=entry.video_id)
       return small  # or {**arrays, **small} to keep everything

   :func:`load_training_sample` uses ``sample_*`` arrays whenever a file has them, so PCA and GMM are fitted from
   the samples alone; each video's Fisher vector is then computed from its descriptors by
   ``idtfv.encoding.stage.encode_arrays`` (in the extraction job itself, or from the stored ``.npz``).
   Memory stays bounded by one video's descriptors plus the model.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from idtfv.errors import FormatError, ParameterError
from idtfv.sampling import SAMPLE_PREFIX, sample_rows, split_quota, video_rng

__all__ = ["CHANNELS", "load_training_sample", "count_rows"]

#: Descriptor channels of improved trajectories (``.npz`` keys) and their dimensions.
CHANNELS = {"traj": 30, "hog": 96, "hof": 108, "mbhx": 96, "mbhy": 96}


def _open(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FormatError(path, "features file not found; run idtfv features first") from None
    except (ValueError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise FormatError(path, f"features file unreadable ({type(exc).__name__}: {exc}); rerun idtfv features "
                                "with --force for this video") from None


def count_rows(path) -> tuple[int, bool]:
    """(rows available for sampling, whether they come from ``sample_*`` arrays) of one features file."""
    path = Path(path)
    with _open(path) as z:
        key = SAMPLE_PREFIX + "meta" if SAMPLE_PREFIX + "meta" in z.files else "meta"
        if key not in z.files:
            raise FormatError(path, "features file has no 'meta' array; expected the extractor's .npz keys "
                                    "(meta, traj, hog, hof, mbhx, mbhy)")
        return int(z[key].shape[0]), key != "meta"


def load_training_sample(paths: Mapping[str, str | Path], *, total: int, seed: int,
                         channels=tuple(CHANNELS)) -> tuple[dict[str, np.ndarray], dict]:
    """Seeded sample of about ``total`` descriptors per channel, spread evenly over the given videos.

    Parameters
    ----------
    paths : video_id -> features ``.npz`` (full arrays and/or ``sample_*`` arrays).
    total : rows wanted per channel (capped at what the videos have).
    seed : sampling seed.

    Returns
    -------
    (sample, info): ``sample[channel]`` (n, D) float32 (same rows for every channel, videos in sorted id order);
    ``info`` = {"videos", "rows_available", "rows", "from_samples"}.
    """
    if total < 1:
        raise ParameterError(f"sample size must be >= 1 descriptors, got {total}")
    vids = sorted(paths)
    counts = []
    n_from_samples = 0
    for v in vids:
        n, from_sample = count_rows(paths[v])
        counts.append(n)
        n_from_samples += from_sample
    quota = split_quota(counts, total)
    n_total = int(quota.sum())
    out = {ch: np.empty((n_total, CHANNELS[ch]), np.float32) for ch in channels}
    pos = 0
    for v, n, q in zip(vids, counts, quota):
        if q == 0:
            continue
        path = Path(paths[v])
        idx = sample_rows(n, int(q), rng=video_rng(seed, v))
        with _open(path) as z:
            prefix = SAMPLE_PREFIX if SAMPLE_PREFIX + "meta" in z.files else ""
            for ch in channels:
                key = prefix + ch
                if key not in z.files:
                    raise FormatError(path, f"features file has no {key!r} array; expected keys meta, traj, hog, "
                                            "hof, mbhx, mbhy")
                a = z[key]
                if a.shape != (n, CHANNELS[ch]):
                    raise FormatError(path, f"array {key!r} has shape {a.shape}, expected ({n}, {CHANNELS[ch]})")
                out[ch][pos:pos + q] = a[idx]
        pos += int(q)
    info = {"videos": len(vids), "rows_available": int(sum(counts)), "rows": n_total,
            "from_samples": int(n_from_samples)}
    return out, info
