"""Permutation of F contrasts (Freedman-Lane, as PALM), on the real wager2008 maps.

The null maxima are checked against a brute-force reference that builds each
resampled data set explicitly (``Y* = P R_Z Y + H_Z Y``), refits the full OLS
model and computes the textbook F, its clusters and TFCE; a rank-1 F must give
the squared two-sided t maxima; 30 null experiments on real maps check the
family-wise error rate.
"""
import math

import numpy as np
import pytest
from scipy import ndimage, stats

from bids_app.estimation.ols import OLSEstimator
from bids_app.inference.permutation import draw_resamplings, permutation_test
from test_inference_permutation import assert_fwe_calibrated, brute_force_tfce, downsampled


@pytest.fixture(scope="module")
def group(wager_group):
    return wager_group


def _design(group, extra=None):
    n = group.Y.shape[0]
    cov = group.participants[["X_RVLPFC", "Y_Reappraisal_Success"]].to_numpy()
    cov = (cov - cov.mean(0)) / cov.std(0)
    return np.column_stack([np.ones(n), cov] + ([] if extra is None else [extra]))


def _textbook_f(Y, X, C):
    """F of C beta = 0 from an explicit OLS fit of every column of Y."""
    beta, *_ = np.linalg.lstsq(X, Y, rcond=None)
    resid = Y - X @ beta
    dof = X.shape[0] - np.linalg.matrix_rank(X)
    sigma2 = (resid**2).sum(0) / dof
    effect = C @ beta
    middle = np.linalg.inv(C @ np.linalg.inv(X.T @ X) @ C.T)
    return np.einsum("iv,ij,jv->v", effect, middle, effect) / np.linalg.matrix_rank(C) / sigma2


def test_observed_f_is_the_ols_f(group):
    X = _design(group)
    C = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    result = permutation_test(group.Y, X, C, n_perm=3, seed=0)
    reference = OLSEstimator().fit(group.Y, X).contrast(C, "F")
    np.testing.assert_allclose(result.t, reference.stat, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.t, _textbook_f(group.Y, X, C), rtol=1e-9, atol=1e-12)
    assert result.info["statistic"] == "F" and result.info["rank"] == 2
    assert result.info["nuisance"] == "Freedman-Lane" and result.info["scheme"] == "permutation"


@pytest.mark.parametrize("rows", [[[0, 1, 0], [0, 0, 1]], [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]],
                         ids=["rank 2", "rank 3"])
def test_null_maxima_equal_brute_force_freedman_lane(group, rows):
    """Each draw redone by hand: permuted reduced-model residuals + fitted reduced model, full refit."""
    n, n_perm, seed, z_forming = group.Y.shape[0], 3, 11, 2.3
    extra = np.random.default_rng(4).standard_normal(n) if len(rows) == 3 else None
    X, C = _design(group, extra), np.asarray(rows, dtype=float)
    result = permutation_test(group.Y, X, C, group.mask, n_perm=n_perm, seed=seed,
                              cluster_threshold=z_forming, tfce=True)
    perms = draw_resamplings(n, n_perm, np.random.default_rng(seed), sign_flip=False)
    Z = X @ np.linalg.svd(C)[2][np.linalg.matrix_rank(C):].T      # X @ null(C)
    fitted = Z @ np.linalg.lstsq(Z, group.Y, rcond=None)[0]
    residuals = group.Y - fitted
    dof, rank = n - X.shape[1], len(rows)
    f_forming = stats.f.isf(stats.norm.sf(z_forming), rank, dof)
    assert result.info["cluster_threshold_F"] == pytest.approx(f_forming)
    faces = ndimage.generate_binary_structure(3, 1)
    for b, perm in enumerate(perms):
        f = _textbook_f(residuals[np.argsort(perm)] + fitted, X, C)
        assert result.null["max_t"][b] == pytest.approx(f.max(), rel=1e-4)
        volume = group.volume(f)
        label, count = ndimage.label(volume > f_forming, faces)
        sizes = np.bincount(label.ravel())[1:]
        assert result.null["max_size"][b] == sizes.max(initial=0)
        assert result.null["max_mass"][b] == pytest.approx(
            max(ndimage.sum(volume - f_forming, label, range(1, count + 1)), default=0.0), rel=1e-3)
        assert result.null["max_tfce"][b] == pytest.approx(brute_force_tfce(volume, 0.1).max(), rel=1e-3)
    # the observed F's clusters and TFCE get FWE p-values in (0, 1]
    assert result.logp_max_size.max() > 0 and np.isfinite(result.logp_max_tfce).all()


def test_f_testing_the_constant_permutes_and_flips_signs(group):
    """Intercept and a covariate tested together: each draw permutes rows and flips signs (EE + ISE)."""
    n, n_perm, seed = group.Y.shape[0], 4, 5
    X = _design(group)
    C = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    result = permutation_test(group.Y, X, C, n_perm=n_perm, seed=seed)
    assert result.info["scheme"] == "permutation and sign-flip" and result.info["nuisance"] == "Freedman-Lane"
    rng = np.random.default_rng(seed)
    perms = draw_resamplings(n, n_perm, rng, sign_flip=False)
    signs = draw_resamplings(n, n_perm, rng, sign_flip=True)
    Z = X[:, [2]]
    fitted = Z @ np.linalg.lstsq(Z, group.Y, rcond=None)[0]
    residuals = group.Y - fitted
    for b in range(n_perm):
        inverse = np.argsort(perms[b])
        f = _textbook_f((signs[b][:, None] * residuals)[inverse] + fitted, X, C)
        assert result.null["max_t"][b] == pytest.approx(f.max(), rel=1e-4)
    # the strong group mean is found (rows permuted alone keep it in every draw)
    assert result.logp_max_t.max() == pytest.approx(np.log10(n_perm + 1))
    assert result.info["n_possible"] == 2**n * math.factorial(n)


def test_rank_one_f_is_the_squared_two_sided_t(group):
    X = _design(group)
    t = permutation_test(group.Y, X, [0.0, 1.0, 0.0], n_perm=40, seed=3, two_sided=True)
    f = permutation_test(group.Y, X, [[0.0, 1.0, 0.0]], n_perm=40, seed=3)
    np.testing.assert_allclose(f.t, t.t**2, rtol=1e-9)
    np.testing.assert_allclose(f.null["max_t"], t.null["max_t"] ** 2, rtol=1e-4)
    np.testing.assert_allclose(f.logp_max_t, t.logp_max_t, atol=1e-12)
    # a rank-1 F of a constant regressor is tested by sign flips, as its t is
    one = np.ones((group.Y.shape[0], 1))
    assert permutation_test(group.Y, one, [[1.0]], n_perm=5).info["scheme"] == "sign-flip"


def test_f_null_familywise_error_is_controlled(group):
    """30 null experiments on real maps (two random covariates, F on both): FWE p is calibrated."""
    Y, mask = downsampled(group, factor=3)
    n = Y.shape[0]
    assert_fwe_calibrated(Y, mask, lambda rng: np.column_stack([np.ones(n), rng.standard_normal((n, 2))]),
                          [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], seed=808)
