"""C3D (Tran et al. 2015, "Learning spatiotemporal features with 3D convolutional networks").

Eight 3 x 3 x 3 convolutions (stride 1, "same" padding), five max-pools, two FC layers::

    x (N, C, 16, 112, 112)
    conv1a 64  -> pool1 1x2x2  -> (N, 64,   16, 56, 56)
    conv2a 128 -> pool2 2x2x2  -> (N, 128,  8,  28, 28)
    conv3a,b 256 -> pool3      -> (N, 256,  4,  14, 14)
    conv4a,b 512 -> pool4      -> (N, 512,  2,  7,  7)
    conv5a,b 512 -> pool5      -> (N, 512,  1,  4,  4)
    global average -> fc6 4096 -> fc7 4096 -> fc

Channel counts scale with ``width / 64``. Deviation: the paper flattens the 1x4x4 pool5 map into fc6; here
pool5 is averaged globally so short or small clips work too. Batch norm is optional (the paper has none).
"""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import ClipModel

__all__ = ["C3D", "build_c3d"]

# (number of convs, channel multiple of width, pooling kernel) per block
_C3D_BLOCKS = ((1, 1, (1, 2, 2)), (1, 2, (2, 2, 2)), (2, 4, (2, 2, 2)), (2, 8, (2, 2, 2)), (2, 8, (2, 2, 2)))


class C3D(ClipModel):
    """C3D; ``features`` returns fc7 activations (N, fc_dim)."""

    def __init__(self, convs: nn.Module, c5: int, fc_dim: int, num_classes: int, *, dropout: float = 0.5):
        super().__init__()
        self.convs = convs
        self.fc67 = nn.Sequential(nn.Linear(c5, fc_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                  nn.Linear(fc_dim, fc_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(fc_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc67(self.convs(x).mean(dim=(2, 3, 4)))


def build_c3d(*, num_classes: int, in_channels: int = 3, width: int = 64, batch_norm: bool = False,
              dropout: float = 0.5) -> C3D:
    """C3D; input (N, C, 16, 112, 112) standard."""
    layers = []
    cin = in_channels
    for n_convs, mult, pool in _C3D_BLOCKS:
        for _ in range(n_convs):
            cout = width * mult
            layers.append(nn.Conv3d(cin, cout, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm3d(cout))
            layers.append(nn.ReLU(inplace=True))
            cin = cout
        layers.append(nn.MaxPool3d(pool, stride=pool, ceil_mode=True))
    return C3D(nn.Sequential(*layers), cin, width * 64, num_classes, dropout=dropout)
