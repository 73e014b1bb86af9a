"""CNN + LSTM (Donahue et al. 2015, "Long-term recurrent convolutional networks", LRCN activity recognition).

A 2-D ResNet encodes each frame, an LSTM runs over the frame features, and the per-step predictions are
averaged over time::

    x (N, C, T, H, W) -> ResNet per frame -> (N, T, D) -> LSTM -> h (N, T, D_h) -> mean over T -> fc

Since ``fc`` is linear, ``fc(mean_t h_t)`` is the average of the per-step scores (LRCN's video prediction).
Standard input 16 x 224 x 224.
"""

from __future__ import annotations

import torch
from torch import nn

from ..blocks import ClipModel, batch_to_frames, frames_to_batch
from ..resnet import ResNet, build_resnet

__all__ = ["CNNLSTM", "build_cnn_lstm"]


class CNNLSTM(ClipModel):
    """Frame encoder + LSTM; ``features`` -> time-averaged LSTM outputs (N, hidden)."""

    def __init__(self, encoder: ResNet, lstm: nn.LSTM, num_classes: int, *, dropout: float = 0.5):
        super().__init__()
        self.encoder = encoder
        self.lstm = lstm
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(lstm.hidden_size, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[2]
        f = batch_to_frames(self.encoder(frames_to_batch(x)).mean(dim=(2, 3)), t)  # (N, T, D)
        h, _ = self.lstm(f)                                                        # (N, T, D_h)
        return h.mean(dim=1)


def build_cnn_lstm(*, num_classes: int, in_channels: int = 3, depth: int = 18, width: int = 64,
                   hidden: int | None = None, dropout: float = 0.5) -> CNNLSTM:
    """LRCN with a ResNet encoder; ``hidden`` defaults to the encoder's feature size."""
    enc = build_resnet(dim=2, depth=depth, width=width, in_channels=in_channels)
    lstm = nn.LSTM(enc.out_channels, hidden or enc.out_channels, batch_first=True)
    return CNNLSTM(enc, lstm, num_classes, dropout=dropout)
