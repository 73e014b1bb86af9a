"""Frame samplers: pure functions from a frame count (and an explicit seed) to frame indices.

- ``segment_indices``: TSN segment sampling (Wang et al. 2016, sec. 3.1). The usable positions are split into
  K equal segments and one snippet of L consecutive frames is taken from each: at a random offset in training,
  at the segment centre at test time. Returns (K, L).
- ``segment_views``: test-time TSN views: ``num_clips`` draws at offsets (j + 0.5) / num_clips inside every
  segment (j = 0 .. num_clips - 1; one draw = the centres). Returns (num_clips, K, L).
- ``clip_indices``: dense clips of T frames every ``stride`` frames (C3D, I3D, SlowFast, ...): a random start in
  training, ``num_clips`` evenly spaced starts at test time (multi-clip testing). Returns (num_clips, T).

Videos shorter than one snippet/clip are handled by ``mode``: ``"loop"`` wraps the indices around
(``i mod n``), ``"pad"`` repeats the last frame (``min(i, n - 1)``).
"""

from __future__ import annotations

import numpy as np

from idtfv.errors import ParameterError

__all__ = ["segment_indices", "segment_views", "clip_indices", "SHORT_MODES"]

SHORT_MODES = ("loop", "pad")


def _rng(random_state) -> np.random.Generator:
    return random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)


def _fit(idx: np.ndarray, num_frames: int, mode: str) -> np.ndarray:
    if mode == "loop":
        return idx % num_frames
    return np.minimum(idx, num_frames - 1)


def _check(num_frames: int, count: int, what: str, mode: str) -> None:
    if num_frames < 1:
        raise ParameterError(f"cannot sample from a video with {num_frames} frames; need at least 1 (check the "
                             "manifest's frames column or the video)")
    if count < 1:
        raise ParameterError(f"{what} must be >= 1, got {count}")
    if mode not in SHORT_MODES:
        raise ParameterError(f"mode must be one of {SHORT_MODES}, got {mode!r}")


def segment_indices(num_frames: int, num_segments: int, *, snippet_len: int = 1, train: bool,
                    random_state=None, mode: str = "loop") -> np.ndarray:
    """TSN segment sampling.

    Parameters
    ----------
    num_frames : n, frames (or flow fields) available.
    num_segments : K.
    snippet_len : L, consecutive frames per snippet (1 for RGB, 10 for a flow stack).
    train : random offset per segment if True, segment centre otherwise.
    random_state : int, None or ``np.random.Generator`` (training only).
    mode : ``"loop"`` or ``"pad"`` for videos with n < L.

    Returns
    -------
    (K, L) int64 indices in [0, n).
    """
    _check(num_frames, num_segments, "num_segments", mode)
    _check(num_frames, snippet_len, "snippet_len", mode)
    avail = max(num_frames - snippet_len + 1, 1)  # start positions whose snippet fits
    seg = avail / num_segments
    k = np.arange(num_segments)
    if train:
        u = _rng(random_state).random(num_segments)
        starts = np.floor((k + u) * seg)
    else:
        starts = np.floor((k + 0.5) * seg)
    starts = np.minimum(starts.astype(np.int64), avail - 1)
    return _fit(starts[:, None] + np.arange(snippet_len)[None, :], num_frames, mode)


def segment_views(num_frames: int, num_segments: int, *, snippet_len: int = 1, num_clips: int = 1,
                  mode: str = "loop") -> np.ndarray:
    """Deterministic multi-view TSN sampling: (num_clips, K, L) indices; view j takes offset
    (j + 0.5) / num_clips of each segment, so ``num_clips = 1`` equals ``segment_indices(train=False)``."""
    _check(num_frames, num_segments, "num_segments", mode)
    _check(num_frames, snippet_len, "snippet_len", mode)
    _check(num_frames, num_clips, "num_clips", mode)
    avail = max(num_frames - snippet_len + 1, 1)
    seg = avail / num_segments
    k = np.arange(num_segments)[None, :]
    j = np.arange(num_clips)[:, None]
    starts = np.minimum(np.floor((k + (j + 0.5) / num_clips) * seg).astype(np.int64), avail - 1)  # (V, K)
    return _fit(starts[:, :, None] + np.arange(snippet_len), num_frames, mode)


def clip_indices(num_frames: int, clip_len: int, *, stride: int = 1, train: bool, num_clips: int = 1,
                 random_state=None, mode: str = "loop") -> np.ndarray:
    """Dense clip sampling: T = ``clip_len`` frames ``stride`` apart.

    Training draws one random start (``num_clips`` is ignored); testing takes ``num_clips`` starts evenly
    spaced over the video (one clip: the centred one). A video shorter than the clip span
    ``(T - 1) * stride + 1`` starts at 0 and is looped or padded.

    Returns
    -------
    (1 or num_clips, T) int64 indices in [0, n).
    """
    _check(num_frames, clip_len, "clip_len", mode)
    if stride < 1 or num_clips < 1:
        raise ParameterError(f"stride and num_clips must be >= 1, got stride={stride}, num_clips={num_clips}")
    span = (clip_len - 1) * stride + 1
    room = num_frames - span  # last valid start
    if room < 0:
        starts = np.zeros(1 if train else num_clips, dtype=np.int64)
    elif train:
        starts = np.array([_rng(random_state).integers(0, room + 1)], dtype=np.int64)
    elif num_clips == 1:
        starts = np.array([room // 2], dtype=np.int64)
    else:
        starts = np.round(np.linspace(0, room, num_clips)).astype(np.int64)
    return _fit(starts[:, None] + stride * np.arange(clip_len)[None, :], num_frames, mode)
