"""SlowFast (Feichtenhofer et al. 2019, "SlowFast networks for video recognition").

Two 3-D ResNet pathways on one clip of T frames (standard 32 x 224 x 224, the 4 x 16 model)::

    slow: x[:, :, ::alpha]    (N, C, T/alpha, H, W), width w,        TEMPORAL_KERNELS["slow"]
    fast: x                   (N, C, T,       H, W), width beta w,   TEMPORAL_KERNELS["fast"]

After the stem, res2, res3 and res4 a lateral connection maps the fast features to the slow ones with a
time-strided convolution: kernel 5 x 1 x 1, stride alpha in time, 2 beta C output channels (C = slow channels),
BN, ReLU; its output (N, 2 beta C, T/alpha, ...) is concatenated to the slow features. Both pathways are
globally pooled and concatenated: ``features`` -> (N, D_slow + D_fast). alpha = 8, beta = 1/8 by default.
"""

from __future__ import annotations

import torch
from torch import nn

from idtfv.errors import ParameterError

from ..blocks import ClipModel
from ..resnet import DEPTHS, ResNet, build_resnet

__all__ = ["SlowFast", "build_slowfast"]


class SlowFast(ClipModel):
    """Slow and Fast pathways with lateral fast -> slow fusion (see module docstring)."""

    def __init__(self, slow: ResNet, fast: ResNet, laterals: list[nn.Module], alpha: int, num_classes: int, *,
                 dropout: float = 0.5):
        super().__init__()
        self.slow = slow
        self.fast = fast
        self.laterals = nn.ModuleList(laterals)
        self.alpha = alpha
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(slow.out_channels + fast.out_channels, num_classes)

    def pathway_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(slow, fast) inputs: every alpha-th frame and all frames of x (N, C, T, H, W)."""
        if x.shape[2] % self.alpha:
            raise ParameterError(f"SlowFast needs a frame count divisible by alpha={self.alpha}, got "
                                 f"{x.shape[2]}; sample T = k * alpha frames")
        return x[:, :, ::self.alpha], x

    def pathway_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (slow, fast) feature maps: (N, D_s, T/alpha, h, w) and (N, D_f, T, h, w)."""
        s, f = self.pathway_inputs(x)
        s, f = self.slow.stem(s), self.fast.stem(f)
        for i in range(4):
            s = torch.cat([s, self.laterals[i](f)], dim=1)  # fuse fast -> slow before res(i+2)
            s, f = self.slow.stages[i](s), self.fast.stages[i](f)
        return s, f

    def features(self, x: torch.Tensor) -> torch.Tensor:
        s, f = self.pathway_features(x)
        return torch.cat([s.mean(dim=(2, 3, 4)), f.mean(dim=(2, 3, 4))], dim=1)


def _lateral(c_fast: int, alpha: int) -> nn.Module:
    return nn.Sequential(nn.Conv3d(c_fast, 2 * c_fast, (5, 1, 1), stride=(alpha, 1, 1), padding=(2, 0, 0),
                                   bias=False),
                         nn.BatchNorm3d(2 * c_fast), nn.ReLU(inplace=True))


def build_slowfast(*, num_classes: int, in_channels: int = 3, depth: int = 50, width: int = 64, alpha: int = 8,
                   beta_inv: int = 8, dropout: float = 0.5) -> SlowFast:
    """SlowFast-R{depth}; fast width = width / beta_inv. Input (N, C, T, H, W) with T divisible by alpha."""
    if alpha < 1 or beta_inv < 1 or width % beta_inv:
        raise ParameterError(f"need alpha >= 1, beta_inv >= 1 and width divisible by beta_inv; got alpha={alpha}, "
                             f"beta_inv={beta_inv}, width={width}")
    fw = width // beta_inv
    e = DEPTHS[depth][0].expansion if depth in DEPTHS else 1
    fast_channels = [fw, fw * e, 2 * fw * e, 4 * fw * e]  # after stem, res2, res3, res4
    fast = build_resnet(dim=3, depth=depth, width=fw, in_channels=in_channels, temporal="fast")
    slow = build_resnet(dim=3, depth=depth, width=width, in_channels=in_channels, temporal="slow",
                        stage_in_extra=tuple(2 * c for c in fast_channels))
    return SlowFast(slow, fast, [_lateral(c, alpha) for c in fast_channels], alpha, num_classes, dropout=dropout)
