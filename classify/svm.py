"""One-vs-rest linear SVM trained through the linear kernel (scales to UCF101-size Fisher vectors).

Each class c gets a binary linear SVM (the iDT papers: C = 100, one-vs-rest) solving liblinear's problem::

    min_{w, w_B}  1/2 (||w||^2 + w_B^2) + C sum_i loss(y_ci (w.x_i + B w_B))

with ``loss`` the hinge ``max(0, 1 - m)`` or the squared hinge ``max(0, 1 - m)^2`` (scikit-learn's
``LinearSVC`` default) and the bias ``b = B w_B`` regularised through the constant feature B
(``intercept_scaling``), exactly as ``LinearSVC(loss=..., C=..., intercept_scaling=B)``: the optimum is unique,
so on small problems the weights and predictions agree with LinearSVC up to the solvers' tolerance
(tests/test_svm.py checks it). It is solved in the dual on ``K = X X^T`` (see :mod:`idtfv.classify._kernel_svm`),
which costs O(n^2 d) once for the kernel plus O(n x kernel rows touched) per class, instead of liblinear's
O(d) per coordinate step on a sparse double copy of X.

Multi-label data (Hollywood2) gives each class its own positives; the model is the same.
Models are saved as ``.npz`` (``coef (C, d) float64``, ``intercept (C,)``, ``classes (C,)``) plus a ``.json``
sidecar with the parameters; never pickles.
"""

from __future__ import annotations

import json
import math
import numbers
import warnings
from pathlib import Path

import numpy as np

from idtfv.errors import FormatError, ParameterError

from idtfv.atomic import atomic_open, atomic_write_text
from ._checks import check_finite_rows, check_index, check_targets
from ._kernel_svm import LOSSES, linear_kernel, primal_weights, solve_ovr

__all__ = ["LinearSVM", "select_C", "DEFAULT_C_GRID"]

#: C values tried by cross-validation when no grid is given
DEFAULT_C_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)
_VERSION = 1


def _check_params(C, loss, intercept_scaling, tol, max_iter):
    if not (isinstance(C, numbers.Real) and math.isfinite(C) and C > 0):
        raise ParameterError(f"C must be a positive number, got {C!r}")
    if loss not in LOSSES:
        raise ParameterError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
    if not (intercept_scaling >= 0 and math.isfinite(intercept_scaling)):
        raise ParameterError(f"intercept_scaling must be >= 0 (0 = no bias), got {intercept_scaling!r}")
    if not tol > 0:
        raise ParameterError(f"tol must be > 0, got {tol!r}")
    if not (int(max_iter) >= 1):
        raise ParameterError(f"max_iter must be >= 1, got {max_iter!r}")


def _sign_matrix(y, classes):
    """Targets -> (n, C) float64 of +-1. ``y``: (n,) class ids or (n, C) indicators (multi-label)."""
    y = np.asarray(y)
    if y.ndim == 2:
        if y.shape[1] != len(classes):
            raise ParameterError(f"multi-label targets must have {len(classes)} columns, got {y.shape[1]}")
        return np.where(y.astype(bool), 1.0, -1.0)
    return np.where(y[:, None] == np.asarray(classes)[None, :], 1.0, -1.0)


class LinearSVM:
    """One-vs-rest linear SVM solved on the linear kernel.

    Parameters (keyword-only)
    ----------
    C : float
        Misclassification cost C (default 100, the iDT papers).
    loss : {"squared_hinge", "hinge"}
        Per-sample loss; ``squared_hinge`` is LinearSVC's default.
    intercept_scaling : float
        Value B of the constant bias feature (liblinear's convention; the bias is regularised). 0 = no bias.
    tol : float
        Stopping tolerance on the spread of projected dual gradients (liblinear's ``eps``).
    max_iter : int
        Maximum passes over the data per class.
    n_jobs : int
        Classes solved in parallel threads.
    random_state : int
        Seeds each class's coordinate order; results are identical for any ``n_jobs``.
    block_rows : int
        Rows per block when forming the kernel and the weights (memory vs. BLAS efficiency).

    Attributes
    ----------
    classes_ : ndarray (C,) int64
    coef_ : ndarray (C, d) float64, the weights w_c
    intercept_ : ndarray (C,) float64, the biases b_c
    n_passes_ : ndarray (C,) int, dual passes per class
    converged_ : bool, every class reached ``tol`` within ``max_iter``
    """

    def __init__(self, *, C: float = 100.0, loss: str = "squared_hinge", intercept_scaling: float = 1.0,
                 tol: float = 1e-4, max_iter: int = 10_000, n_jobs: int = 1, random_state: int = 0,
                 block_rows: int = 2048):
        self.C = C
        self.loss = loss
        self.intercept_scaling = intercept_scaling
        self.tol = tol
        self.max_iter = max_iter
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.block_rows = block_rows

    # ------------------------------------------------------------------ fitting
    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in ("C", "loss", "intercept_scaling", "tol", "max_iter", "n_jobs",
                                              "random_state", "block_rows")}

    def fit(self, X, y, *, classes=None, index=None, kernel=None):
        """Train one binary SVM per class.

        Parameters
        ----------
        X : ndarray, shape (N, d)
            Features (float32 preferred: the kernel is computed in float32).
        y : ndarray, shape (n,) of class ids, or (n, C) of 0/1 indicators (multi-label)
            Targets of the training rows (``n = N`` or ``len(index)``).
        classes : array_like of int, optional, keyword-only
            Class ids, in score-column order (default: the ids present in y; multi-label: 0..C-1). A class
            without positives gets an all-negative classifier.
        index : ndarray of int, optional
            Training rows of X (avoids copying a large X).
        kernel : ndarray, shape (n, n), float32, optional
            Precomputed ``X_s X_s^T`` (e.g. shared by a C search).
        """
        _check_params(self.C, self.loss, self.intercept_scaling, self.tol, self.max_iter)
        X = np.asarray(X)
        if X.ndim != 2:
            raise ParameterError(f"X must have shape (n, d), got {X.shape}")
        idx = check_index(index, X.shape[0], "LinearSVM.fit")
        n = X.shape[0] if idx is None else len(idx)
        y = np.asarray(y)
        if y.ndim == 0 or y.shape[0] != n:
            raise ParameterError(f"y has {y.shape[0] if y.ndim else 0} rows but {n} training rows were given")
        if n < 2:
            raise ParameterError(f"need at least 2 training videos, got {n}")
        check_targets(y, classes, "LinearSVM.fit")
        check_finite_rows(X, idx, "LinearSVM.fit")
        if classes is None:
            classes = np.arange(y.shape[1]) if y.ndim == 2 else np.unique(y)
        self.classes_ = np.asarray(classes, dtype=np.int64)
        Ysign = _sign_matrix(y, self.classes_)
        K = linear_kernel(X, index=idx, block_rows=self.block_rows) if kernel is None else kernel
        if K.shape != (n, n) or K.dtype != np.float32 or not K.flags.c_contiguous:
            raise ParameterError(f"kernel must be a C-contiguous float32 ({n}, {n}) array, got {K.dtype} {K.shape}")
        beta, passes, gaps = solve_ovr(K, Ysign, C=float(self.C), loss=self.loss,
                                       intercept_scaling=self.intercept_scaling, tol=self.tol,
                                       max_iter=int(self.max_iter), random_state=self.random_state,
                                       n_jobs=self.n_jobs)
        self.coef_ = primal_weights(X, beta, index=idx)
        self.intercept_ = float(self.intercept_scaling) ** 2 * beta.sum(axis=1)
        self.n_passes_ = passes
        self.gaps_ = gaps
        self.converged_ = bool((gaps <= self.tol).all())
        self.n_features_in_ = X.shape[1]
        self.n_train_ = n
        return self

    # ------------------------------------------------------------------ prediction
    def decision_function(self, X, *, index=None, block_rows: int = 256) -> np.ndarray:
        """Scores ``X w_c + b_c``, shape (n, C), float64 (computed in float64 over row blocks)."""
        if not hasattr(self, "coef_"):
            raise ParameterError("LinearSVM: call fit() or load() before decision_function()")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.coef_.shape[1]:
            raise ParameterError(f"X must have shape (n, {self.coef_.shape[1]}), got {X.shape}")
        index = check_index(index, X.shape[0], "LinearSVM.decision_function")
        check_finite_rows(X, index, "LinearSVM.decision_function")
        n = X.shape[0] if index is None else len(index)
        out = np.empty((n, self.coef_.shape[0]), dtype=np.float64)
        Wt = self.coef_.T
        for i0 in range(0, n, block_rows):
            i1 = min(i0 + block_rows, n)
            blk = X[i0:i1] if index is None else X[np.asarray(index)[i0:i1]]
            out[i0:i1] = blk.astype(np.float64) @ Wt
        out += self.intercept_
        return out

    def predict(self, X, *, index=None) -> np.ndarray:
        """Class of the highest score, shape (n,)."""
        return self.classes_[np.argmax(self.decision_function(X, index=index), axis=1)]

    # ------------------------------------------------------------------ persistence
    def save(self, path, *, extra: dict | None = None) -> tuple[Path, Path]:
        """Write ``<path>.npz`` (coef, intercept, classes) and ``<path>.json`` (parameters, metadata).

        ``path`` may end in ``.npz``; ``extra`` is merged into the JSON (class names, split, CV results, ...).
        The JSON's ``params`` leave out ``n_jobs`` (a run-environment detail; :meth:`load` gives 1).
        """
        p = Path(path)
        stem = p.with_suffix("") if p.suffix == ".npz" else p
        npz, js = stem.with_suffix(".npz"), stem.with_suffix(".json")
        with atomic_open(npz, "wb") as fh:
            np.savez(fh, coef=self.coef_, intercept=self.intercept_, classes=self.classes_)
        # n_jobs is how the model was computed, not what it is (the weights are identical for any n_jobs): it stays
        # out of the file, so the same data and seed give the same bytes on any machine
        params = {k: v for k, v in self.get_params().items() if k != "n_jobs"}
        meta = {
            "class": "idtfv.classify.svm.LinearSVM",
            "format_version": _VERSION,
            "params": params,
            "n_features": int(self.n_features_in_),
            "n_train": int(self.n_train_),
            "n_passes": [int(v) for v in self.n_passes_],
            "converged": self.converged_,
        }
        meta.update(extra or {})
        atomic_write_text(js, json.dumps(meta, indent=2) + "\n")
        return npz, js

    @classmethod
    def load(cls, path) -> "LinearSVM":
        """Read a model written by :meth:`save` (``path``: the ``.npz`` or the common stem)."""
        from idtfv.cache import open_npz

        p = Path(path)
        stem = p.with_suffix("") if p.suffix in (".npz", ".json") else p
        npz, js = stem.with_suffix(".npz"), stem.with_suffix(".json")
        try:
            meta = json.loads(js.read_text(encoding="utf-8-sig"))
        except UnicodeDecodeError as exc:
            raise FormatError(js, f"not UTF-8 text ({exc.reason} at byte {exc.start}); expected the model's JSON "
                                  "(written by idtfv train-svm)") from None
        except json.JSONDecodeError as exc:
            raise FormatError(js, f"not valid JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get("class") != "idtfv.classify.svm.LinearSVM":
            got = meta.get("class") if isinstance(meta, dict) else f"a JSON {type(meta).__name__}"
            raise FormatError(js, f"expected a idtfv.classify.svm.LinearSVM model, got class {got!r}")
        remedy = "rerun idtfv train-svm to write the model again"
        with open_npz(npz, remedy=remedy) as z:
            missing = [k for k in ("coef", "intercept", "classes") if k not in z]
            if missing:
                raise FormatError(npz, f"missing array(s) {', '.join(missing)}; expected coef, intercept, classes")
            coef, intercept, classes = z["coef"], z["intercept"], z["classes"]
        if coef.ndim != 2 or intercept.shape != (coef.shape[0],) or classes.shape != (coef.shape[0],):
            raise FormatError(npz, f"inconsistent shapes coef {coef.shape}, intercept {intercept.shape}, "
                                   f"classes {classes.shape}")
        if coef.dtype.kind not in "fiu" or intercept.dtype.kind not in "fiu" or classes.dtype.kind not in "iu":
            raise FormatError(npz, f"expected numeric coef and intercept and integer classes, got dtypes {coef.dtype}, "
                                   f"{intercept.dtype}, {classes.dtype}; {remedy}")
        if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
            raise FormatError(npz, f"coef or intercept contain NaN or infinity; {remedy}")
        params = {k: v for k, v in meta.get("params", {}).items()
                  if k in ("C", "loss", "intercept_scaling", "tol", "max_iter", "n_jobs", "random_state",
                           "block_rows")}
        model = cls(**params)
        model.coef_ = coef.astype(np.float64)
        model.intercept_ = intercept.astype(np.float64)
        model.classes_ = classes.astype(np.int64)
        model.n_features_in_ = coef.shape[1]
        model.n_train_ = int(meta.get("n_train", 0))
        model.n_passes_ = np.asarray(meta.get("n_passes", []), dtype=np.int64)
        model.converged_ = bool(meta.get("converged", True))
        model.metadata_ = meta
        return model


# ---------------------------------------------------------------------- C selection


def _folds(y, n_folds, groups, random_state):
    from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold

    y = np.asarray(y)
    idx = np.arange(y.shape[0])
    if idx.size < n_folds:
        raise ParameterError(f"{n_folds}-fold cross-validation needs at least {n_folds} training videos, got "
                             f"{idx.size}; lower --folds (or train with a fixed --C)")
    if groups is not None:
        n_groups = len(np.unique(groups))
        if n_groups < n_folds:
            raise ParameterError(f"cross-validation needs at least {n_folds} groups, got {n_groups}")
        return list(GroupKFold(n_splits=n_folds).split(idx, groups=groups))
    if y.ndim == 1:
        counts = np.bincount(np.unique(y, return_inverse=True)[1])
        if counts.min() >= n_folds:
            return list(StratifiedKFold(n_folds, shuffle=True, random_state=random_state).split(idx, y))
    return list(KFold(n_folds, shuffle=True, random_state=random_state).split(idx))


def select_C(K, y, *, classes, Cs=DEFAULT_C_GRID, n_folds: int = 3, groups=None, loss="squared_hinge",
             intercept_scaling=1.0, tol=1e-4, max_iter=10_000, random_state=0, n_jobs=1) -> dict:
    """Pick C by k-fold cross-validation on the training kernel.

    Every fold reuses sub-blocks of the same kernel ``K`` (no new products with X): the validation scores
    are ``K[val, tr] beta_tr + b``. Folds keep groups apart when ``groups`` is given (UCF101's ``gNN``: clips
    of one group are near duplicates), else they are stratified by class.

    Parameters
    ----------
    K : ndarray (n, n) float32, training kernel
    y : ndarray (n,) class ids or (n, C) indicators
    classes : array_like (C,) of class ids
    Cs : sequence of float
    n_folds : int
    groups : array_like (n,), optional

    Returns
    -------
    dict with ``best_C``, ``Cs``, ``scores`` (mean validation accuracy, or mAP for multi-label, per C),
    ``metric``, ``n_folds``, ``grouped``.
    """
    from .evaluate import split_metrics

    Cs = [float(c) for c in Cs]
    if not Cs:
        raise ParameterError("select_C: the C grid is empty")
    classes = np.asarray(classes)
    y = np.asarray(y)
    multilabel = y.ndim == 2
    Ysign = _sign_matrix(y, classes)
    targets = Ysign > 0
    folds = _folds(y, n_folds, groups, random_state)
    metric = "mAP" if multilabel else "accuracy"
    bias2 = float(intercept_scaling) ** 2
    table = np.zeros((len(Cs), len(folds)))
    for f, (tr, va) in enumerate(folds):
        Ktr = np.ascontiguousarray(K[np.ix_(tr, tr)])
        Kva = K[np.ix_(va, tr)].astype(np.float64)
        for a, C in enumerate(Cs):
            beta, _, _ = solve_ovr(Ktr, np.ascontiguousarray(Ysign[tr]), C=C, loss=loss,
                                   intercept_scaling=intercept_scaling, tol=tol, max_iter=max_iter,
                                   random_state=random_state, n_jobs=n_jobs)
            scores = Kva @ beta.T + bias2 * beta.sum(axis=1)
            t = targets[va]
            keep = t.any(axis=1)
            m = split_metrics(scores[keep], t[keep])
            table[a, f] = m[metric]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a C whose folds all lack a defined metric: NaN
        mean = np.nanmean(table, axis=1)
    if np.isnan(mean).all():
        raise ParameterError(f"cross-validation: no validation fold has a defined {metric} (each class is absent "
                             "from the fold or is the label of all its videos); lower --folds or train with a fixed "
                             "--C")
    best = int(np.nanargmax(mean))  # first best = smallest C among ties
    return {"best_C": Cs[best], "Cs": Cs, "scores": [float(v) for v in mean], "metric": metric,
            "n_folds": len(folds), "grouped": groups is not None}
