"""Seeded sampling shared by the stages: which rows of a video, which videos of a split.

Every video draws from its own generator, seeded by ``(seed, crc32(video_id))``: the rows a video contributes do
not depend on the order in which videos are visited, on other videos, or on the process. The features stage's
streaming mode (``idtfv features --store sample``) stores :func:`keep_sample`'s ``sample_*`` arrays; the
encoding stage draws its codebook sample with the same generators (``idtfv.encoding.sampling``).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np

from idtfv.errors import ParameterError

__all__ = ["SAMPLE_PREFIX", "DEFAULT_SAMPLE_PER_VIDEO", "video_rng", "sample_rows", "split_quota", "keep_sample",
           "training_subset"]

#: Key prefix of the sampled arrays in a ``--store sample`` features file (``sample_meta``, ``sample_hog``, ...).
SAMPLE_PREFIX = "sample_"
#: Rows of each video kept by ``idtfv features --store sample`` (the codebook's sample is drawn from these).
DEFAULT_SAMPLE_PER_VIDEO = 1000

def training_subset(entries, fraction: float, *, split: int = 1, seed: int = 0) -> list:
    """A seeded, class-stratified fraction of the split's training videos.

    Parameters
    ----------
    entries : sequence of ``VideoEntry`` (the manifest's rows).
    fraction : in (0, 1]; each class keeps ``max(1, round(fraction * n_c))`` of its ``n_c`` training videos.
    split : split number whose ``train`` videos are drawn from.
    seed : each class draws from its own generator seeded by ``(seed, crc32(label_name or label))``, so a class's
        choice depends neither on the other classes nor on the manifest order.

    Returns
    -------
    list of the chosen entries, in manifest order (test and unused videos are never chosen).
    """
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ParameterError(f"--subset must be a fraction in (0, 1], got {fraction}; e.g. 0.1 for 10% of the "
                             "training videos")
    by_class: dict[str, list] = {}
    for e in entries:
        if e.splits.get(int(split)) == "train":
            key = f"{e.label}:{e.label_name}"
            by_class.setdefault(key, []).append(e)
    if not by_class:
        raise ParameterError(f"--subset: split {split} has no training videos; check --split")
    chosen: set[str] = set()
    for key in sorted(by_class):
        members = sorted(by_class[key], key=lambda e: e.video_id)
        n_keep = max(1, int(round(fraction * len(members))))
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode("utf-8"))])
        idx = rng.choice(len(members), size=n_keep, replace=False)
        chosen.update(members[i].video_id for i in idx)
    return [e for e in entries if e.video_id in chosen]


def video_rng(seed: int, video_id: str) -> np.random.Generator:
    """Generator of one video's sample: seeded by ``(seed, crc32(video_id))``, independent of visiting order."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(str(video_id).encode("utf-8"))])


def sample_rows(n_rows: int, n_keep: int, *, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``min(n_keep, n_rows)`` rows drawn without replacement (all rows if n_keep >= n_rows)."""
    if n_keep >= n_rows:
        return np.arange(n_rows)
    return np.sort(rng.choice(n_rows, size=n_keep, replace=False))


def split_quota(counts, total: int) -> np.ndarray:
    """Split ``total`` rows evenly across videos with ``counts`` rows each (water-filling, deterministic).

    A video never gives more than it has; what a short video cannot give is shared by the others. Returns (M,)
    int64 quotas with ``quota <= counts`` and ``quota.sum() == min(total, counts.sum())``.
    """
    counts = np.asarray(counts, np.int64)
    quota = np.zeros_like(counts)
    remaining = int(total)
    order = np.argsort(counts, kind="stable")
    left = len(order)
    for j in order:
        share = remaining // left if left else 0
        take = min(int(counts[j]), share)
        quota[j] = take
        remaining -= take
        left -= 1
    # Hand out the rounding remainder one row at a time, in video order, to videos that still have rows.
    for j in range(len(counts)):
        if remaining <= 0:
            break
        if quota[j] < counts[j]:
            quota[j] += 1
            remaining -= 1
    return quota


def keep_sample(arrays: Mapping[str, np.ndarray], *, n_keep: int, seed: int, video_id: str,
                channels=None) -> dict[str, np.ndarray]:
    """Seeded sample of one video's descriptors, for the streaming mode.

    Parameters
    ----------
    arrays : the video's arrays (``meta (n,10)``, ``traj (n,30)``, ``hog``, ...).
    n_keep : rows to keep (all if the video has fewer).
    seed, video_id : seed the generator (:func:`video_rng`).
    channels : descriptor channels to keep (default: every array of ``arrays`` but ``meta`` and ``info_json``,
        in their order).

    Returns
    -------
    ``{"sample_meta": ..., "sample_<channel>": ...}`` with the same rows of every array.
    """
    n = int(np.asarray(arrays["meta"]).shape[0])
    idx = sample_rows(n, int(n_keep), rng=video_rng(seed, video_id))
    out = {SAMPLE_PREFIX + "meta": np.asarray(arrays["meta"])[idx]}
    if channels is None:
        channels = [key for key in arrays if key not in ("meta", "info_json")]
    for ch in channels:
        out[SAMPLE_PREFIX + ch] = np.asarray(arrays[ch])[idx]
    return out
