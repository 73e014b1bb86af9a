"""Entry checks of the classifiers' ``fit`` / ``decision_function`` (NumPy only; once per call, not in kernels).
In-memory scores are checked where score files are: :func:`idtfv.scores.as_scores`.

Bad input raises :class:`~idtfv.errors.ParameterError` saying what was expected, what was given and how to fix
it, instead of an ``IndexError`` inside the kernel or scores that are NaN (or computed on a wrapped-around row).
"""

from __future__ import annotations

import numpy as np

from idtfv.errors import ParameterError

#: Rows checked for NaN/inf at a time (bounds the temporary boolean array for wide Fisher vectors).
_BLOCK = 256


def check_index(index, n_rows: int, who: str) -> np.ndarray | None:
    """``index`` as int64 ``(n,)`` rows of an ``(n_rows, d)`` X, or None; out-of-range or negative ids fail."""
    if index is None:
        return None
    idx = np.asarray(index)
    if idx.ndim != 1 or not (idx.dtype.kind in "iu" or (idx.size == 0 and idx.dtype.kind == "f")):
        raise ParameterError(f"{who}: index must be a 1-D array of integer row numbers, got {idx.dtype} "
                             f"{idx.shape}")
    idx = idx.astype(np.int64, copy=False)
    if idx.size and (idx.min() < 0 or idx.max() >= n_rows):
        bad = idx[(idx < 0) | (idx >= n_rows)]
        raise ParameterError(f"{who}: index must lie in [0, {n_rows}) (rows of X), got {int(bad[0])}; "
                             "give row numbers of X (no negative ids)")
    return idx


def check_finite_rows(X: np.ndarray, index: np.ndarray | None, who: str, name: str = "X") -> None:
    """Fail when a used row of the 2-D ``X`` (all rows, or those of ``index``) holds NaN or infinity."""
    if X.dtype.kind not in "fc":
        return
    n = X.shape[0] if index is None else len(index)
    for i0 in range(0, n, _BLOCK):
        rows = slice(i0, min(i0 + _BLOCK, n)) if index is None else index[i0:i0 + _BLOCK]
        ok = np.isfinite(X[rows]).all(axis=1)
        if not ok.all():
            first = int(np.arange(X.shape[0])[rows][np.argmin(ok)])
            raise ParameterError(f"{who}: {name} row {first} contains NaN or infinity; the scores would be NaN: "
                                 "drop or repair that video's features")


def check_targets(y: np.ndarray, classes, who: str) -> None:
    """Class ids ``(n,)`` must be integers (integral floats pass) and, without ``classes``, name >= 2 classes;
    indicators ``(n, C)`` must be 0/1."""
    if y.ndim == 2:
        if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
            raise ParameterError(f"{who}: multi-label targets (n, C) must hold 0/1 indicators, got values "
                                 f"{np.unique(y)[:5].tolist()}; give class ids (n,) or 0/1 indicators")
        return
    if y.ndim != 1:
        raise ParameterError(f"{who}: y must be class ids (n,) or 0/1 indicators (n, C), got shape {y.shape}")
    integral = y.dtype.kind in "biu" or (y.dtype.kind == "f" and bool(np.all(np.isfinite(y) & (y == np.round(y)))))
    if not integral:
        raise ParameterError(f"{who}: y must hold integer class ids, got dtype {y.dtype} (e.g. {y[:3].tolist()}); "
                             "map the labels to 0..C-1 first (np.unique(y, return_inverse=True))")
    if classes is None and len(np.unique(y)) < 2:
        raise ParameterError(f"{who}: y holds one class ({y[0] if len(y) else 'none'}), need at least 2 to "
                             "train a classifier; give videos of several classes (or classes= to score against)")
