"""Codebooks (PCA, GMM, k-means) on disk: ``<stem>.npz`` arrays + ``<stem>.json`` metadata, never pickles.

The JSON sidecar holds ``{"class", "version", ...model parameters..., "seed", "extra"}``; the ``.npz`` holds only
numeric arrays and is read with ``allow_pickle=False``. Both files are written atomically (temp file + rename).

A codebook directory also holds ``codebook.json``, the summary written last (``{"method", "k", "channels", ...}``);
:func:`load_summary` reads and checks it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from idtfv.cache import open_npz
from idtfv.errors import FormatError, exception_text

from .gmm import DiagGMM
from .kmeans import KMeansCodebook
from .params import METHODS
from .pca import DescriptorPCA

__all__ = ["save_codebook", "load_codebook", "save_model", "load_model", "load_summary"]


def _stem(path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".npz", ".json") else path


def save_codebook(path, arrays: dict, meta: dict) -> Path:
    """Write ``arrays`` to ``<stem>.npz`` and ``meta`` to ``<stem>.json``; returns the stem."""
    from idtfv import __version__
    from idtfv.cache import atomic_savez, atomic_write_json

    stem = _stem(path)
    stem.parent.mkdir(parents=True, exist_ok=True)
    atomic_savez(stem.with_suffix(".npz"), {k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_json(stem.with_suffix(".json"), {"version": __version__, **meta})
    return stem


def load_codebook(path) -> tuple[dict, dict]:
    """Read ``(arrays, meta)`` written by :func:`save_codebook`; FormatError names the file and the problem."""
    stem = _stem(path)
    npz, js = stem.with_suffix(".npz"), stem.with_suffix(".json")
    try:
        meta = json.loads(js.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(js, "codebook metadata not found; fit the codebook first (idtfv encode)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(js, f"codebook metadata is not valid JSON ({exc}); delete it and refit") from None
    if not isinstance(meta, dict) or "class" not in meta:
        raise FormatError(js, "codebook metadata lacks the 'class' key; delete it and refit")
    if not npz.exists():
        raise FormatError(npz, "codebook arrays not found; fit the codebook first (idtfv encode)")
    # every member read in full (CRC-checked): a corrupt file is a FormatError naming it, whatever the damage
    with open_npz(npz, remedy="delete the codebook directory and rerun idtfv encode to refit it") as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, meta


def _gmm_arrays(m: DiagGMM) -> tuple[dict, dict]:
    meta = {"class": "DiagGMM", "n_components": int(m.means_.shape[0]), "dim": int(m.means_.shape[1]),
            "params": {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
                       for k, v in m.get_params().items()}}
    if hasattr(m, "history_"):
        meta["report"] = m.report()
    return {"means": m.means_, "variances": m.variances_, "weights": m.weights_}, meta


def _gmm_load(arrays, meta) -> DiagGMM:
    return DiagGMM.from_params(arrays["means"], arrays["variances"], arrays["weights"])


_SAVERS = {
    DescriptorPCA: lambda m: (m.to_arrays(), m.to_meta()),
    DiagGMM: _gmm_arrays,
    KMeansCodebook: lambda m: (m.to_arrays(), m.to_meta()),
}
_LOADERS = {
    "DescriptorPCA": DescriptorPCA.from_arrays,
    "DiagGMM": _gmm_load,
    "KMeansCodebook": KMeansCodebook.from_arrays,
}


def save_model(path, model, *, seed=None, extra: dict | None = None) -> Path:
    """Save a fitted :class:`DescriptorPCA`, :class:`DiagGMM` or :class:`KMeansCodebook` as ``.npz`` + ``.json``."""
    saver = _SAVERS.get(type(model))
    if saver is None:
        raise TypeError(f"save_model: cannot save {type(model).__name__}; expected one of "
                        f"{sorted(c.__name__ for c in _SAVERS)}")
    arrays, meta = saver(model)
    meta = {**meta, "seed": seed, "extra": extra or {}}
    return save_codebook(path, arrays, meta)


def load_model(path, *, expect: str | None = None):
    """Load a model saved by :func:`save_model` (optionally checking its class name)."""
    arrays, meta = load_codebook(path)
    cls = meta["class"]
    if expect is not None and cls != expect:
        raise FormatError(_stem(path).with_suffix(".json"), f"expected a {expect} codebook, found {cls}")
    loader = _LOADERS.get(cls)
    if loader is None:
        raise FormatError(_stem(path).with_suffix(".json"), f"unknown codebook class {cls!r}; expected one of "
                                                            f"{sorted(_LOADERS)}")
    try:
        return loader(arrays, meta)
    except (KeyError, ValueError) as exc:
        raise FormatError(_stem(path).with_suffix(".npz"), f"codebook {cls} is incomplete or invalid ({exc}); "
                                                           "delete it and refit") from None


def load_summary(path) -> dict:
    """Read and check a codebook directory's summary ``codebook.json``; return it as written.

    The summary must be a JSON object with ``method`` (one of ``fisher``, ``bof``, ``vlad``), ``channels`` (a non-empty
    list of distinct channel names) and ``k`` (a positive integer); other keys are kept as they are.

    Raises
    ------
    FormatError
        Naming the file and the missing or bad key, e.g. ``"<dir>/codebook.json: codebook summary lacks the
        'method' key; ..."``.
    """
    path = Path(path)
    refit = "delete the codebook directory and rerun idtfv encode to refit it"
    if not path.parent.is_dir():  # a --codebook naming no directory: not a codebook fitted halfway
        what = "is not a directory" if path.parent.exists() else "no such directory"
        raise FormatError(path.parent, f"{what}; a codebook is the directory an earlier idtfv encode fitted "
                                       "(CACHE/codebook-<hash>/, holding codebook.json): give that one")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(path, "codebook summary not found; the codebook was not fitted completely — rerun "
                                "idtfv encode") from None
    except OSError as exc:
        raise FormatError(path, f"codebook summary cannot be read ({exception_text(exc)})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(path, f"codebook summary is not valid JSON ({' '.join(str(exc).split())}); {refit}") \
            from None
    if not isinstance(summary, dict):
        raise FormatError(path, f"codebook summary should be a JSON object with keys method, k, channels, got "
                                f"{type(summary).__name__}; {refit}")
    for key in ("method", "channels", "k"):
        if key not in summary:
            raise FormatError(path, f"codebook summary lacks the {key!r} key; {refit}")
    method, channels, k = summary["method"], summary["channels"], summary["k"]
    if method not in METHODS:
        raise FormatError(path, f"codebook summary key 'method' is {method!r}, expected one of "
                                f"{', '.join(METHODS)}; {refit}")
    if (not isinstance(channels, list) or not channels or not all(isinstance(c, str) and c for c in channels)
            or len(set(channels)) != len(channels)):
        raise FormatError(path, f"codebook summary key 'channels' is {channels!r}, expected a non-empty list of "
                                f"distinct channel names such as [\"hog\", \"hof\"]; {refit}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise FormatError(path, f"codebook summary key 'k' is {k!r}, expected a positive integer; {refit}")
    return summary
