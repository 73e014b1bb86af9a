"""Temporal Shift Module (Lin et al. 2019, "TSM: temporal shift module for efficient video understanding").

On features of K frames stacked in the batch, x (N K, C, H, W), with fold = C // fold_div (fold_div = 8)::

    out[n, t, 0:fold]        = x[n, t + 1, 0:fold]          (shift backward in time; 0 at t = K-1)
    out[n, t, fold:2 fold]   = x[n, t - 1, fold:2 fold]      (shift forward in time;  0 at t = 0)
    out[n, t, 2 fold:]       = x[n, t, 2 fold:]              (unchanged)

Residual placement: the shift runs inside each block's residual branch before its first conv, so the identity
path keeps the unshifted features: ``y = x + F(shift(x))``. The network is a TSN-style 2-D ResNet (average
consensus over the K frames); standard input 8 x 224 x 224.
"""

from __future__ import annotations

import torch
from torch import nn

from idtfv.errors import ParameterError

from .frame2d import FrameResNet
from ..resnet import build_resnet

__all__ = ["temporal_shift", "TemporalShift", "build_tsm"]


def temporal_shift(x: torch.Tensor, num_segments: int, *, fold_div: int = 8) -> torch.Tensor:
    """Shift 1/fold_div of the channels backward and 1/fold_div forward in time; x (N K, C, H, W), K = num_segments."""
    nt, c = x.shape[:2]
    if nt % num_segments:
        raise ParameterError(f"temporal shift: batch of {nt} frames is not a multiple of num_segments="
                             f"{num_segments}; feed clips of exactly {num_segments} frames")
    x = x.reshape(nt // num_segments, num_segments, c, *x.shape[2:])  # (N, K, C, H, W)
    fold = c // fold_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]
    out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
    return out.reshape(nt, c, *x.shape[3:])


class TemporalShift(nn.Module):
    """``temporal_shift`` as a module (no parameters)."""

    def __init__(self, num_segments: int, *, fold_div: int = 8):
        super().__init__()
        self.num_segments = num_segments
        self.fold_div = fold_div

    def forward(self, x):
        return temporal_shift(x, self.num_segments, fold_div=self.fold_div)


def build_tsm(*, num_classes: int, in_channels: int = 3, num_segments: int = 8, depth: int = 18,
              width: int = 64, dropout: float = 0.5) -> FrameResNet:
    """TSM-ResNet: input (N, C, K, H, W) with K = num_segments."""
    backbone = build_resnet(dim=2, depth=depth, width=width, in_channels=in_channels,
                            pre_op=lambda c: TemporalShift(num_segments))
    return FrameResNet(backbone, num_classes, dropout=dropout)
