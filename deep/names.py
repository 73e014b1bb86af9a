"""The names ``train-deep`` accepts, without importing torch (so that ``idtfv --help`` stays fast).

``MODEL_NAMES`` lists the keys of :data:`idtfv.deep.models.MODELS` (a test checks that they agree);
``MODALITIES`` is the modality table the datasets use (:mod:`idtfv.deep.data`).
"""

from __future__ import annotations

__all__ = ["MODEL_NAMES", "MODALITIES"]

#: The model families of ``idtfv.deep.models.MODELS``, in its order.
MODEL_NAMES = ("single_frame", "late_fusion", "early_fusion", "slow_fusion", "spatial", "temporal", "tsn", "c3d",
               "i3d", "nonlocal", "slowfast", "tsm", "tam", "cnn_lstm")

#: modality -> (channels per frame, whether it is built from frame pairs)
MODALITIES = {"rgb": (3, False), "rgbdiff": (3, True), "flow": (2, True), "warped_flow": (2, True)}
