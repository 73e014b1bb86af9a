"""Model families and the ``MODELS`` dict of builders.

Every model maps a clip tensor ``x (N, C, T, H, W)`` to class scores ``(N, num_classes)`` and has
``features(x) -> (N, D)`` (penultimate features). What C and T mean depends on the sampler the model uses
(``ModelSpec.sampler``):

- ``"segments"`` (TSN-style: spatial, temporal, tsn, tsm, tam): T = K segments, one snippet each; a snippet of
  L frames is stacked into channels, C = 3 (RGB, L = 1), 3L (RGB difference), 2L (flow x1, y1, ..., xL, yL).
- ``"clip"`` (everything else): T consecutive frames (every ``stride``-th), C = 3 (RGB or RGB difference) or
  2 (flow x, y).

``ModelSpec`` records the standard input (T, H x W, stride) used by the benchmark and as the CLI default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from idtfv.errors import ParameterError

from .c3d import build_c3d
from .frame2d import build_spatial, build_temporal, build_tsn, build_two_stream
from .i3d import build_i3d, build_nonlocal
from .karpathy import build_early_fusion, build_late_fusion, build_single_frame, build_slow_fusion
from .lstm import build_cnn_lstm
from .slowfast import build_slowfast
from .tam import build_tam
from .tsm import build_tsm

__all__ = ["MODELS", "ModelSpec", "build_model"]


@dataclass(frozen=True)
class ModelSpec:
    """A builder and its standard input.

    builder : ``f(*, num_classes, in_channels, width, [depth], [num_segments | num_frames]) -> nn.Module``.
    sampler : ``"segments"`` or ``"clip"`` (see module docstring).
    frames : K segments or T clip frames. stride : frame step inside a clip. size : crop side (H = W).
    width : default base width. has_depth : the builder takes ``depth`` (ResNet backbones).
    time_arg : name of the builder argument fixing the frame count (None if any count works).
    """

    builder: Callable[..., nn.Module]
    sampler: str
    frames: int
    stride: int
    size: int
    width: int
    has_depth: bool
    time_arg: str | None = None


MODELS: dict[str, ModelSpec] = {
    "single_frame": ModelSpec(build_single_frame, "clip", 1, 1, 170, 96, False),
    "late_fusion": ModelSpec(build_late_fusion, "clip", 2, 15, 170, 96, False),
    "early_fusion": ModelSpec(build_early_fusion, "clip", 10, 1, 170, 96, False, "num_frames"),
    "slow_fusion": ModelSpec(build_slow_fusion, "clip", 10, 1, 170, 96, False),
    "spatial": ModelSpec(build_spatial, "segments", 1, 1, 224, 64, True),
    "temporal": ModelSpec(build_temporal, "segments", 1, 1, 224, 64, True),
    "tsn": ModelSpec(build_tsn, "segments", 3, 1, 224, 64, True),
    "c3d": ModelSpec(build_c3d, "clip", 16, 1, 112, 64, False),
    "i3d": ModelSpec(build_i3d, "clip", 32, 2, 224, 64, True),
    "nonlocal": ModelSpec(build_nonlocal, "clip", 32, 2, 224, 64, True),
    "slowfast": ModelSpec(build_slowfast, "clip", 32, 2, 224, 64, True),
    "tsm": ModelSpec(build_tsm, "segments", 8, 1, 224, 64, True, "num_segments"),
    "tam": ModelSpec(build_tam, "segments", 8, 1, 224, 64, True, "num_segments"),
    "cnn_lstm": ModelSpec(build_cnn_lstm, "clip", 16, 1, 224, 64, True),
}

#: Not trainable by ``train-deep`` (two inputs): train ``spatial`` and ``temporal`` and fuse their scores.
TWO_STREAM = build_two_stream


def build_model(name: str, *, num_classes: int, in_channels: int, width: int | None = None,
                depth: int | None = None, frames: int | None = None) -> nn.Module:
    """Build ``MODELS[name]``; ``None`` options take the spec's defaults (depth 18)."""
    if name not in MODELS:
        raise ParameterError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    spec = MODELS[name]
    kwargs = dict(num_classes=num_classes, in_channels=in_channels, width=width or spec.width)
    if spec.has_depth:
        kwargs["depth"] = depth or (50 if name == "slowfast" else 18)
    elif depth is not None:
        raise ParameterError(f"model {name!r} has no depth option (only ResNet backbones do); drop --depth")
    if spec.time_arg:
        kwargs[spec.time_arg] = frames or spec.frames
    return spec.builder(**kwargs)
