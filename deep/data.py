"""Datasets over the manifest: RGB, RGB difference, optical flow and warped flow clips.

Frames and flow come from a rawframes directory written by ``extract-flow`` / ``idtfv flow`` when one is given
(read only through :class:`idtfv.idt.RawframesReader`: ``DIR/<video_id>/img_*.jpg``, ``flow_x/flow_y_*.jpg``
or ``DIR/<video_id>.npz``), else from the video (``idtfv.video.iter_frames``). Without rawframes flow, flow is
computed on the fly by :func:`solve_flow` (DIS, Kroeger et al. 2016, OpenCV's "fast" preset, through
``idtfv.idt.flow``: what ``extract-flow --method dis --preset fast`` writes) and cached per video quantised
exactly like the rawframes JPEGs (:func:`idtfv.idt.quantize_flow`, so both paths see the same value grid).

Modalities (per frame position i of n_pos = n frames, or n - 1 for the modalities built from frame pairs):

- ``rgb``: frame i, 3 channels;
- ``rgbdiff``: frame i+1 - frame i, 3 channels (TSN's RGB difference);
- ``flow``: flow field i (frame i -> i+1), 2 channels (x, y): the rawframes' flow fields as written (plain, or
  camera-compensated when written with ``--warped``), else DIS on the fly;
- ``warped_flow``: TSN's warped flow (Wang et al. 2016, sec. 3.2), always computed here with the extractor's
  definition, :func:`idtfv.idt.warped_flow` (the camera homography of the iDT extractor, frame i+1 warped back
  into frame i's camera, flow solved again) with :func:`solve_flow`; frames from the rawframes' ``img_*.jpg``
  when present. ``extract-flow --warped`` uses the same definition; to train on its (e.g. TV-L1) warped flow,
  use ``--modality flow`` with ``--rawframes`` pointing at its output.

A sample is ``(x, label, index)`` with ``x (L c, K, H, W)`` float32: K temporal positions (segments or clip
frames), each a stack of L frames with c channels (channel l c + j = channel j of stacked frame l).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from idtfv.errors import ParameterError, VideoError
from idtfv.idt import DEFAULT_BOUND, RawframesReader, dequantize_flow, quantize_flow

from . import transforms as T
from .names import MODALITIES
from .sampling import clip_indices, segment_indices, segment_views

__all__ = ["MODALITIES", "SamplingConfig", "VideoDataset", "FrameSource", "solve_flow", "FLOW_METHOD",
           "FLOW_PRESET"]

#: The on-the-fly flow solver (``idtfv.idt.flow.estimate_flow`` method and DIS preset).
FLOW_METHOD = "dis"
FLOW_PRESET = "fast"

_FLOW_STD = 1.0  # flow is divided by the bound: +-bound -> +-1
_DIFF_STD = 0.226 * 255


@dataclass(frozen=True)
class SamplingConfig:
    """How to cut a video into a network input.

    sampler : "segments" (K = ``frames`` segments of ``snippet_len`` frames) or "clip" (T = ``frames`` frames
        ``stride`` apart; ``snippet_len`` must be 1).
    size : crop side; frames are first resized to a short side of ``round(size * 256 / 224)``
        (or ``short_side`` when given).
    num_clips, num_crops : test views: clips (or segment draws: only 1 for segments) x crops (1, 3 or 10).
    mode : "loop" or "pad" for videos shorter than a clip.
    """

    sampler: str = "segments"
    frames: int = 3
    snippet_len: int = 1
    stride: int = 1
    size: int = 224
    short_side: int | None = None
    num_clips: int = 1
    num_crops: int = 1
    mode: str = "loop"

    def validate(self) -> "SamplingConfig":
        if self.sampler not in ("segments", "clip"):
            raise ParameterError(f"sampler must be 'segments' or 'clip', got {self.sampler!r}")
        if self.sampler == "clip" and self.snippet_len != 1:
            raise ParameterError(f"clip sampling stacks no frames: snippet_len must be 1, got {self.snippet_len}")
        if self.num_crops not in (1, 3, 10):
            raise ParameterError(f"num_crops must be 1, 3 or 10, got {self.num_crops}")
        if min(self.frames, self.snippet_len, self.stride, self.size, self.num_clips) < 1:
            raise ParameterError(f"frames, snippet_len, stride, size and num_clips must be >= 1, got {self}")
        return self

    @property
    def resize_side(self) -> int:
        return self.short_side or round(self.size * 256 / 224)


def solve_flow(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """The on-the-fly flow ``(h, w, 2)`` float32 px from grey ``prev (h, w)`` to ``cur (h, w)`` uint8: DIS with
    OpenCV's "fast" preset through :func:`idtfv.idt.flow.estimate_flow` (``FLOW_METHOD``, ``FLOW_PRESET``)."""
    from idtfv.idt.flow import DISParams, estimate_flow

    return estimate_flow(prev, cur, method=FLOW_METHOD, params=DISParams(preset=FLOW_PRESET))


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


class FrameSource:
    """Frames and flow of one video, from rawframes when present, else decoded from the video.

    ``rgb(idx) -> (F, H, W, 3)`` float32 0..255, ``flow(idx)`` and ``warped_flow(idx) -> (F, H, W, 2)`` float32
    pixels (field i maps frame i to i+1). ``frames`` is a decoded uint8 array reused by ``VideoDataset``'s cache.
    Flow computed here is cached per field, quantised like the rawframes JPEGs (uint8, +-``flow_bound``).

    Raises
    ------
    idtfv.errors.FormatError
        ``rawframes`` given but holding nothing for this video, or malformed (:class:`idtfv.idt.RawframesReader`).
    """

    def __init__(self, entry, *, rawframes: Path | None = None, flow_bound: float = DEFAULT_BOUND, frames=None):
        self.entry = entry
        self.bound = flow_bound
        self.raw = RawframesReader(rawframes, entry.video_id, bound=flow_bound) if rawframes is not None else None
        self._frames = frames
        self._flow_cache: dict[int, np.ndarray] = {}
        self._warp_cache: dict[int, np.ndarray] = {}

    @property
    def nbytes(self) -> int:
        """Memory held by the decoded frames and cached flow fields."""
        n = self._frames.nbytes if self._frames is not None else 0
        return n + sum(a.nbytes for c in (self._flow_cache, self._warp_cache) for a in c.values())

    @property
    def frames(self) -> np.ndarray:
        """All decoded RGB frames (n, H, W, 3) uint8."""
        if self._frames is None:
            from idtfv.video import iter_frames
            frames = list(iter_frames(self.entry.path))
            if not frames:
                raise VideoError(self.entry.path, "no decodable frames")
            self._frames = np.stack(frames)
        return self._frames

    def num_frames(self) -> int:
        if self.raw is not None:
            return self.raw.n_frames
        return self.frames.shape[0]

    def _rgb_uint8(self, idx) -> np.ndarray:
        if self.raw is not None and self.raw.has_frames:
            return self.raw.frames(idx)
        return self.frames[np.asarray(idx, dtype=np.int64)]

    def rgb(self, idx: np.ndarray) -> np.ndarray:
        return self._rgb_uint8(idx).astype(np.float32)

    def flow(self, idx: np.ndarray) -> np.ndarray:
        """Flow fields ``idx``: the rawframes' (when they hold flow), else :func:`solve_flow` on the fly."""
        if self.raw is not None and self.raw.has_flow:
            return self.raw.flow(idx)
        return self._cached(idx, self._flow_cache, self._plain)

    def warped_flow(self, idx: np.ndarray) -> np.ndarray:
        """Camera-compensated flow fields ``idx``: :func:`idtfv.idt.warped_flow` with :func:`solve_flow`."""
        return self._cached(idx, self._warp_cache, self._warped)

    def _plain(self, i: int) -> np.ndarray:
        prev, cur = map(_gray, self._rgb_uint8([i, i + 1]))
        return solve_flow(prev, cur)

    def _warped(self, i: int) -> np.ndarray:
        from idtfv.idt import warped_flow

        prev, cur = map(_gray, self._rgb_uint8([i, i + 1]))
        # the generator only seeds RANSAC; one per field, so fields come out the same in any order
        return warped_flow(prev, cur, solve_flow, rng=np.random.default_rng(i))

    def _cached(self, idx, cache: dict, compute) -> np.ndarray:
        for i in idx:
            i = int(i)
            if i not in cache:
                cache[i] = np.stack(quantize_flow(compute(i), self.bound), axis=-1)  # (h, w, 2) uint8
        q = np.stack([cache[int(i)] for i in idx])
        return dequantize_flow(q[..., 0], q[..., 1], self.bound)


class VideoDataset(Dataset):
    """Network inputs over manifest entries.

    Training: one randomly sampled, scale-jittered, randomly flipped view per video per item; randomness comes
    from ``np.random.default_rng([seed, epoch, index])`` (call ``set_epoch``), so results do not depend on
    worker order. Testing: ``num_clips x num_crops`` deterministic views per video, items ordered video-major;
    ``video_index[i]`` gives the video of item i (for ``idtfv.deep.aggregate.aggregate_views``).

    ``__getitem__(i) -> (x (L c, K, size, size) float32 tensor, label int, video index int)``. Decoded videos
    and computed flow stay in an LRU cache of at most about ``cache_mb`` MiB (the newest video always stays).
    """

    def __init__(self, entries, *, modality: str, config: SamplingConfig, train: bool, rawframes=None,
                 seed: int = 0, flow_bound: float = DEFAULT_BOUND, cache_mb: float = 1024):
        if modality not in MODALITIES:
            raise ParameterError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
        self.entries = list(entries)
        self.modality = modality
        self.config = config.validate()
        self.train = train
        self.rawframes = Path(rawframes) if rawframes is not None else None
        self.seed = seed
        self.epoch = 0
        self.flow_bound = flow_bound
        self.cache_bytes = cache_mb * 2**20
        self._cache: OrderedDict = OrderedDict()
        views = 1 if train else self.config.num_clips * self.config.num_crops
        self.video_index = np.repeat(np.arange(len(self.entries)), views)
        self.labels = np.array([e.label for e in self.entries], dtype=np.int64)

    @property
    def in_channels(self) -> int:
        return MODALITIES[self.modality][0] * self.config.snippet_len

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.video_index)

    def source(self, v: int) -> FrameSource:
        """The ``FrameSource`` of video v, from an LRU cache of decoded videos bounded by ``cache_mb``."""
        if v in self._cache:
            self._cache.move_to_end(v)
            return self._cache[v]
        # evict least recently used videos while the cache is over budget (sizes grow lazily on decode)
        while self._cache and sum(s.nbytes for s in self._cache.values()) > self.cache_bytes:
            self._cache.popitem(last=False)
        src = FrameSource(self.entries[v], rawframes=self.rawframes, flow_bound=self.flow_bound)
        self._cache[v] = src
        return src

    def _positions(self, n_pos: int, rng) -> np.ndarray:
        """(views, K, L) position indices."""
        c = self.config
        if c.sampler == "segments":
            if self.train:
                return segment_indices(n_pos, c.frames, snippet_len=c.snippet_len, train=True, random_state=rng,
                                       mode=c.mode)[None]
            return segment_views(n_pos, c.frames, snippet_len=c.snippet_len, num_clips=c.num_clips, mode=c.mode)
        idx = clip_indices(n_pos, c.frames, stride=c.stride, train=self.train, num_clips=c.num_clips,
                           random_state=rng, mode=c.mode)
        return idx[:, :, None]

    def _load(self, src: FrameSource, idx: np.ndarray) -> np.ndarray:
        """idx (F,) positions -> (F, H, W, c) float32 in the modality's raw units."""
        if self.modality == "rgb":
            return src.rgb(idx)
        if self.modality == "rgbdiff":
            return src.rgb(idx + 1) - src.rgb(idx)
        if self.modality == "warped_flow":
            return src.warped_flow(idx)
        return src.flow(idx)

    def __getitem__(self, i: int):
        v = int(self.video_index[i])
        view = i - int(np.searchsorted(self.video_index, v))
        c = self.config
        rng = np.random.default_rng([self.seed, self.epoch, i]) if self.train else None
        src = self.source(v)
        n = src.num_frames()
        n_pos = n - 1 if MODALITIES[self.modality][1] else n
        if n_pos < 1:
            raise VideoError(self.entries[v].path, f"{n} frame(s): modality {self.modality!r} needs at least 2")
        pos = self._positions(n_pos, rng)                          # (views, K, L)
        clip_j, crop_j = (0, 0) if self.train else divmod(view, c.num_crops)
        k, l = pos.shape[1:]
        frames = self._load(src, pos[clip_j].ravel())              # (K L, H, W, c)
        is_flow = self.modality in ("flow", "warped_flow")
        frames = T.resize_short(frames, c.resize_side, flow=is_flow)
        if self.train:
            frames = T.multi_scale_crop(frames, c.size, random_state=rng, flow=is_flow)
            if rng.random() < 0.5:
                frames = T.hflip(frames, flow=is_flow)
        elif c.num_crops == 1:
            frames = T.center_crop(frames, c.size)
        elif c.num_crops == 3:
            frames = T.three_crop(frames, c.size)[crop_j]
        else:
            frames = T.ten_crop(frames, c.size, flow=is_flow)[crop_j]
        frames = self._normalize(frames)
        ch = frames.shape[-1]
        x = frames.reshape(k, l, c.size, c.size, ch).transpose(1, 4, 0, 2, 3).reshape(l * ch, k, c.size, c.size)
        return torch.from_numpy(np.ascontiguousarray(x)), int(self.labels[v]), v

    def _normalize(self, frames: np.ndarray) -> np.ndarray:
        if self.modality == "rgb":
            return T.normalize(frames, T.RGB_MEAN, T.RGB_STD)
        if self.modality == "rgbdiff":
            return frames / _DIFF_STD
        return frames / (self.flow_bound * _FLOW_STD)
