"""Confusion-matrix figure (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from idtfv.atomic import atomic_path

__all__ = ["plot_confusion"]


def plot_confusion(confusion, class_names, path, *, normalize: bool = True, title: str | None = None) -> Path:
    """Save a confusion matrix as a PNG.

    Parameters
    ----------
    confusion : array_like, shape (C, C)
        Counts; rows = true class, columns = predicted class.
    class_names : sequence of str, length C
    path : path-like
        Destination ``.png``.
    normalize : bool, keyword-only
        Show each row divided by its total (per-class recall); empty rows stay zero.
    title : str, optional

    Returns
    -------
    Path of the written file.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, thread-safe

    cm = np.asarray(confusion, dtype=np.float64)
    c = cm.shape[0]
    if cm.shape != (c, c) or len(class_names) != c:
        raise ValueError(f"plot_confusion: expected a (C, C) matrix and C names, got {cm.shape} and {len(class_names)}")
    if normalize:
        tot = cm.sum(axis=1, keepdims=True)
        cm = np.divide(cm, tot, out=np.zeros_like(cm), where=tot > 0)
    side = float(np.clip(0.18 * c + 3.0, 4.0, 24.0))
    fig = Figure(figsize=(side + 1.0, side), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(cm, cmap="Blues", interpolation="nearest", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    font = max(3.0, min(9.0, 300.0 / max(c, 1)))
    ax.set_xticks(np.arange(c))
    ax.set_yticks(np.arange(c))
    ax.set_xticklabels(class_names, rotation=90, fontsize=font)
    ax.set_yticklabels(class_names, fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if c <= 20:
        for i in range(c):
            for j in range(c):
                if cm[i, j]:
                    txt = f"{cm[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                    ax.text(j, i, txt, ha="center", va="center", fontsize=font,
                            color="white" if cm[i, j] > 0.5 * (cm.max() or 1) else "black")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return path
