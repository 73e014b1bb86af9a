"""bench/_vlfeat.py ``VLFeat.gmm``: VLFeat's ``vl_gmm_cluster`` through ctypes, the baseline of bench/bench_gmm.py.

References: cyvlfeat's ``gmm`` on the same library and options (bit-identical: the same C function, inputs and
generator seed; when cyvlfeat is importable), and, on the SIMD build in ``../shared`` (skipped when it is absent):
a planted mixture of well-separated Gaussians that EM started at the truth stays at (the planted means, variances
and weights within sampling error), a NumPy float64 transcription of one VLFeat EM step (vl/gmm.c's update, with its
posterior skip and covariance bound), and a NumPy evaluation of the log-likelihood VLFeat reports for the model it
returns.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import _vlfeat  # noqa: E402  (bench/_vlfeat.py)

LIBRARY = SHARED / "reference" / "vlfeat" / "libvl.so.1"
needs_cyvlfeat = pytest.mark.skipif(importlib.util.find_spec("cyvlfeat") is None, reason="cyvlfeat not installed")


@pytest.fixture(scope="module")
def simd():
    if not LIBRARY.is_file():
        pytest.skip("needs ../shared/reference/vlfeat/libvl.so.1")
    return _vlfeat.VLFeat(LIBRARY, threads=1)


@pytest.fixture(scope="module")
def planted():
    """6,000 float32 draws from 4 well-separated diagonal Gaussians in D=3, and the mixture (float64)."""
    rng = np.random.default_rng(3)
    mu = np.array([[-6, 0, 2], [0, 5, -1], [6, -2, 0], [1, -6, 4]], float)
    var = np.array([[0.5, 1.0, 0.7], [1.2, 0.4, 0.9], [0.8, 0.8, 0.3], [0.6, 1.1, 1.0]]) ** 2
    w = np.array([0.1, 0.2, 0.3, 0.4])
    z = rng.choice(4, 6000, p=w)
    X = (mu[z] + rng.normal(size=(6000, 3)) * np.sqrt(var[z])).astype(np.float32)
    return X, (mu, var, w), z


@pytest.fixture(scope="module")
def overlapping():
    """2,000 x 4 float32 from 6 overlapping Gaussians (posteriors far from 0/1), and a start that is not a fit."""
    rng = np.random.default_rng(11)
    centres = rng.normal(0, 1.5, (6, 4))
    X = (centres[rng.integers(6, size=2000)] + rng.normal(size=(2000, 4))).astype(np.float32)
    start = (X[rng.choice(2000, 6, replace=False)].astype(np.float64), rng.uniform(0.5, 2.0, (6, 4)),
             rng.dirichlet(np.full(6, 3.0)))
    return X, start


def log_density(X, mu, var, w):
    """(N, K) float64 log(w_k N(x_i; mu_k, diag var_k))."""
    X, mu, var, w = (np.asarray(a, np.float64) for a in (X, mu, var, w))
    d = X.shape[1]
    return (np.log(w) - 0.5 * d * np.log(2 * np.pi) - 0.5 * np.log(var).sum(1)
            - 0.5 * ((X[:, None] - mu[None]) ** 2 / var[None]).sum(2))


def mean_loglik(X, mu, var, w):
    """Mean log p(x) of the mixture over X (float64, log-sum-exp)."""
    lp = log_density(X, mu, var, w)
    m = lp.max(1, keepdims=True)
    return float((m[:, 0] + np.log(np.exp(lp - m).sum(1))).mean())


def em_step_vlfeat_rule(X, mu, var, w, bound):
    """One EM step as vl/gmm.c writes it, in float64: posteriors below 1e-2 / K are left out of the statistics (not
    renormalised), covariances are floored at ``bound``, priors renormalised."""
    X = np.asarray(X, np.float64)
    lp = log_density(X, mu, var, w)
    q = np.exp(lp - lp.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    K = q.shape[1]
    q[q < 1e-2 / K] = 0
    mass = q.sum(0)
    new_mu = (q.T @ X) / mass[:, None]
    new_var = np.maximum((q.T @ X ** 2) / mass[:, None] - new_mu ** 2, bound)
    return new_mu, new_var, mass / mass.sum()


# ------------------------------------------------------------------------------------------------- against cyvlfeat
@needs_cyvlfeat
@pytest.mark.parametrize("init", ["rand", "kmeans", "custom", "bound"])
def test_ctypes_gmm_equals_cyvlfeat_on_the_same_library(overlapping, init):
    """Same libvl (the copy cyvlfeat's extension loaded, found by name), same data, options and seed: same bits.
    cyvlfeat returns VLFeat's log-likelihood rounded to float32."""
    from cyvlfeat.gmm import gmm as cy_gmm_wrapper
    from cyvlfeat.gmm.cygmm import cy_gmm  # the wrapper refuses custom starts (``any()`` of arrays raises)

    X, (mu, var, w) = overlapping
    vl = _vlfeat.VLFeat("libvl.so.1", threads=1)
    seed = 1234
    vl.seed_generator(seed)  # cyvlfeat draws from the same thread's generator of the same library copy
    if init == "custom":
        start = tuple(np.ascontiguousarray(a, np.float32) for a in (mu, var, w))
        ref = cy_gmm(X, 6, 7, b"custom", 1, 0, init_priors=start[2], init_means=start[0], init_covars=start[1])
        got = vl.gmm(X, 6, max_iterations=7, init=start, seed=seed)
    elif init == "bound":  # cyvlfeat's scalar bound must be a 1-element array of the data's type
        ref = cy_gmm_wrapper(X, 6, max_num_iterations=7, init_mode="kmeans",
                             covariance_bound=np.array([0.95], np.float32))
        got = vl.gmm(X, 6, max_iterations=7, init="kmeans", covariance_bound=0.95, seed=seed)
        assert got.covariances.min() == np.float32(0.95)  # the bound is active here
    else:
        ref = cy_gmm_wrapper(X, 6, max_num_iterations=7, init_mode=init)
        got = vl.gmm(X, 6, max_iterations=7, init=init, seed=seed)
    for a, b in zip((got.means, got.covariances, got.priors), ref[:3]):
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    assert np.float32(got.loglikelihood) == np.float32(ref[3])


# ------------------------------------------------------------------------------------- invariants on the SIMD build
def test_planted_start_converges_to_the_planted_mixture(simd, planted):
    X, (mu, var, w), z = planted
    fit = simd.gmm(X, 4, max_iterations=100, init=(mu, var, w))
    assert fit.converged and 1 <= fit.iterations < 100
    n_k = np.bincount(z, minlength=4)
    # within 5 standard errors of the planted values (the fit is the sample's, the truth is the population's)
    assert (np.abs(fit.means - mu) < 5 * np.sqrt(var / n_k[:, None])).all()
    assert (fit.covariances > 0).all()
    assert (np.abs(fit.covariances / var - 1) < 5 * np.sqrt(2 / n_k[:, None])).all()
    assert (np.abs(fit.priors - w) < 5 * np.sqrt(w * (1 - w) / len(X))).all()
    assert abs(float(fit.priors.astype(np.float64).sum()) - 1) < 1e-6
    # VLFeat's log-likelihood is the sum over the data of log p(x) under the returned model
    assert fit.num_data == len(X)
    assert fit.mean_loglikelihood == pytest.approx(mean_loglik(X, fit.means, fit.covariances, fit.priors),
                                                   abs=1e-5)


def test_rand_start_finds_the_planted_components(simd, planted):
    X, (mu, var, w), _ = planted
    fit = simd.gmm(X, 4, max_iterations=100, init="rand", seed=5)
    order = np.argmin(((fit.means[:, None] - mu[None]) ** 2).sum(2), axis=1)
    assert sorted(order) == [0, 1, 2, 3]
    np.testing.assert_allclose(fit.means, mu[order], atol=0.15)
    np.testing.assert_allclose(fit.priors, w[order], atol=0.02)
    assert fit.mean_loglikelihood == pytest.approx(mean_loglik(X, fit.means, fit.covariances, fit.priors),
                                                   abs=1e-5)


def test_one_iteration_is_one_em_step_of_vlfeat_rule(simd, overlapping):
    X, (mu, var, w) = overlapping
    start = tuple(np.asarray(a, np.float32) for a in (mu, var, w))
    fit = simd.gmm(X, 6, max_iterations=1, init=start, covariance_bound=1e-4)
    assert fit.iterations == 1 and not fit.converged
    ref_mu, ref_var, ref_w = em_step_vlfeat_rule(X, *start, 1e-4)
    np.testing.assert_allclose(fit.means, ref_mu, rtol=0, atol=2e-5 * np.abs(ref_mu).max())
    np.testing.assert_allclose(fit.covariances, ref_var, rtol=2e-5)
    np.testing.assert_allclose(fit.priors, ref_w, rtol=2e-5)
    assert np.abs(fit.means - start[0]).max() > 0.05  # EM moved: the check is not start == start
    assert fit.mean_loglikelihood == pytest.approx(mean_loglik(X, fit.means, fit.covariances, fit.priors),
                                                   abs=1e-5)


def test_zero_iterations_returns_the_bounded_start_and_its_loglikelihood(simd, overlapping):
    X, (mu, var, w) = overlapping
    var = var.copy()
    var[2, 1] = 0.01  # below the bound
    start = tuple(np.asarray(a, np.float32) for a in (mu, var, w))
    fit = simd.gmm(X, 6, max_iterations=0, init=start, covariance_bound=0.25)
    assert fit.iterations == 0 and not fit.converged
    np.testing.assert_array_equal(fit.means, start[0])
    np.testing.assert_array_equal(fit.priors, start[2])
    np.testing.assert_array_equal(fit.covariances, np.maximum(start[1], np.float32(0.25)))
    assert fit.mean_loglikelihood == pytest.approx(mean_loglik(X, *start[:1], fit.covariances, start[2]), abs=1e-5)


def test_iterations_count_m_steps_until_the_cap(simd, overlapping):
    X, _ = overlapping
    fit = simd.gmm(X, 6, max_iterations=3, init="rand")
    assert fit.iterations == 3 and not fit.converged
    longer = simd.gmm(X, 6, max_iterations=4, init="rand")
    assert longer.mean_loglikelihood >= fit.mean_loglikelihood - 1e-6  # EM does not lower the likelihood


def test_seed_makes_the_random_start_reproducible(simd, overlapping):
    X, _ = overlapping
    a = simd.gmm(X, 6, max_iterations=2, init="rand", seed=9)
    b = simd.gmm(X, 6, max_iterations=2, init="rand", seed=9)
    c = simd.gmm(X, 6, max_iterations=2, init="rand", seed=10)
    np.testing.assert_array_equal(a.means, b.means)
    assert a.loglikelihood == b.loglikelihood
    assert not np.array_equal(a.means, c.means)


def test_default_seed_is_a_fresh_threads_generator(simd, overlapping, tmp_path):
    """seed=None continues VLFeat's generator; in a fresh process that is the default seed's result."""
    X, _ = overlapping
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import _vlfeat; "
            "X = np.load(sys.argv[3]); f = _vlfeat.VLFeat(sys.argv[2], threads=1).gmm(X, 6, max_iterations=2, "
            "seed=None); sys.stdout.write(f.means.tobytes().hex())")
    np.save(tmp_path / "X.npy", X)
    out = subprocess.run([sys.executable, "-c", code, str(BENCH), str(LIBRARY), str(tmp_path / "X.npy")],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    fresh = np.frombuffer(bytes.fromhex(out), np.float32).reshape(6, 4)
    np.testing.assert_array_equal(fresh, simd.gmm(X, 6, max_iterations=2).means)


def test_printf_hook_is_restored(simd, overlapping):
    X, _ = overlapping
    before = simd._lib.vl_get_printf_func()
    simd.gmm(X, 6, max_iterations=1)
    assert simd._lib.vl_get_printf_func() == before


@pytest.mark.parametrize("call, match", [
    (lambda vl, X, s: vl.gmm(X[:0], 2), r"N, D >= 1"),
    (lambda vl, X, s: vl.gmm(X[:5], 6), r"1 <= K <= N = 5"),
    (lambda vl, X, s: vl.gmm(X, 0), r"1 <= K <= N"),
    (lambda vl, X, s: vl.gmm(np.where(X == X[3, 2], np.nan, X), 6), r"X: expected finite values"),
    (lambda vl, X, s: vl.gmm(X, 6, max_iterations=-1), r"max_iterations: expected an integer >= 0"),
    (lambda vl, X, s: vl.gmm(X, 6, init="custom"), r"init: expected 'rand', 'kmeans' or \(means"),
    (lambda vl, X, s: vl.gmm(X, 6, init=s[:2]), r"got 2 arrays"),
    (lambda vl, X, s: vl.gmm(X, 6, init=(s[0][:5], s[1], s[2])), r"init means: expected shape \(6, 4\)"),
    (lambda vl, X, s: vl.gmm(X, 6, init=(s[0], -s[1], s[2])), r"init covariances: expected finite values > 0"),
    (lambda vl, X, s: vl.gmm(X, 6, init=(s[0], s[1], 0 * s[2])), r"init priors: expected finite values > 0"),
    (lambda vl, X, s: vl.gmm(X, 6, covariance_bound=[0.1, 0.2]), r"covariance_bound: expected a float or \(4,\)"),
    (lambda vl, X, s: vl.gmm(X, 6, covariance_bound=-1.0), r"covariance_bound"),
    (lambda vl, X, s: vl.gmm(X, 6, seed=2 ** 32), r"seed: expected None or an integer"),
])
def test_refuses_what_would_crash_or_be_misread(simd, overlapping, call, match):
    X, start = overlapping
    with pytest.raises(ValueError, match=match):
        call(simd, X, start)


def test_per_dimension_bounds_apply_per_dimension(simd, overlapping):
    X, (mu, var, w) = overlapping
    bounds = np.array([0.0, 5.0, 0.0, 0.0])
    fit = simd.gmm(X, 6, max_iterations=2, init=(mu, var, w), covariance_bound=bounds)
    assert (fit.covariances[:, 1] == 5.0).all()
    assert (fit.covariances[:, [0, 2, 3]] < 5.0).all()
