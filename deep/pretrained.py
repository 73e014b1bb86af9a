"""Load pretrained weights from a local state-dict file (never downloads), with a matched/missing report.

Handles: a plain state dict or a ``idtfv.deep.train`` checkpoint (its ``"model"`` entry); a ``"module."`` prefix
(DataParallel); 2-D kernels into a 3-D model (I3D inflation: repeated over time, divided by kt); an RGB first
layer into a flow / RGB-difference model (TSN cross-modality initialisation: channel mean replicated).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from idtfv.errors import FormatError

__all__ = ["LoadReport", "load_pretrained"]


@dataclass
class LoadReport:
    """Keys copied as-is, adapted (inflated / cross-modality), missing from the file, unexpected in the file,
    and shape mismatches ``(key, file shape, model shape)`` that were skipped."""

    matched: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.matched)} matched, {len(self.adapted)} adapted, {len(self.missing)} missing, "
                f"{len(self.unexpected)} unexpected, {len(self.mismatched)} shape mismatches")


def _adapt(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor | None:
    if src.dim() == 4 and tgt.dim() == 5:  # inflate (O, I, kh, kw) -> (O, I, kt, kh, kw)
        src = src.unsqueeze(2).repeat(1, 1, tgt.shape[2], 1, 1) / tgt.shape[2]
    if src.dim() == tgt.dim() and src.dim() >= 4 and src.shape[0] == tgt.shape[0] and \
            src.shape[2:] == tgt.shape[2:] and src.shape[1] != tgt.shape[1]:
        # cross-modality: mean over input channels, replicated
        src = src.mean(dim=1, keepdim=True).expand(-1, tgt.shape[1], *([-1] * (src.dim() - 2))).clone()
    return src if src.shape == tgt.shape else None


def load_pretrained(model: nn.Module, path, *, adapt: bool = True) -> LoadReport:
    """Copy the tensors of the state dict in ``path`` into ``model`` where names (and shapes) match.

    Parameters
    ----------
    path : a local ``.pt`` / ``.pth`` file, read with ``torch.load(..., weights_only=True)``.
    adapt : inflate 2-D kernels and apply cross-modality initialisation where the shapes call for it.

    Raises ``FormatError`` if the file is not a state dict.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FormatError(path, "pretrained weights file not found; give a local state-dict file") from None
    except Exception as exc:  # torch raises several types for corrupt / pickled files
        raise FormatError(path, f"cannot load as a weights-only state dict ({type(exc).__name__}); save it with "
                                "torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FormatError(path, "expected a dict of tensors (a state dict)")
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    own = model.state_dict()
    report = LoadReport()
    new = {}
    for key, tgt in own.items():
        if key not in state:
            report.missing.append(key)
            continue
        src = state[key]
        if src.shape == tgt.shape:
            new[key] = src
            report.matched.append(key)
            continue
        adapted = _adapt(src.float(), tgt) if adapt and src.is_floating_point() else None
        if adapted is None:
            report.mismatched.append((key, tuple(src.shape), tuple(tgt.shape)))
        else:
            new[key] = adapted.to(tgt.dtype)
            report.adapted.append(key)
    report.unexpected = [k for k in state if k not in own]
    model.load_state_dict(new, strict=False)
    return report
