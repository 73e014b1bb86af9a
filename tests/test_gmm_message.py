"""The encode stage says once, in plain words, what an unconverged GMM means (EM stopped at --gmm-iter), and says
nothing of the kind when EM converged."""

from __future__ import annotations

import logging

import numpy as np

from idtfv.encoding.params import EncodeParams
from idtfv.encoding.stage import fit_codebooks


def _blobs(seed: int, n: int = 600, d: int = 6) -> np.ndarray:
    """Four well-separated Gaussian blobs: EM on K=4 converges in a few iterations."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 20, (4, d))
    return (centres[rng.integers(0, 4, n)] + rng.normal(0, 1, (n, d))).astype(np.float32)


def _plain_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "EM stopped at --gmm-iter" in r.getMessage()]


def test_unconverged_gmm_is_explained_once_naming_every_channel(caplog):
    sample = {"hog": _blobs(0), "hof": _blobs(1)}
    with caplog.at_level(logging.INFO, logger="idtfv.encoding"):
        models, _ = fit_codebooks(sample, EncodeParams(k=4, gmm_iter=1, seed=0), jobs=2)
    assert not any(gmm.converged_ for _, gmm in models.values())  # one iteration can never meet the tolerance
    (line,) = _plain_lines(caplog)
    assert "on hog, hof," in line and "--gmm-iter 1 iterations" in line
    assert "normal for iDT codebooks" in line and "pass --gmm-iter 100" in line
    assert not any("converged=False" in r.getMessage() for r in caplog.records)


def test_converged_gmm_gets_no_explanation(caplog):
    with caplog.at_level(logging.INFO, logger="idtfv.encoding"):
        models, _ = fit_codebooks({"hog": _blobs(0)}, EncodeParams(k=4, gmm_iter=200, seed=0))
    assert models["hog"][1].converged_
    assert _plain_lines(caplog) == []
    assert any("EM iterations (converged)" in r.getMessage() for r in caplog.records)
