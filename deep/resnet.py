"""ResNet-10/18/34/50 backbones (He et al. 2016) in 2-D and 3-D, driven by a table of temporal kernel sizes.

C2D, I3D, Slow and the SlowFast Fast pathway are the same 3-D ResNet with different temporal kernels
(``_TEMPORAL_KERNELS``, after Feichtenhofer et al. 2019 and Wang et al. 2018); the 2-D ResNet has the same
module names, so a 2-D state dict inflates into any of them (``inflate_state_dict``).

Data flow (3-D, input (N, C, T, H, W), width w, expansion e = 1 (basic) or 4 (bottleneck))::

    stem: conv kt0 x 7 x 7 /(ts,2,2) -> BN -> ReLU -> maxpool 1x3x3 /(1,2,2)  -> (N, w,     T', H/4,  W/4)
    res2: blocks, stride 1                                                  -> (N, w e,   T', H/4,  W/4)
    res3: first block stride 2                                              -> (N, 2w e,  T', H/8,  W/8)
    res4:                                                                   -> (N, 4w e,  T', H/16, W/16)
    res5:                                                                   -> (N, 8w e,  T', H/32, W/32)

with T' = T/ts; C2D and I3D also pool time by 2 in the stem pool (3x3x3) and after res2 (3x1x1): T' = T/(4 ts).
The 2-D form is the same without the time axis (parameter names match: the pools have none).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from idtfv.errors import ParameterError

from .blocks import BasicBlock, Bottleneck, Conv3dTP

__all__ = ["ResNet", "build_resnet", "inflate_state_dict", "DEPTHS", "TEMPORAL_KERNELS"]

#: depth -> (block class, blocks per stage res2..res5)
DEPTHS = {
    10: (BasicBlock, (1, 1, 1, 1)),
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}

#: name -> (stem temporal kernel, per-stage temporal kernels cycled over the blocks of res2..res5, temporal
#: pooling). c2d: no temporal conv. i3d: 5x7x7 stem and 3x1x1 in every other block. Both pool time by 2 after
#: the stem (3x3x3 max pool) and after res2 (3x1x1 max pool), T -> T/4 (Wang et al. 2018, Table 1).
#: slow / fast: the SlowFast pathways, no temporal pooling (Feichtenhofer et al. 2019, Table 1).
TEMPORAL_KERNELS = {
    "c2d": (1, ((1,), (1,), (1,), (1,)), True),
    "i3d": (5, ((3,), (3, 1), (3, 1), (1, 3)), True),
    "slow": (1, ((1,), (1,), (3,), (3,)), False),
    "fast": (5, ((3,), (3,), (3,), (3,)), False),
}


class ResNet(nn.Module):
    """A stem and four stages; ``forward`` returns the res5 feature map, ``out_channels`` its channel count.

    Takes built submodules only (see ``build_resnet``). ``stage_outputs`` gives every stage's output (used by
    SlowFast's lateral connections).
    """

    def __init__(self, stem: nn.Module, stages: list[nn.Module], out_channels: int):
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


def build_resnet(*, dim: int = 2, depth: int = 18, width: int = 64, in_channels: int = 3,
                 temporal: str = "c2d", stem_t_stride: int = 1,
                 pre_op: Callable[[int], nn.Module] | None = None,
                 mid_op: Callable[[int], nn.Module] | None = None,
                 stage_in_extra: tuple[int, int, int, int] = (0, 0, 0, 0)) -> ResNet:
    """Build a 2-D (``dim=2``) or 3-D (``dim=3``) ResNet.

    Parameters
    ----------
    depth : 10, 18, 34 or 50.
    width : channels of the stem (64 in the paper); stage widths are ``w, 2w, 4w, 8w`` (x4 for depth 50).
    in_channels : 3 for RGB, 2L for a TSN flow stack, 2 for a 3-D flow clip.
    temporal : a key of ``TEMPORAL_KERNELS`` (3-D only).
    stem_t_stride : temporal stride of the stem conv (3-D only).
    pre_op, mid_op : ``channels -> module`` factories for an operator inside every block's residual branch
        (before / after the first conv): temporal shift, TAM.
    stage_in_extra : extra input channels of res2..res5 (SlowFast's slow pathway receives the lateral
        connections concatenated to its input).
    """
    if depth not in DEPTHS:
        raise ParameterError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {depth}; pick a listed depth")
    if dim not in (2, 3):
        raise ParameterError(f"dim must be 2 or 3, got {dim}")
    if temporal not in TEMPORAL_KERNELS:
        raise ParameterError(f"temporal kernels must be one of {sorted(TEMPORAL_KERNELS)}, got {temporal!r}")
    if width < 1:
        raise ParameterError(f"width must be >= 1, got {width}")
    block, counts = DEPTHS[depth]
    stem_kt, stage_kts, t_pool = TEMPORAL_KERNELS[temporal]
    t_pool = t_pool and dim == 3
    if dim == 2:
        stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
    else:
        stem = nn.Sequential(
            Conv3dTP(in_channels, width, (stem_kt, 7, 7), stride=(stem_t_stride, 2, 2),
                     padding=(stem_kt // 2, 3, 3)),
            nn.BatchNorm3d(width), nn.ReLU(inplace=True),
            nn.MaxPool3d((3, 3, 3), stride=(2, 2, 2), padding=(1, 1, 1)) if t_pool else
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
    stages = []
    c_in = width
    for i, n_blocks in enumerate(counts):
        channels = width * 2 ** i
        blocks = []
        for j in range(n_blocks):
            kt = stage_kts[i][j % len(stage_kts[i])] if dim == 3 else 1
            extra = stage_in_extra[i] if j == 0 else 0
            blocks.append(block(dim, c_in + extra, channels, stride=2 if (i > 0 and j == 0) else 1, kt=kt,
                                pre=pre_op(c_in + extra) if pre_op else None,
                                mid=mid_op(channels) if mid_op else None))
            c_in = channels * block.expansion
        if t_pool and i == 0:
            blocks.append(nn.MaxPool3d((3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0)))  # pool2: T/2
        stages.append(nn.Sequential(*blocks))
    return ResNet(stem, stages, c_in)


def inflate_state_dict(state_2d: dict[str, torch.Tensor], model_3d: nn.Module) -> dict[str, torch.Tensor]:
    """Inflate a 2-D state dict into ``model_3d``'s (I3D, Carreira & Zisserman 2017).

    Every 2-D conv kernel ``W (O, I, kh, kw)`` becomes ``W' (O, I, kt, kh, kw)`` with
    ``W'[:, :, t] = W / kt`` for all ``t`` (repeat over time, divide by the temporal size), so a clip of one
    repeated image gives the same activations as the 2-D net on the image. Other tensors (BN, FC) are copied.
    Keys of ``model_3d`` absent from ``state_2d`` keep their initial values.

    Raises ``ParameterError`` if a shared key has shapes that cannot be inflated.
    """
    out = {}
    for key, target in model_3d.state_dict().items():
        if key not in state_2d:
            out[key] = target
            continue
        src = state_2d[key]
        if target.dim() == src.dim() + 1 and target.dim() == 5 and tuple(target.shape[:2]) + tuple(
                target.shape[3:]) == tuple(src.shape):
            kt = target.shape[2]
            out[key] = src.unsqueeze(2).repeat(1, 1, kt, 1, 1) / kt
        elif target.shape == src.shape:
            out[key] = src.clone()
        else:
            raise ParameterError(
                f"cannot inflate {key!r}: 2-D shape {tuple(src.shape)} does not match 3-D shape "
                f"{tuple(target.shape)}; build both nets with the same depth, width and input channels")
    return out
