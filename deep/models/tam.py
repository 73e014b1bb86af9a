"""Temporal Adaptive Module (Liu et al. 2021, "TAM: temporal adaptive module for video recognition", TANet).

On X (N K, C, H, W) (K = T frames in the batch), with the spatially pooled X^ (N, C, T)::

    local  L: Conv1d_k3(C -> C/beta) -> BN -> ReLU -> Conv1d_k3(C/beta -> C) -> sigmoid   V (N, C, T)
              (location-sensitive importance map)
    global G: per channel, FC(T -> alpha T) -> BN -> ReLU -> FC(alpha T -> K_t) -> softmax  Theta (N, C, K_t)
              (a location-invariant temporal kernel, sums to one)
    Y = Theta (*) (X . V)       depth-wise temporal convolution of the re-weighted features, zero padding

TAM sits in every block's residual branch after the first conv (TANet); the net is a TSN-style 2-D ResNet
with average consensus. Standard input 8 x 224 x 224. alpha = 2, beta = 4, K_t = 3 as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from idtfv.errors import ParameterError

from .frame2d import FrameResNet
from ..resnet import build_resnet

__all__ = ["TAM", "build_tam"]


class TAM(nn.Module):
    """Temporal adaptive module over ``num_segments`` frames; input and output (N K, C, H, W)."""

    def __init__(self, channels: int, num_segments: int, *, alpha: int = 2, beta: int = 4, kernel_size: int = 3):
        super().__init__()
        self.num_segments = num_segments
        self.kernel_size = kernel_size
        t = num_segments
        self.glob = nn.Sequential(nn.Linear(t, alpha * t, bias=False), nn.BatchNorm1d(alpha * t),
                                  nn.ReLU(inplace=True), nn.Linear(alpha * t, kernel_size, bias=False))
        mid = max(1, channels // beta)
        self.local = nn.Sequential(nn.Conv1d(channels, mid, 3, padding=1, bias=False), nn.BatchNorm1d(mid),
                                   nn.ReLU(inplace=True), nn.Conv1d(mid, channels, 3, padding=1, bias=False),
                                   nn.Sigmoid())

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        nt, c = x.shape[:2]
        if nt % self.num_segments:
            raise ParameterError(f"TAM: batch of {nt} frames is not a multiple of num_segments="
                                 f"{self.num_segments}; feed clips of exactly {self.num_segments} frames")
        return x.mean(dim=(2, 3)).reshape(-1, self.num_segments, c).transpose(1, 2)  # (N, C, T)

    def global_kernels(self, x: torch.Tensor) -> torch.Tensor:
        """Theta (N, C, K_t): one softmax-normalised temporal kernel per sample and channel."""
        pooled = self._pooled(x)
        n, c, t = pooled.shape
        return torch.softmax(self.glob(pooled.reshape(n * c, t)), dim=-1).reshape(n, c, self.kernel_size)

    def importance(self, x: torch.Tensor) -> torch.Tensor:
        """V (N, C, T) in (0, 1)."""
        return self.local(self._pooled(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nt, c, h, w = x.shape
        t = self.num_segments
        n = nt // t
        theta = self.global_kernels(x)                                   # (N, C, K_t)
        v = self.importance(x)                                           # (N, C, T)
        y = x.reshape(n, t, c, h * w).permute(0, 2, 1, 3) * v[..., None]  # (N, C, T, HW)
        y = F.conv2d(y.reshape(1, n * c, t, h * w), theta.reshape(n * c, 1, self.kernel_size, 1),
                     padding=(self.kernel_size // 2, 0), groups=n * c)    # (1, N C, T, HW)
        return y.reshape(n, c, t, h, w).permute(0, 2, 1, 3, 4).reshape(nt, c, h, w)


def build_tam(*, num_classes: int, in_channels: int = 3, num_segments: int = 8, depth: int = 18,
              width: int = 64, dropout: float = 0.5) -> FrameResNet:
    """TANet-ResNet: input (N, C, K, H, W) with K = num_segments."""
    backbone = build_resnet(dim=2, depth=depth, width=width, in_channels=in_channels,
                            mid_op=lambda c: TAM(c, num_segments))
    return FrameResNet(backbone, num_classes, dropout=dropout)
