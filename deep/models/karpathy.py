"""Single-frame, late-, early- and slow-fusion networks (Karpathy et al. 2014, "Large-scale video
classification with convolutional neural networks", sec. 3.1).

The conv tower is the paper's ``C(96,11,3)-N-P-C(256,5,1)-N-P-C(384,3,1)-C(384,3,1)-C(256,3,1)-P-FC(4096)-FC(4096)``
(C(d, f, s): d filters of f x f at stride s; N: local response normalisation; P: 2x2 max pooling), with all
channel counts scaled by ``width / 96``. The fusions differ only in the temporal extent ``kt`` and stride ``ts`` of
the first three convolutions (``_FUSIONS``)::

    single : every layer sees one frame; per-frame features are averaged over T          (T = 1 standard)
    late   : two frames 15 apart through a shared tower, concatenated before FC6         (T = 2)
    early  : conv1 spans all T = 10 frames                                               (T = 10)
    slow   : conv1 4 frames /2, conv2 2 /2, conv3 2 /2: 10 -> 4 -> 2 -> 1 time steps     (T = 10)

Input (N, 3, T, H, W), standard spatial size 170 x 170 (the context stream; the fovea stream of the
multiresolution net is not built). Deviation from the paper: the last pooling is followed by a global
spatial average so any input size works (the paper flattens a 6 x 6 map).
"""

from __future__ import annotations

import torch
from torch import nn

from idtfv.errors import ParameterError

from ..blocks import ClipModel

__all__ = ["KarpathyNet", "build_single_frame", "build_late_fusion", "build_early_fusion", "build_slow_fusion"]

# fusion -> ((kt, ts) for conv1..conv5, merge of remaining time steps before FC6)
_FUSIONS = {
    "single": (((1, 1),) * 5, "mean"),
    "late": (((1, 1),) * 5, "concat"),
    "early": (None, "mean"),  # conv1 kt = num_frames, filled in by the builder
    "slow": (((4, 2), (2, 2), (2, 2), (1, 1), (1, 1)), "mean"),
}


class KarpathyNet(ClipModel):
    """Conv tower + two FC layers; ``features`` returns FC7 activations (N, fc_dim)."""

    def __init__(self, tower: nn.Module, merge: str, num_frames_merged: int, c5: int, fc_dim: int,
                 num_classes: int, *, dropout: float = 0.5):
        super().__init__()
        self.tower = tower
        self.merge = merge
        self.num_frames_merged = num_frames_merged
        fc_in = c5 * (num_frames_merged if merge == "concat" else 1)
        self.fc67 = nn.Sequential(nn.Linear(fc_in, fc_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                  nn.Linear(fc_dim, fc_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(fc_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        y = self.tower(x).mean(dim=(3, 4))                  # (N, c5, T')
        if self.merge == "concat":
            if y.shape[2] != self.num_frames_merged:
                raise ParameterError(f"late fusion expects {self.num_frames_merged} frames, got {y.shape[2]}")
            y = y.flatten(1)                                # (N, c5 T')
        else:
            y = y.mean(dim=2)                               # (N, c5)
        return self.fc67(y)


def _tower(temporal, width: int, in_channels: int) -> tuple[nn.Sequential, int]:
    c = [width, round(width * 256 / 96), 4 * width, 4 * width, round(width * 256 / 96)]
    spec = [(in_channels, c[0], 11, 3), (c[0], c[1], 5, 1), (c[1], c[2], 3, 1), (c[2], c[3], 3, 1),
            (c[3], c[4], 3, 1)]
    layers = []
    for i, ((cin, cout, f, s), (kt, ts)) in enumerate(zip(spec, temporal)):
        pad = f // 2 if i else 0  # conv1 is unpadded in the paper
        layers += [nn.Conv3d(cin, cout, (kt, f, f), stride=(ts, s, s), padding=(0, pad, pad)), nn.ReLU(inplace=True)]
        if i < 2:
            layers += [nn.LocalResponseNorm(5), nn.MaxPool3d((1, 2, 2), ceil_mode=True)]
        if i == 4:
            layers.append(nn.MaxPool3d((1, 2, 2), ceil_mode=True))
    return nn.Sequential(*layers), c[4]


def _build(fusion: str, *, num_classes: int, in_channels: int, width: int, num_frames: int,
           dropout: float) -> KarpathyNet:
    temporal, merge = _FUSIONS[fusion]
    if fusion == "early":
        temporal = ((num_frames, 1),) + ((1, 1),) * 4
    tower, c5 = _tower(temporal, width, in_channels)
    return KarpathyNet(tower, merge, num_frames, c5, round(4096 * width / 96), num_classes, dropout=dropout)


def build_single_frame(*, num_classes: int, in_channels: int = 3, width: int = 96, dropout: float = 0.5):
    """Single-frame net: input (N, 3, T, 170, 170), T = 1 standard (frames averaged otherwise)."""
    return _build("single", num_classes=num_classes, in_channels=in_channels, width=width, num_frames=1,
                  dropout=dropout)


def build_late_fusion(*, num_classes: int, in_channels: int = 3, width: int = 96, dropout: float = 0.5):
    """Late fusion: input (N, 3, 2, 170, 170), the two frames 15 apart (sampler stride 15)."""
    return _build("late", num_classes=num_classes, in_channels=in_channels, width=width, num_frames=2,
                  dropout=dropout)


def build_early_fusion(*, num_classes: int, in_channels: int = 3, width: int = 96, num_frames: int = 10,
                       dropout: float = 0.5):
    """Early fusion: conv1 spans all ``num_frames`` (10) frames; input (N, 3, 10, 170, 170)."""
    return _build("early", num_classes=num_classes, in_channels=in_channels, width=width,
                  num_frames=num_frames, dropout=dropout)


def build_slow_fusion(*, num_classes: int, in_channels: int = 3, width: int = 96, dropout: float = 0.5):
    """Slow fusion: input (N, 3, 10, 170, 170); time 10 -> 4 -> 2 -> 1 through conv1..conv3."""
    return _build("slow", num_classes=num_classes, in_channels=in_channels, width=width, num_frames=10,
                  dropout=dropout)
