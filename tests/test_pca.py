"""Descriptor PCA against a naive SVD, whitening, deterministic signs, codebook round trip."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

from idtfv.encoding.codebook_io import load_model, save_model
from idtfv.encoding.pca import DescriptorPCA
from idtfv.idt import DescriptorLayout
from idtfv.errors import FormatError, ParameterError

CHANNEL_DIMS = DescriptorLayout().channel_widths  # the reference options' widths


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """One BLAS thread: the results do not depend on it, and on a busy 2-core machine threads only spin."""
    with threadpool_limits(1):
        yield


def correlated(rng, n, D):
    A = rng.normal(size=(D, D)) * np.linspace(3, 0.1, D)[None]
    return (rng.normal(size=(n, D)) @ A.T + 5.0).astype(np.float32)


@pytest.mark.parametrize("channel", list(CHANNEL_DIMS))
def test_half_dimensions_matches_naive_svd(channel):
    D = CHANNEL_DIMS[channel]
    rng = np.random.default_rng(D)
    X = correlated(rng, 600, D)
    p = DescriptorPCA().fit(X)
    Y = p.transform(X)
    assert Y.shape == (600, D // 2) and Y.dtype == np.float32
    Xc = X.astype(np.float64) - X.astype(np.float64).mean(0)
    _, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    V = Vt[: D // 2]
    V *= np.sign(V[np.arange(D // 2), np.abs(V).argmax(1)])[:, None]  # the documented sign convention
    np.testing.assert_allclose(p.components_, V, atol=1e-6)
    np.testing.assert_allclose(p.explained_variance_, s[: D // 2] ** 2 / 599, rtol=1e-8)
    np.testing.assert_allclose(Y, Xc @ V.T, atol=2e-4 * np.abs(Y).max())
    # same variances and leading directions as scikit-learn (up to sign)
    sk = PCA(D // 2, svd_solver="full").fit(X.astype(np.float64))
    np.testing.assert_allclose(sk.explained_variance_, p.explained_variance_, rtol=1e-6)
    np.testing.assert_allclose(np.abs(sk.components_[:5] @ p.components_[:5].T), np.eye(5), atol=1e-5)


def test_whitening_gives_unit_variance_and_signs_are_stable():
    rng = np.random.default_rng(0)
    X = correlated(rng, 2000, 20)
    p = DescriptorPCA(8, whiten=True).fit(X)
    Y = p.transform(X).astype(np.float64)
    np.testing.assert_allclose(np.cov(Y.T), np.eye(8), atol=1e-3)
    q = DescriptorPCA(8, whiten=True).fit(X[::-1].copy())  # same data, other order: same bytes after fit
    np.testing.assert_allclose(q.components_, p.components_, atol=1e-9)
    big = np.abs(p.components_).argmax(1)
    assert (p.components_[np.arange(8), big] > 0).all()


def test_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    X = correlated(rng, 300, 12)
    p = DescriptorPCA(whiten=True).fit(X)
    save_model(tmp_path / "pca_hog", p, seed=3)
    q = load_model(tmp_path / "pca_hog", expect="DescriptorPCA")
    assert p.transform(X).tobytes() == q.transform(X).tobytes()
    assert (tmp_path / "pca_hog.json").read_text().count('"whiten": true') == 1
    with pytest.raises(FormatError, match="expected a DiagGMM"):
        load_model(tmp_path / "pca_hog", expect="DiagGMM")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(FormatError, match="bad.json"):
        load_model(tmp_path / "bad")
    with pytest.raises(ParameterError, match="n_components"):
        DescriptorPCA(13).fit(X)
    with pytest.raises(ParameterError, match="fitted on 12-dim"):
        p.transform(X[:, :5])


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_transform_in_place_gives_the_same_bits(dtype):
    """``overwrite_input`` (the encode stage's descriptors read from a file) centres in place: the projection is
    the copying one's bit for bit; only a float32 input is overwritten, and only when asked."""
    rng = np.random.default_rng(3)
    X = np.abs(rng.normal(size=(3000, 96))).astype(dtype)
    pca = DescriptorPCA(n_components=48).fit(X.astype(np.float32))
    kept = X.copy()
    ref = pca.transform(X)
    assert np.array_equal(X, kept)  # not asked: untouched
    # an independent reference of the arithmetic: float32 centring, then the float32 product
    W = pca._projection()
    np.testing.assert_array_equal(ref, (kept.astype(np.float32) - pca.mean_.astype(np.float32)) @ W)
    got = pca.transform(X, overwrite_input=True)
    np.testing.assert_array_equal(got, ref)
    if dtype == np.float32:
        np.testing.assert_array_equal(X, kept - pca.mean_.astype(np.float32))  # it was centred in place
    else:
        assert np.array_equal(X, kept)  # converted into a copy: the caller's array stays
