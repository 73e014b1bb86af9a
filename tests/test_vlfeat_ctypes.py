"""bench/_vlfeat.py: VLFeat's ``vl_fisher_encode`` through ctypes, the baseline of bench/bench_fisher.py.

References: cyvlfeat's ``fisher`` on the same library (bit-identical: the same C function and inputs; when cyvlfeat
is importable), our ``fisher_vector`` within VLFeat's float32 accuracy (1e-5, as tests/test_fisher.py), and VLFeat's
term count against float64 posteriors, on the SIMD build in ``../shared`` (skipped when it is absent).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from conftest import SHARED
from idtfv.encoding.fisher import fisher_vector

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import _vlfeat  # noqa: E402  (bench/_vlfeat.py)

LIBRARY = SHARED / "reference" / "vlfeat" / "libvl.so.1"
needs_library = pytest.mark.skipif(not LIBRARY.is_file(), reason="needs ../shared/reference/vlfeat/libvl.so.1")
OPTIONS = [dict(improved=True), dict(), dict(normalized=True), dict(square_root=True), dict(fast=True),
           dict(fast=True, improved=True)]


@pytest.fixture(scope="module")
def problem():
    """Descriptors (N=300, D=6) drawn from a planted K=5 diagonal GMM, and that GMM (float32)."""
    rng = np.random.default_rng(7)
    K, D, N = 5, 6, 300
    mu = rng.normal(0, 2, (K, D)).astype(np.float32)
    var = rng.uniform(0.3, 2.0, (K, D)).astype(np.float32)
    w = rng.dirichlet(np.full(K, 4.0)).astype(np.float32)
    comp = rng.choice(K, N, p=w / w.sum())
    X = (mu[comp] + rng.normal(size=(N, D)) * np.sqrt(var[comp])).astype(np.float32)
    return X, (mu, var, w)


@pytest.fixture(scope="module")
def simd():
    if not LIBRARY.is_file():
        pytest.skip("needs ../shared/reference/vlfeat/libvl.so.1")
    return _vlfeat.VLFeat(LIBRARY, threads=1)


def _posteriors64(X, mu, var, w):
    X, mu, var, w = (np.asarray(a, np.float64) for a in (X, mu, var, w))
    ll = np.log(w) - 0.5 * np.log(var).sum(1) - 0.5 * ((X[:, None] - mu[None]) ** 2 / var[None]).sum(2)
    q = np.exp(ll - ll.max(1, keepdims=True))
    return q / q.sum(1, keepdims=True)


@pytest.mark.skipif(importlib.util.find_spec("cyvlfeat") is None, reason="cyvlfeat not installed")
@pytest.mark.parametrize("opts", OPTIONS)
def test_ctypes_equals_cyvlfeat_on_the_same_library(problem, opts):
    """Same libvl (the one cyvlfeat's extension loaded, found by name), same inputs: the same bits."""
    from cyvlfeat.fisher import fisher as cy_fisher

    X, (mu, var, w) = problem
    vl = _vlfeat.VLFeat("libvl.so.1")  # the loader returns the copy cyvlfeat already mapped
    ref = np.asarray(cy_fisher(X, mu, var, w, **opts)).ravel()
    got = vl.fisher(X, mu, var, w, **opts)
    assert got.dtype == np.float32 and got.shape == ref.shape == (2 * mu.size,)
    np.testing.assert_array_equal(got, ref)


@needs_library
@pytest.mark.parametrize("opts", OPTIONS)
def test_simd_build_matches_our_fisher_vector(simd, problem, opts):
    X, gmm = problem
    ref = simd.fisher(X, *gmm, **opts)
    with threadpool_limits(1):
        ours = fisher_vector(X, gmm, **{"improved": False, **opts})  # our improved defaults to True
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert np.abs(ref).max() > 1e-2  # a real vector, not zeros on both sides


@needs_library
def test_terms_count_posteriors_of_at_least_1e_6(simd, problem):
    X, gmm = problem
    q = _posteriors64(X, *gmm)
    expected = int((q >= 1e-6).sum())
    assert len(X) < expected < q.size  # the planted mixture overlaps, but not everywhere
    _, terms = simd.encode(X, *gmm, _vlfeat.FLAG_IMPROVED)
    near = int(((q > 0.5e-6) & (q < 2e-6)).sum())  # float32 posteriors may fall either side of the threshold
    assert abs(terms - expected) <= near
    _, terms_fast = simd.encode(X, *gmm, _vlfeat.FLAG_IMPROVED | _vlfeat.FLAG_FAST)
    assert terms_fast == len(X)


@needs_library
def test_report_names_the_simd_build(simd):
    rep = simd.report()
    assert Path(rep["mapped"]).resolve() == LIBRARY.resolve()
    assert rep["version"] == "0.9.21" and rep["config"].startswith("VLFeat version 0.9.21")
    assert rep["simd"] is True and rep["threads"] == 1


@needs_library
@pytest.mark.parametrize("change, match", [
    (lambda X, m, v, w: (X[:0], m, v, w), r"N >= 1"),
    (lambda X, m, v, w: (X[:, :4], m, v, w), r"\(N, 6\)"),
    (lambda X, m, v, w: (X, m[:0], v, w), r"K, D >= 1"),
    (lambda X, m, v, w: (X, m, v[:, :4], w), r"covariances: expected shape \(5, 6\)"),
    (lambda X, m, v, w: (X, m, v, w[:4]), r"priors: expected shape \(5,\)"),
    (lambda X, m, v, w: (X, m, np.where(np.arange(6) == 2, 0, v), w), r"covariances: expected finite values > 0"),
    (lambda X, m, v, w: (X, m, v, -w), r"priors: expected finite values > 0"),
])
def test_refuses_what_would_crash_or_divide_by_zero(simd, problem, change, match):
    X, (mu, var, w) = problem
    with pytest.raises(ValueError, match=match):
        simd.fisher(*change(X, mu, var, w), improved=True)
