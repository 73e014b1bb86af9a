"""Small shared layers: N-d convolutions, ResNet residual blocks, the classifier base class.

One block class serves 2-D (``dim=2``, frames) and 3-D (``dim=3``, clips) networks so that a 2-D ResNet and
its inflated 3-D form have the same parameter names (``idtfv.deep.resnet.inflate_state_dict`` relies on it).

3-D convolutions pad **time by replicating the edge frame** (space is zero-padded as in 2-D). With this
padding a clip whose frames are all equal stays constant along time through every layer, which makes the
I3D "boring video" fixed point exact (Carreira & Zisserman 2017, sec. 2.4) instead of true only away from the
clip ends.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Conv3dTP",
    "conv_nd",
    "bn_nd",
    "BasicBlock",
    "Bottleneck",
    "ClipModel",
    "frames_to_batch",
    "batch_to_frames",
]


class Conv3dTP(nn.Conv3d):
    """``nn.Conv3d`` whose temporal padding replicates the edge frames (spatial padding stays zero).

    Parameters are those of ``nn.Conv3d``; ``padding=(pt, ph, pw)`` is split into a replicate pad of ``pt``
    frames on each side of time and a zero pad of ``(ph, pw)`` in space.
    """

    def __init__(self, in_channels, out_channels, kernel_size, *, stride=1, padding=0, bias=False, groups=1):
        kt, kh, kw = _triple(kernel_size)
        pt, ph, pw = _triple(padding)
        super().__init__(in_channels, out_channels, (kt, kh, kw), stride=stride, padding=(0, ph, pw),
                         bias=bias, groups=groups)
        self.temporal_pad = pt

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, T, H, W)
        if self.temporal_pad:
            x = F.pad(x, (0, 0, 0, 0, self.temporal_pad, self.temporal_pad), mode="replicate")
        return super().forward(x)


def _triple(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)


def conv_nd(dim: int, in_channels: int, out_channels: int, *, kt: int = 1, k: int = 3, stride: int = 1,
            t_stride: int = 1) -> nn.Module:
    """A bias-free convolution with "same" padding: ``k x k`` in 2-D, ``kt x k x k`` in 3-D.

    ``stride`` is the spatial stride, ``t_stride`` the temporal one (3-D only).
    """
    if dim == 2:
        return nn.Conv2d(in_channels, out_channels, k, stride=stride, padding=k // 2, bias=False)
    return Conv3dTP(in_channels, out_channels, (kt, k, k), stride=(t_stride, stride, stride),
                    padding=(kt // 2, k // 2, k // 2))


def bn_nd(dim: int, channels: int, *, zero_init: bool = False) -> nn.Module:
    """Batch norm for ``dim``-d maps; ``zero_init`` sets gamma to 0 (the branch starts as the zero map)."""
    bn = nn.BatchNorm2d(channels) if dim == 2 else nn.BatchNorm3d(channels)
    if zero_init:
        nn.init.zeros_(bn.weight)
    return bn


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016): ``x + BN(conv(ReLU(BN(conv(pre(x))))))``, then ReLU.

    3-D form: the first conv is ``kt x 3 x 3``, the second ``1 x 3 x 3``. ``pre`` (e.g. a temporal shift, Lin
    et al. 2019) is applied inside the residual branch before the first conv, ``mid`` (e.g. TAM, Liu et al.
    2021) after it; ``post`` (a non-local block, Wang et al. 2018) after the block's output ReLU; all default to
    identity. Shapes: (N, C_in, [T,] H, W) -> (N, C_out, [T,] H/s, W/s).
    """

    expansion = 1

    def __init__(self, dim: int, in_channels: int, channels: int, *, stride: int = 1, kt: int = 1,
                 pre: nn.Module | None = None, mid: nn.Module | None = None):
        super().__init__()
        out = channels * self.expansion
        self.out_channels = out
        self.pre = pre if pre is not None else nn.Identity()
        self.post = nn.Identity()
        self.conv1 = conv_nd(dim, in_channels, channels, kt=kt, stride=stride)
        self.bn1 = bn_nd(dim, channels)
        self.mid = mid if mid is not None else nn.Identity()
        self.conv2 = conv_nd(dim, channels, out)
        self.bn2 = bn_nd(dim, out)
        self.shortcut = _shortcut(dim, in_channels, out, stride)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(self.pre(x))))
        y = self.bn2(self.conv2(self.mid(y)))
        return self.post(F.relu(y + self.shortcut(x)))


class Bottleneck(nn.Module):
    """ResNet bottleneck block: 1x1 (kt x 1 x 1 in 3-D, Wang et al. 2018) -> 3x3 (stride) -> 1x1 (x4 channels).

    ``pre`` runs before the first conv inside the residual branch, ``mid`` after the first conv (where TANet
    puts TAM), ``post`` after the output ReLU. Shapes: (N, C_in, [T,] H, W) -> (N, 4 C, [T,] H/s, W/s).
    """

    expansion = 4

    def __init__(self, dim: int, in_channels: int, channels: int, *, stride: int = 1, kt: int = 1,
                 pre: nn.Module | None = None, mid: nn.Module | None = None):
        super().__init__()
        out = channels * self.expansion
        self.out_channels = out
        self.pre = pre if pre is not None else nn.Identity()
        self.post = nn.Identity()
        self.conv1 = conv_nd(dim, in_channels, channels, kt=kt, k=1)
        self.bn1 = bn_nd(dim, channels)
        self.mid = mid if mid is not None else nn.Identity()
        self.conv2 = conv_nd(dim, channels, channels, stride=stride)
        self.bn2 = bn_nd(dim, channels)
        self.conv3 = conv_nd(dim, channels, out, k=1)
        self.bn3 = bn_nd(dim, out)
        self.shortcut = _shortcut(dim, in_channels, out, stride)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(self.pre(x))))
        y = F.relu(self.bn2(self.conv2(self.mid(y))))
        y = self.bn3(self.conv3(y))
        return self.post(F.relu(y + self.shortcut(x)))


def _shortcut(dim: int, in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(conv_nd(dim, in_channels, out_channels, k=1, stride=stride), bn_nd(dim, out_channels))


def frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    """(N, C, T, H, W) -> (N*T, C, H, W), frame-major within each clip."""
    n, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(n * t, c, h, w)


def batch_to_frames(y: torch.Tensor, t: int) -> torch.Tensor:
    """(N*T, ...) -> (N, T, ...)."""
    return y.reshape(-1, t, *y.shape[1:])


class ClipModel(nn.Module):
    """Base of every classifier here: ``forward(x) = fc(dropout(features(x)))``.

    Subclasses implement ``features(x: (N, C, T, H, W)) -> (N, D)`` (the penultimate features written to
    ``features.npz``) and set ``self.fc = nn.Linear(D, num_classes)`` and ``self.dropout``.
    """

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))
