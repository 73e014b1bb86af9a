"""Fisher vectors against a naive float64 reference written here (VLFeat's formulas), every option, 1e-5."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from idtfv.encoding.fisher import fisher_vector, fisher_vectors_cells, normalize_fisher
from idtfv.encoding.gmm import DiagGMM
from idtfv.errors import ParameterError


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """One BLAS thread: the results do not depend on it, and on a busy 2-core machine threads only spin."""
    with threadpool_limits(1):
        yield


def naive_fisher(X, mu, var, w, *, square_root=True, normalized=True, hard=False):
    """VLFeat vl_fisher, written out: dense posteriors, u_k, v_k, [u_1..u_K, v_1..v_K], sqrt, L2 (floor 1e-12)."""
    X = np.asarray(X, np.float64)
    mu = np.asarray(mu, np.float64)
    var = np.asarray(var, np.float64)
    w = np.asarray(w, np.float64)
    N, D = X.shape
    K = mu.shape[0]
    if N == 0:
        return np.zeros(2 * K * D)
    diff = X[:, None, :] - mu[None]
    ll = np.log(w)[None] - 0.5 * np.log(var).sum(1)[None] - 0.5 * (diff ** 2 / var[None]).sum(2)
    p = np.exp(ll - ll.max(1, keepdims=True))
    q = p / p.sum(1, keepdims=True)
    if hard:  # VLFeat's Fast flag: posterior 1 for the most likely component, 0 elsewhere
        q = (np.arange(K)[None] == q.argmax(1)[:, None]).astype(np.float64)
    z = diff / np.sqrt(var)[None]
    u = np.einsum("nk,nkd->kd", q, z) / (N * np.sqrt(w)[:, None])
    v = np.einsum("nk,nkd->kd", q, z ** 2 - 1) / (N * np.sqrt(2 * w)[:, None])
    f = np.concatenate([u.ravel(), v.ravel()])
    if square_root:
        f = np.sign(f) * np.sqrt(np.abs(f))
    if normalized:
        f = f / max(np.linalg.norm(f), 1e-12)
    return f


def make_gmm(rng, K=12, D=6, spread=2.0):
    mu = (rng.normal(size=(K, D)) * spread).astype(np.float32)
    var = rng.uniform(0.3, 2.0, (K, D)).astype(np.float32)
    w = rng.dirichlet(np.ones(K) * 2)
    return mu, var, w


def draw(rng, mu, var, w, n):
    z = rng.choice(len(w), n, p=w)
    return (mu[z] + rng.normal(size=(n, mu.shape[1])) * np.sqrt(var[z])).astype(np.float32)


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    mu, var, w = make_gmm(rng)
    X = draw(rng, mu, var, w, 700)
    return X, (mu, var, w)


@pytest.mark.parametrize("sq,nz", [(True, True), (False, False), (True, False), (False, True)])
def test_matches_naive_every_normalisation(setup, sq, nz):
    X, (mu, var, w) = setup
    got = fisher_vector(X, (mu, var, w), square_root=sq, normalized=nz)
    ref = naive_fisher(X, mu, var, w, square_root=sq, normalized=nz)
    assert got.dtype == np.float32 and got.shape == (2 * 12 * 6,)
    scale = 1.0 if nz else np.abs(ref).max()
    np.testing.assert_allclose(got, ref, atol=1e-5 * scale, rtol=0)


def test_improved_is_default_and_layout_u_then_v(setup):
    X, (mu, var, w) = setup
    plain = fisher_vector(X, (mu, var, w), improved=False)
    K, D = mu.shape
    # u_k block k: 1/(N sqrt(pi_k)) sum_i q_ik (x_i - mu_k)/sigma_k; check block 3 of u and of v separately.
    ref = naive_fisher(X, mu, var, w, square_root=False, normalized=False)
    np.testing.assert_allclose(plain[3 * D:4 * D], ref[3 * D:4 * D], atol=1e-5 * np.abs(ref).max())
    np.testing.assert_allclose(plain[K * D + 3 * D:K * D + 4 * D], ref[K * D + 3 * D:K * D + 4 * D],
                               atol=1e-5 * np.abs(ref).max())
    improved = fisher_vector(X, (mu, var, w))
    np.testing.assert_allclose(improved, normalize_fisher(plain.copy()), atol=1e-6)
    assert abs(np.linalg.norm(improved) - 1) < 1e-5


def test_fast_option_is_hard_assignment(setup):
    X, (mu, var, w) = setup
    got = fisher_vector(X, (mu, var, w), fast=True)
    ref = naive_fisher(X, mu, var, w, hard=True)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    exact = naive_fisher(X, mu, var, w)
    assert np.abs(ref - exact).max() > 1e-6  # the option really changes something on this data


def test_realistic_dimensions_and_far_descriptors():
    """D=48, K=64, with descriptors far from every component (huge log-likelihood gaps, no underflow)."""
    rng = np.random.default_rng(1)
    mu, var, w = make_gmm(rng, K=64, D=48, spread=1.0)
    X = draw(rng, mu, var, w, 400)
    X[:20] *= 6.0
    got = fisher_vector(X, (mu, var, w))
    ref = naive_fisher(X, mu, var, w)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_collapsed_component_with_huge_screen_terms():
    """A narrow component far from the origin makes the GEMM screen's terms cancel at ~1e6: still exact."""
    rng = np.random.default_rng(3)
    mu, var, w = make_gmm(rng, K=32, D=96, spread=1.0)
    mu[0] = 5.0
    var[0] = 1e-4
    X = draw(rng, mu, var, w, 300)
    X[:5] = mu[0] + rng.normal(size=(5, 96)).astype(np.float32) * 0.01
    np.testing.assert_allclose(fisher_vector(X, (mu, var, w)), naive_fisher(X, mu, var, w), atol=1e-5)


@pytest.mark.parametrize("offset", [0.0, 40.0, 100.0])
def test_sufficient_statistics_survive_offset_means(offset):
    """u_k, v_k come from S0, S1 = sum q x, S2 = sum q x^2 (float64 for q >= 1e-6, float32 below): means far from
    the origin relative to sigma (mu^2 / sigma^2 ~ 5e3 at offset 40) cancel digits in S2 - 2 mu S1 + mu^2 S0, and
    overlapping components give many posteriors on both sides of the float32/float64 split. Still 1e-5."""
    rng = np.random.default_rng(5)
    mu, var, w = make_gmm(rng, K=24, D=16, spread=0.7)
    mu += np.float32(offset)
    X = draw(rng, mu, var, w, 3000)
    for plain in (True, False):
        got = fisher_vector(X, (mu, var, w), improved=not plain)
        ref = naive_fisher(X, mu, var, w, square_root=not plain, normalized=not plain)
        np.testing.assert_allclose(got, ref, atol=1e-5 * (np.abs(ref).max() if plain else 1.0), rtol=0)
    # the data really puts posteriors in the float32 range (1e-13 .. 1e-6 of the best) and in the float64 one
    Xd = X.astype(np.float64)
    ll = -0.5 * (((Xd[:, None] - mu[None]) ** 2) / var[None]).sum(2) - 0.5 * np.log(var).sum(1) + np.log(w)
    q = np.exp(ll - ll.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    assert ((q > 1e-12) & (q < 1e-6)).sum() > len(X) and ((q >= 1e-6) & (q < 0.5)).sum() > len(X) // 10


def test_cells_equal_per_cell_fisher_vectors(setup):
    X, (mu, var, w) = setup
    rng = np.random.default_rng(2)
    cells = np.stack([np.zeros(len(X), int), 1 + rng.integers(0, 3, len(X))], 1)
    cells[:5, 1] = -1  # skipped in grid 2
    F = fisher_vectors_cells(X, (mu, var, w), cells, 5)
    assert F.shape == (5, 2 * 12 * 6)
    np.testing.assert_allclose(F[0], naive_fisher(X, mu, var, w), atol=1e-5)
    for c in (1, 2, 3):
        np.testing.assert_allclose(F[c], naive_fisher(X[cells[:, 1] == c], mu, var, w), atol=1e-5)
    assert not F[4].any()  # empty cell: zeros


def test_empty_input_zero_prior_and_determinism(setup):
    X, (mu, var, w) = setup
    assert not fisher_vector(X[:0], (mu, var, w)).any()
    w0 = w.copy()
    w0[0] = 0.0
    w0 /= w0.sum()
    f = fisher_vector(X, (mu, var, w0))
    assert np.isfinite(f).all() and not f[: mu.shape[1]].any()
    a = fisher_vector(X, (mu, var, w))
    b = fisher_vector(X.copy(), (mu.copy(), var.copy(), w.copy()))
    assert a.tobytes() == b.tobytes()


def test_accepts_fitted_gmm_and_rejects_bad_input(setup):
    X, (mu, var, w) = setup
    g = DiagGMM.from_params(mu, var, w)
    np.testing.assert_array_equal(fisher_vector(X, g), fisher_vector(X, (mu, var, w)))
    with pytest.raises(ParameterError, match=r"\(N, 6\)"):
        fisher_vector(X[:, :5], g)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ParameterError, match="NaN"):
        fisher_vector(bad, g)


@pytest.mark.skipif(importlib.util.find_spec("cyvlfeat") is None, reason="cyvlfeat (VLFeat) not installed")
@pytest.mark.parametrize("opts", [dict(improved=True), dict(improved=False), dict(normalized=True),
                                  dict(square_root=True), dict(fast=True), dict(fast=True, improved=True)])
def test_matches_vlfeat(setup, opts):
    """VLFeat itself (cyvlfeat's vl_fisher, (N, D) / (K, D) row-major arrays) is the reference for every option."""
    from cyvlfeat.fisher import fisher as vl_fisher

    X, (mu, var, w) = setup
    ref = np.asarray(vl_fisher(X, mu, var, w.astype(np.float32), **opts)).ravel()
    ours = {"improved": False, **opts}  # our improved defaults to True, VLFeat's to False
    got = fisher_vector(X, (mu, var, w), **ours)
    np.testing.assert_allclose(got, ref, atol=1e-5)


# ------------------------------------------------------------------------------------------------ kernel pieces
def test_vector_intrinsics_match_scalar_loops():
    """``ge_mask64`` / ``max_row16`` (16-lane LLVM vectors) give the scalar loops' bits and maxima, with infinities,
    ties and rows whose width is not a multiple of 16 (``_row_max``'s scalar tail)."""
    from numba import njit

    from idtfv.encoding._bits_nb import ge_mask64
    from idtfv.encoding._posterior_nb import _row_max

    @njit
    def masks(S, thr):
        out = np.empty((S.shape[0], S.shape[1] // 64), np.uint64)
        for i in range(S.shape[0]):
            for b in range(S.shape[1] // 64):
                out[i, b] = ge_mask64(S, i, 64 * b, thr[i])
        return out

    @njit
    def maxima(S):
        out = np.empty(S.shape[0], np.float32)
        for i in range(S.shape[0]):
            out[i] = _row_max(S, i)
        return out

    rng = np.random.default_rng(3)
    for K in (256, 100, 12, 17):
        S = rng.normal(size=(50, K)).astype(np.float32)
        thr = np.quantile(S, 0.7, axis=1).astype(np.float32)
        S[0] = -np.inf
        S[1, K // 2] = np.inf
        S[2] = np.round(S[2])  # ties
        S[3, -1] = 50.0  # the maximum in the scalar tail
        np.testing.assert_array_equal(maxima(S), S.max(1))
        if K >= 64:
            thr[4] = np.float32(S[4, 5])  # equality counts
            bits = S[:, :K - K % 64] >= thr[:, None]
            want = np.packbits(bits.reshape(50, -1, 64), axis=-1, bitorder="little").view(np.uint64)[..., 0]
            np.testing.assert_array_equal(masks(S, thr), want)


def test_padded_statistics_equal_unpadded():
    """The kernel's statistics with SIMD-padded rows (``stats_width``) are bit-identical to 2D-wide ones, and the
    padding columns stay zero."""
    from idtfv.encoding import _posterior_nb as nb
    from idtfv.encoding._gaussians import (EXACT_WINDOW, LOG_POSTERIOR_CLAMP, SCREEN_MARGIN_ABS, SCREEN_MARGIN_REL,
                                           PreparedGMM, iter_screens)
    from idtfv.encoding.fisher import SMALL_POSTERIOR

    rng = np.random.default_rng(4)
    mu, var, w = make_gmm(rng, K=70, D=15)
    X = draw(rng, mu, var, w, 3000)
    g = PreparedGMM.from_params(mu, var, w)
    cells = np.zeros((len(X), 1), np.int64)
    out = []
    for P in (30, nb.stats_width(15)):
        S0, S12, T12, counts = np.zeros(70), np.zeros((70, P)), np.zeros((70, P), np.float32), np.zeros(1)
        for start, xb, screen in iter_screens(X, g):
            T12.fill(0.0)
            nb.fisher_block(xb, screen, g.means, g.inv_var, g.log_const, g.a_max, g.b_max, g.c_max,
                            LOG_POSTERIOR_CLAMP, EXACT_WINDOW, SCREEN_MARGIN_ABS, SCREEN_MARGIN_REL, SMALL_POSTERIOR,
                            False, cells[start:start + len(xb)], S0, S12, T12, counts)
            S12 += T12
        out.append((S0, S12))
    assert nb.stats_width(15) == 32 and nb.stats_width(48) == 96 and nb.stats_width(213) == 432
    assert out[0][0].tobytes() == out[1][0].tobytes()
    assert out[0][1].tobytes() == np.ascontiguousarray(out[1][1][:, :30]).tobytes()
    assert not out[1][1][:, 30:].any()


def test_component_counts_off_the_vector_width(setup):
    """K = 100 (blocks of 64 and 16 plus remainders) and K = 12 (no full vector) match the naive float64 FV."""
    rng = np.random.default_rng(5)
    for K, D in ((100, 9), (12, 6)):
        mu, var, w = make_gmm(rng, K=K, D=D)
        X = draw(rng, mu, var, w, 2500)
        np.testing.assert_allclose(fisher_vector(X, (mu, var, w)), naive_fisher(X, mu, var, w), atol=1e-5)
