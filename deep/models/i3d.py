"""I3D (Carreira & Zisserman 2017) on an inflated ResNet, and its Non-local variant (Wang et al. 2018).

I3D here is the ResNet form used by Wang et al. (2018): the 2-D ResNet with a 5 x 7 x 7 stem and 3 x 1 x 1
kernels in every other block (``idtfv.deep.resnet.TEMPORAL_KERNELS["i3d"]``), initialisable from a 2-D net by
inflation (weights repeated over time, divided by the temporal size: ``inflate_from_2d``)::

    x (N, C, T, H, W) -> 3-D ResNet -> (N, D, T/4, H/32, W/32) -> mean over (T, H, W) -> (N, D) -> fc

Non-local blocks (embedded Gaussian, Wang et al. 2018, eq. 1-3)::

    theta, phi, g = 1x1x1 convs C -> C/2 (phi and g on a 1x2x2 max-pooled map: the subsampling trick)
    f   = softmax_j(theta_i . phi_j)                           (N, THW, THW/4)
    y_i = sum_j f_ij g_j                                       (N, C/2, T, H, W)
    z   = BN(W_z y) + x,  BN gamma initialised to 0           -> identity at initialisation

are inserted after every other block of res3 and res4 (after the only block when a stage has one).
Standard input 32 x 224 x 224 (T x H x W).
"""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import ClipModel
from ..resnet import ResNet, build_resnet, inflate_state_dict

__all__ = ["NonLocal", "I3D", "build_i3d", "build_nonlocal", "inflate_from_2d"]


class NonLocal(nn.Module):
    """Embedded-Gaussian non-local block with a half-channel bottleneck; the identity at initialisation.

    Input and output (N, C, T, H, W) (``dim=3``) or (N, C, H, W) (``dim=2``).
    """

    def __init__(self, channels: int, *, dim: int = 3, inner: int | None = None, subsample: bool = True):
        super().__init__()
        inner = inner or max(1, channels // 2)
        conv = nn.Conv3d if dim == 3 else nn.Conv2d
        self.theta = conv(channels, inner, 1)
        self.phi = conv(channels, inner, 1)
        self.g = conv(channels, inner, 1)
        pool = (nn.MaxPool3d((1, 2, 2), ceil_mode=True) if dim == 3 else nn.MaxPool2d(2, ceil_mode=True))
        self.pool = pool if subsample else nn.Identity()
        self.w_z = conv(inner, channels, 1)
        self.bn = nn.BatchNorm3d(channels) if dim == 3 else nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)  # z = x at initialisation (Wang et al. 2018, sec. 4.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        theta = self.theta(x).flatten(2)                       # (N, C', P)
        phi = self.pool(self.phi(x)).flatten(2)                # (N, C', P')
        g = self.pool(self.g(x)).flatten(2)                    # (N, C', P')
        f = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # (N, P, P')
        y = (f @ g.transpose(1, 2)).transpose(1, 2)            # (N, C', P)
        y = y.reshape(n, -1, *x.shape[2:])                     # (N, C', T, H, W)
        return x + self.bn(self.w_z(y))


class I3D(ClipModel):
    """A 3-D ResNet clip classifier: pooled res5 features (N, D) -> fc."""

    def __init__(self, backbone: ResNet, num_classes: int, *, dropout: float = 0.5):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(backbone.out_channels, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).mean(dim=(2, 3, 4))


def build_i3d(*, num_classes: int, in_channels: int = 3, depth: int = 18, width: int = 64,
              temporal: str = "i3d", dropout: float = 0.5) -> I3D:
    """I3D-ResNet; ``temporal="c2d"`` gives C2D, ``"slow"`` the Slow-only net. Input (N, C, T, H, W)."""
    return I3D(build_resnet(dim=3, depth=depth, width=width, in_channels=in_channels, temporal=temporal),
               num_classes, dropout=dropout)


def build_nonlocal(*, num_classes: int, in_channels: int = 3, depth: int = 18, width: int = 64,
                   dropout: float = 0.5) -> I3D:
    """I3D-ResNet with non-local blocks after every other block of res3 and res4."""
    model = build_i3d(num_classes=num_classes, in_channels=in_channels, depth=depth, width=width,
                      dropout=dropout)
    for stage in (model.backbone.stages[1], model.backbone.stages[2]):
        for j, block in enumerate(stage):
            if j % 2 == 1 or len(stage) == 1:
                block.post = NonLocal(block.out_channels)  # after the block: keeps the 2-D parameter names
    return model


def inflate_from_2d(model_2d: nn.Module, model_3d: I3D) -> I3D:
    """Load ``model_2d``'s weights (a ``FrameResNet`` of the same depth, width and input channels) into the
    I3D ``model_3d`` by inflation; returns ``model_3d``."""
    model_3d.load_state_dict(inflate_state_dict(model_2d.state_dict(), model_3d))
    return model_3d
