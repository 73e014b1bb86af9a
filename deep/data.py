"""Datasets over the manifest: RGB, RGB difference, optical flow and warped flow clips.

Frames come from the video (``idtfv.video.iter_frames``) or from a rawframes directory written by
``extract-flow`` (``DIR/<video_id>/img_00001.jpg``, ``flow_x_00001.jpg``, ``flow_y_00001.jpg``, or
``DIR/<video_id>.npz`` with ``flow (T-1, H, W, 2) float16`` and ``bound``). Flow JPEGs hold
``v = round((f + bound) * 255 / (2 bound))``, decoded here as ``f = v * 2 bound / 255 - bound`` pixels. Without
rawframes, flow is computed on the fly with OpenCV's DIS (Kroeger et al. 2016), clipped to +-bound and
cached per video quantised exactly like the rawframes JPEGs (so both paths see the same value grid).

Modalities (per frame position i of n_pos = n frames, or n - 1 for the modalities built from frame pairs):

- ``rgb``: frame i, 3 channels;
- ``rgbdiff``: frame i+1 - frame i, 3 channels (TSN's RGB difference);
- ``flow``: flow field i (frame i -> i+1), 2 channels (x, y);
- ``warped_flow``: flow i minus the camera motion, a homography fitted to the flow field by RANSAC
  (TSN's warped flow, Wang et al. 2016 sec. 3.2, with the homography estimated from the flow itself).

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

from idtfv.errors import FormatError, ParameterError, VideoError

from . import transforms as T
from .sampling import clip_indices, segment_indices, segment_views

__all__ = ["MODALITIES", "SamplingConfig", "VideoDataset", "FrameSource", "remove_camera_motion",
           "decode_flow_jpeg", "encode_flow_jpeg"]

#: modality -> (channels per frame, whether it uses frame pairs)
MODALITIES = {"rgb": (3, False), "rgbdiff": (3, True), "flow": (2, True), "warped_flow": (2, True)}

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


def decode_flow_jpeg(values: np.ndarray, bound: float = 20.0) -> np.ndarray:
    """uint8 0..255 -> flow in pixels: ``v * 2 bound / 255 - bound``."""
    return values.astype(np.float32) * (2 * bound / 255.0) - bound


def encode_flow_jpeg(flow: np.ndarray, bound: float = 20.0) -> np.ndarray:
    """flow in pixels -> uint8 ``round((clip(f, -bound, bound) + bound) * 255 / (2 bound))``."""
    return np.round((np.clip(flow, -bound, bound) + bound) * 255.0 / (2 * bound)).astype(np.uint8)


def remove_camera_motion(flow: np.ndarray, *, step: int = 4, threshold: float = 1.0) -> np.ndarray:
    """Warped flow: subtract the motion of a homography fitted (RANSAC) to the flow field.

    ``flow (H, W, 2)`` pixels; correspondences p -> p + flow(p) on a grid every ``step`` pixels. Returns the
    flow unchanged when fewer than 8 points or no homography is found.
    """
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    src = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
    dst = src + flow[ys.ravel(), xs.ravel()].astype(np.float32)
    if len(src) < 8:
        return flow
    cv2.setRNGSeed(0)  # RANSAC draws from OpenCV's global RNG: seed it for reproducibility
    hom, _ = cv2.findHomography(src, dst, cv2.RANSAC, threshold)
    if hom is None:
        return flow
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    pts = np.stack([gx, gy], axis=-1).reshape(-1, 1, 2)
    moved = cv2.perspectiveTransform(pts, hom).reshape(h, w, 2)
    return (flow - (moved - np.stack([gx, gy], axis=-1))).astype(np.float32)


class FrameSource:
    """Frames and flow of one video, from rawframes when present, else decoded from the video.

    ``rgb(idx) -> (F, H, W, 3)`` float32 0..255, ``flow(idx) -> (F, H, W, 2)`` float32 pixels (field i maps
    frame i to i+1). ``frames`` is a decoded uint8 array reused by ``VideoDataset``'s cache.
    """

    def __init__(self, entry, *, rawframes: Path | None = None, flow_bound: float = 20.0, frames=None):
        self.entry = entry
        self.bound = flow_bound
        self.raw = Path(rawframes) / entry.video_id if rawframes is not None else None
        self.raw_npz = Path(rawframes) / f"{entry.video_id}.npz" if rawframes is not None else None
        self._frames = frames
        self._npz_flow = None
        self._has_raw_img = self.raw is not None and (self.raw / "img_00001.jpg").exists()
        self._has_raw_flow = self.raw is not None and (self.raw / "flow_x_00001.jpg").exists()
        if rawframes is not None and not (self._has_raw_img or self._has_raw_flow or self.raw_npz.exists()):
            raise VideoError(self.raw, "no rawframes for this video (expected img_00001.jpg, flow_x_00001.jpg "
                                       f"or {self.raw_npz.name}); run extract-flow on the manifest first")
        self._n_raw = None
        self._dis = None
        self._dis_cache: dict[int, np.ndarray] = {}
        self._warp_cache: dict[int, np.ndarray] = {}

    @property
    def nbytes(self) -> int:
        """Memory held by the decoded frames and cached flow fields."""
        n = self._frames.nbytes if self._frames is not None else 0
        n += sum(a.nbytes for a in self._dis_cache.values()) + sum(a.nbytes for a in self._warp_cache.values())
        return n + (sum(g.nbytes for g in self._gray) if self._dis is not None else 0)

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
        if self._has_raw_img:
            if self._n_raw is None:
                self._n_raw = len(list(self.raw.glob("img_*.jpg")))
            return self._n_raw
        if self._has_raw_flow:
            if self._n_raw is None:
                self._n_raw = len(list(self.raw.glob("flow_x_*.jpg"))) + 1
            return self._n_raw
        if self.raw_npz is not None and self.raw_npz.exists():
            return self._load_npz().shape[0] + 1
        return self.frames.shape[0]

    def _read(self, name: str, flags) -> np.ndarray:
        path = self.raw / name
        img = cv2.imread(str(path), flags)
        if img is None:
            raise FormatError(path, "missing or unreadable rawframe image; re-run extract-flow for this video")
        return img

    def rgb(self, idx: np.ndarray) -> np.ndarray:
        if self._has_raw_img:
            return np.stack([cv2.cvtColor(self._read(f"img_{i + 1:05d}.jpg", cv2.IMREAD_COLOR),
                                          cv2.COLOR_BGR2RGB) for i in idx]).astype(np.float32)
        return self.frames[idx].astype(np.float32)

    def _load_npz(self) -> np.ndarray:
        if self._npz_flow is None:
            try:
                with np.load(self.raw_npz) as z:
                    self._npz_flow = z["flow"]
                    self._npz_bound = float(z["bound"]) if "bound" in z else self.bound
            except (OSError, KeyError, ValueError) as exc:
                raise FormatError(self.raw_npz, f"cannot read the flow array ({exc}); re-run extract-flow") from None
        return self._npz_flow

    def flow(self, idx: np.ndarray) -> np.ndarray:
        if self._has_raw_flow:
            out = []
            for i in idx:
                fx = self._read(f"flow_x_{i + 1:05d}.jpg", cv2.IMREAD_GRAYSCALE)
                fy = self._read(f"flow_y_{i + 1:05d}.jpg", cv2.IMREAD_GRAYSCALE)
                out.append(np.stack([fx, fy], axis=-1))
            return decode_flow_jpeg(np.stack(out), self.bound)
        if self.raw_npz is not None and self.raw_npz.exists():
            b = min(self.bound, getattr(self, "_npz_bound", self.bound))  # the .npz is stored unclipped
            return np.clip(self._load_npz()[idx].astype(np.float32), -b, b)
        return self._cached(idx, self._dis_cache, self._dis_flow)

    def warped_flow(self, idx: np.ndarray) -> np.ndarray:
        """Flow with the camera motion removed (``remove_camera_motion``), cached per field."""
        return self._cached(idx, self._warp_cache, lambda i: remove_camera_motion(self.flow(np.array([i]))[0]))

    def _cached(self, idx, cache: dict, compute) -> np.ndarray:
        # fields are kept quantised like the rawframes JPEGs (uint8, +-bound): 1/4 of the float32 memory
        for i in idx:
            i = int(i)
            if i not in cache:
                cache[i] = encode_flow_jpeg(compute(i), self.bound)
        return decode_flow_jpeg(np.stack([cache[int(i)] for i in idx]), self.bound)

    def _dis_flow(self, i: int) -> np.ndarray:
        if self._dis is None:
            self._gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in self.frames]
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        return self._dis.calc(self._gray[i], self._gray[i + 1], None)


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
                 seed: int = 0, flow_bound: float = 20.0, cache_mb: float = 1024):
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
