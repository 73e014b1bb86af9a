"""Frame-level 2-D ResNet classifiers: the two-stream nets (Simonyan & Zisserman 2014) and TSN (Wang et al. 2016).

Both run a 2-D ResNet on each of the K temporal positions of the input and average (segmental consensus)::

    x (N, C, K, H, W) -> frames (N K, C, H, W) -> ResNet -> pool -> (N, K, D) -> mean over K -> (N, D) -> fc

C is 3 for an RGB frame, 3L for an RGB-difference stack, 2L for a flow stack of L x/y pairs (x1, y1, x2, ...).
Because ``fc`` is linear, ``fc(mean_k f_k) = mean_k fc(f_k)``: the output equals the average of the snippet
scores, TSN's average consensus. With K = 1 this is the single-snippet spatial or temporal stream of the
two-stream network.
"""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import ClipModel, frames_to_batch, batch_to_frames
from ..resnet import ResNet, build_resnet

__all__ = ["FrameResNet", "TwoStream", "cross_modality_init", "build_tsn", "build_spatial", "build_temporal",
           "build_two_stream"]


class FrameResNet(ClipModel):
    """A 2-D ResNet on every temporal position, features averaged over time (TSN average consensus).

    ``snippet_features(x) -> (N, K, D)``, ``features(x) -> (N, D)``, ``forward(x) -> (N, num_classes)``.
    """

    def __init__(self, backbone: ResNet, num_classes: int, *, dropout: float = 0.5):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(backbone.out_channels, num_classes)

    def snippet_features(self, x: torch.Tensor) -> torch.Tensor:
        k = x.shape[2]
        y = self.backbone(frames_to_batch(x))          # (N K, D, h, w)
        return batch_to_frames(y.mean(dim=(2, 3)), k)  # (N, K, D)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.snippet_features(x).mean(dim=1)


class TwoStream(nn.Module):
    """Two-stream network (Simonyan & Zisserman 2014): a spatial net on RGB and a temporal net on 2L flow
    channels, fused by averaging their class posteriors (softmax scores).

    ``forward(rgb (N, 3, K, H, W), flow (N, 2L, K, H, W)) -> (N, num_classes)`` softmax average. The other
    fusion of the paper, a linear SVM on the stacked scores, runs on the two score files through
    ``classify``.
    """

    def __init__(self, spatial: nn.Module, temporal: nn.Module):
        super().__init__()
        self.spatial = spatial
        self.temporal = temporal

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.spatial(rgb).softmax(dim=1) + self.temporal(flow).softmax(dim=1))


def cross_modality_init(rgb_weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """TSN cross-modality initialisation (Wang et al. 2016, sec. 3.2).

    Average the first-layer RGB kernels ``W (O, 3, kh, kw)`` over the channel axis and replicate the mean to
    ``in_channels`` (= 2L for flow, 3L for RGB difference): returns ``(O, in_channels, kh, kw)``.
    """
    mean = rgb_weight.mean(dim=1, keepdim=True)
    return mean.repeat(1, in_channels, *([1] * (rgb_weight.dim() - 2))).clone()


def build_tsn(*, num_classes: int, in_channels: int = 3, depth: int = 18, width: int = 64,
              dropout: float = 0.5) -> FrameResNet:
    """TSN (Wang et al. 2016) on a 2-D ResNet; input (N, C, K, H, W), K segments, standard 3 x 224 x 224."""
    return FrameResNet(build_resnet(dim=2, depth=depth, width=width, in_channels=in_channels), num_classes,
                       dropout=dropout)


def build_spatial(*, num_classes: int, in_channels: int = 3, depth: int = 18, width: int = 64,
                  dropout: float = 0.5) -> FrameResNet:
    """Two-stream spatial net: one RGB frame (N, 3, 1, 224, 224); several frames are averaged."""
    return build_tsn(num_classes=num_classes, in_channels=in_channels, depth=depth, width=width,
                     dropout=dropout)


def build_temporal(*, num_classes: int, in_channels: int = 20, depth: int = 18, width: int = 64,
                   dropout: float = 0.5) -> FrameResNet:
    """Two-stream temporal net: one stack of L=10 flow pairs, (N, 20, 1, 224, 224)."""
    return build_tsn(num_classes=num_classes, in_channels=in_channels, depth=depth, width=width,
                     dropout=dropout)


def build_two_stream(*, num_classes: int, in_channels: int = 20, depth: int = 18, width: int = 64,
                     dropout: float = 0.5) -> TwoStream:
    """Both streams; ``in_channels`` is the temporal net's (2L)."""
    return TwoStream(build_spatial(num_classes=num_classes, depth=depth, width=width, dropout=dropout),
                     build_temporal(num_classes=num_classes, in_channels=in_channels, depth=depth, width=width,
                                    dropout=dropout))
