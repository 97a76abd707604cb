"""MixedEffectsEstimator against an independent per-voxel likelihood maximisation.

The reference below writes the exact (restricted) negative log-likelihood
in the original design ``X`` (no basis change, no derivatives) and minimises
it with scipy per voxel; it shares no code with bids_app.estimation.mixed.
"""
import numpy as np
import pytest
from scipy import stats
from scipy.optimize import minimize_scalar

from bids_app.errors import DesignError
from bids_app.estimation.mixed import MixedEffectsEstimator, log_likelihood, score, tau2_upper_bound

RTOL = 1e-4  # required agreement with the reference (beta, t, F; tau2 away from 0)


def _neg_loglik(tau2, y, s2, X, method):
    """Exact -log L (constants dropped) of y ~ N(X b, diag(s2 + tau2)), b profiled out."""
    v = s2 + tau2
    w = 1.0 / v
    xtwx = X.T @ (w[:, None] * X)
    b = np.linalg.solve(xtwx, X.T @ (w * y))
    r = y - X @ b
    nll = 0.5 * (np.sum(np.log(v)) + np.sum(w * r * r))
    if method == "reml":
        nll += 0.5 * np.linalg.slogdet(xtwx)[1]
    return nll


def _reference(y, s2, X, method, contrasts):
    """Global minimiser of -log L over tau2 >= 0, then the WLS contrasts there.

    A grid over [0, 10 (var(y) + max s2)] locates the global minimum; bounded
    Brent refines it between the neighbouring grid points.
    """
    top = 10 * (np.var(y) + s2.max())
    grid = np.concatenate([[0.0], np.geomspace(1e-8 * s2.mean(), top, 150)])
    values = [_neg_loglik(t, y, s2, X, method) for t in grid]
    k = int(np.argmin(values))
    low, high = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
    res = minimize_scalar(
        _neg_loglik, bounds=(low, high), args=(y, s2, X, method), method="bounded",
        options={"xatol": 1e-12 * (high + s2.mean()), "maxiter": 1000},
    )
    tau2 = res.x if res.fun < values[k] else grid[k]
    assert tau2 < top / 10  # the search range was wide enough
    w = 1.0 / (s2 + tau2)
    cov = np.linalg.inv(X.T @ (w[:, None] * X))
    beta = cov @ X.T @ (w * y)
    out = {"tau2": tau2, "beta": beta}
    for name, (C, test) in contrasts.items():
        C = np.atleast_2d(C)
        effect = C @ beta
        ccov = C @ cov @ C.T
        if test == "t":
            out[name] = effect[0] / np.sqrt(ccov[0, 0])
        else:
            out[name] = effect @ np.linalg.solve(ccov, effect) / C.shape[0]
    return out


@pytest.fixture(scope="module")
def pain21(pain21_maps):
    """Real effect and variance maps of 21 studies (float32, as stored), in the >= 10-studies mask."""
    effects, variances, participants = pain21_maps
    return effects.astype(np.float32), variances.astype(np.float32), participants


def _sample(Y, S2, size=200, seed=0):
    """Random in-mask voxels where all 21 studies have data (variance > 0)."""
    complete = np.flatnonzero(np.all(S2 > 0, axis=0))
    return np.sort(np.random.default_rng(seed).choice(complete, size, replace=False))


def _close(ours, reference, rtol, atol):
    """Elementwise |ours - reference| <= rtol |reference| + atol, with the worst case."""
    diff = np.abs(ours - reference)
    worst = float(np.max(diff / (np.abs(reference) + atol / rtol)))
    return np.all(diff <= rtol * np.abs(reference) + atol), worst


def _compare_with_reference(Y, S2, X, method, contrasts):
    fit = MixedEffectsEstimator(method, chunk_bytes=2**15).fit(Y, X, S2)  # several chunks
    assert fit.info["converged"].all()
    results = {name: fit.contrast(C, test) for name, (C, test) in contrasts.items()}
    for v in range(Y.shape[1]):
        y, s2 = Y[:, v].astype(float), S2[:, v].astype(float)
        ref = _reference(y, s2, X, method, contrasts)
        scale = s2.mean()
        ok, worst = _close(fit.tau2[v], ref["tau2"], RTOL, 1e-6 * scale)
        assert ok, ("tau2", v, fit.tau2[v], ref["tau2"], worst)
        se = np.sqrt(scale / len(y))
        ok, worst = _close(fit.beta[:, v], ref["beta"], RTOL, 1e-6 * se)
        assert ok, ("beta", v, fit.beta[:, v], ref["beta"], worst)
        for name, result in results.items():
            ok, worst = _close(result.stat[v], ref[name], RTOL, 1e-8)
            assert ok, (name, v, result.stat[v], ref[name], worst)
    return fit, results


@pytest.mark.parametrize("method", ["reml", "ml"])
def test_one_sample_matches_reference_on_pain21(pain21, method):
    Y, S2, _ = pain21
    voxels = _sample(Y, S2)
    X = np.ones((21, 1))
    fit, results = _compare_with_reference(
        Y[:, voxels], S2[:, voxels], X, method, {"mean": (np.array([1.0]), "t")}
    )
    # Not a vacuous comparison: both interior and boundary solutions occur,
    # and the data hold strong effects.
    assert (fit.tau2 == 0).sum() >= 3 and (fit.tau2 > 0).sum() >= 150
    assert np.abs(results["mean"].stat).max() > 5
    assert results["mean"].dof == 20


def test_covariate_model_matches_reference_on_pain21(pain21):
    Y, S2, participants = pain21
    voxels = _sample(Y, S2, seed=1)
    size = participants["n_subjects_in_study"].to_numpy(float)
    X = np.column_stack([np.ones(21), size - size.mean()])
    contrasts = {
        "slope": (np.array([0.0, 1.0]), "t"),
        "both": (np.eye(2), "F"),
    }
    _, results = _compare_with_reference(Y[:, voxels], S2[:, voxels], X, "reml", contrasts)
    assert results["both"].dof_num == 2 and results["both"].dof == 19


@pytest.mark.parametrize("method", ["reml", "ml"])
def test_unequal_variances_match_reference_in_memory(method):
    """Simulated studies with unequal known variances, some voxels with between-study
    variance and some without, a covariate: tau2, beta, t and F equal the reference."""
    rng = np.random.default_rng(9)
    n, v = 15, 40
    S2 = rng.uniform(0.2, 2.0, (n, v))
    tau2 = np.where(np.arange(v) % 2, rng.uniform(0.5, 3.0, v), 0.0)
    x = rng.normal(size=n)
    X = np.column_stack([np.ones(n), x - x.mean()])
    Y = 0.8 + 0.5 * X[:, [1]] + rng.normal(size=(n, v)) * np.sqrt(S2 + tau2)
    contrasts = {"slope": (np.array([0.0, 1.0]), "t"), "both": (np.eye(2), "F")}
    fit, results = _compare_with_reference(Y, S2, X, method, contrasts)
    assert 5 < (fit.tau2 == 0).sum() < v - 5  # both regimes: boundary and interior
    assert results["slope"].dof == n - 2 and results["both"].dof_num == 2


def test_equal_variances_have_closed_forms():
    """With s2_i = s for all i and X = 1: REML tau2 = var(y, ddof=1) - s (truncated at 0),
    ML tau2 = var(y, ddof=0) - s, and where tau2 > 0 the REML t is the one-sample t-test."""
    rng = np.random.default_rng(5)
    n, v = 12, 400
    s = rng.uniform(0.5, 2.0, size=v)
    Y = rng.normal(0.3, 1.0, size=(n, v)) * rng.uniform(0.5, 2, size=v)
    S2 = np.broadcast_to(s, (n, v))
    X = np.ones((n, 1))
    reml = MixedEffectsEstimator("reml").fit(Y, X, S2)
    ml = MixedEffectsEstimator("ml").fit(Y, X, S2)
    expected_reml = np.maximum(0, Y.var(axis=0, ddof=1) - s)
    expected_ml = np.maximum(0, Y.var(axis=0, ddof=0) - s)
    np.testing.assert_allclose(reml.tau2, expected_reml, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ml.tau2, expected_ml, rtol=1e-7, atol=1e-9)
    assert 20 < (expected_reml == 0).sum() < v - 20  # both regimes are tested
    interior = expected_reml > 0
    t = reml.contrast([1.0], "t")
    np.testing.assert_allclose(
        t.stat[interior], stats.ttest_1samp(Y[:, interior], 0.0).statistic, rtol=1e-7
    )
    np.testing.assert_allclose(t.p, stats.t.sf(t.stat, n - 1), rtol=1e-6)


@pytest.mark.parametrize("method", ["reml", "ml"])
def test_derivatives_match_finite_differences(method):
    """score and -l'' of log_likelihood against central differences of l."""
    rng = np.random.default_rng(9)
    n, v = 14, 50
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.normal(size=n)])
    Q = np.linalg.svd(X, full_matrices=False)[0]
    S2 = rng.uniform(0.1, 5.0, size=(n, v))
    Y = rng.normal(size=(n, v)) * 2
    tau2 = rng.uniform(0.1, 4.0, size=v)
    h = 1e-4 * tau2
    ll, first, curvature = log_likelihood(Q, Y, S2, tau2, method)
    up, down = (log_likelihood(Q, Y, S2, tau2 + d, method)[0] for d in (h, -h))
    np.testing.assert_allclose(first, (up - down) / (2 * h), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(curvature, -(up - 2 * ll + down) / h**2, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(score(Q, Y, S2, tau2, method), first, rtol=1e-12)
    # l itself is the reference's likelihood in the original X (up to a constant).
    nll = [_neg_loglik(t, Y[:, j], S2[:, j], X, method) for j, t in enumerate(tau2)]
    offset = -ll - np.array(nll)
    np.testing.assert_allclose(offset, offset[0], atol=1e-9)


@pytest.mark.parametrize("method", ["reml", "ml"])
def test_scores_are_negative_beyond_the_upper_bound(method):
    """Every maximum lies below tau2_upper_bound: both scores are <= 0 from there on."""
    rng = np.random.default_rng(6)
    n, v = 15, 300
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    S2 = rng.uniform(0.01, 1, size=(n, v)) ** 3 * 100  # variances over 6 orders of magnitude
    Y = rng.standard_t(2, size=(n, v)) * np.sqrt(S2 + rng.uniform(0, 5, size=v))
    Q = np.linalg.svd(X, full_matrices=False)[0]
    upper = tau2_upper_bound(Q, Y, S2)
    for factor in (1.0, 1.5, 10.0, 1e4):
        score = log_likelihood(Q, Y, S2, factor * upper, method)[1]
        assert np.all(score <= 1e-12 * np.abs(score).max())
    # ... and it is not vacuous: the score is positive somewhere below it.
    assert np.any(log_likelihood(Q, Y, S2, 0.3 * upper, method)[1] > 0)


def test_rank_deficient_design_gives_the_same_estimable_contrasts():
    rng = np.random.default_rng(7)
    n, v = 20, 50
    group = np.repeat([0, 1], n // 2)
    S2 = rng.uniform(0.5, 2.0, size=(n, v))
    Y = rng.normal(size=(n, v)) + group[:, None]
    cells = np.column_stack([group == 0, group == 1]).astype(float)
    with_intercept = np.column_stack([np.ones(n), cells])  # rank 2 of 3 columns
    full = MixedEffectsEstimator().fit(Y, cells, S2)
    deficient = MixedEffectsEstimator().fit(Y, with_intercept, S2)
    np.testing.assert_allclose(deficient.tau2, full.tau2, rtol=1e-9, atol=1e-12)
    diff_full = full.contrast([-1.0, 1.0], "t")
    diff_deficient = deficient.contrast([0.0, -1.0, 1.0], "t")
    np.testing.assert_allclose(diff_deficient.stat, diff_full.stat, rtol=1e-8)
    assert diff_deficient.dof == diff_full.dof == n - 2
    with pytest.raises(DesignError, match="not estimable"):
        deficient.contrast([0.0, 1.0, 0.0], "t")


def test_unusable_voxels_are_nan_and_do_not_affect_others():
    rng = np.random.default_rng(8)
    S2 = rng.uniform(0.5, 2.0, size=(10, 30))
    Y = rng.normal(size=(10, 30))
    X = np.ones((10, 1))
    clean = MixedEffectsEstimator().fit(Y, X, S2).contrast([1.0], "t")
    Y[3, 4], S2[2, 7], S2[0, 9] = np.nan, 0.0, np.inf
    fit = MixedEffectsEstimator().fit(Y, X, S2)
    spoiled = fit.contrast([1.0], "t")
    bad = [4, 7, 9]
    assert np.isnan(fit.tau2[bad]).all() and np.isnan(spoiled.stat[bad]).all()
    good = np.setdiff1d(np.arange(30), bad)
    np.testing.assert_allclose(spoiled.stat[good], clean.stat[good], rtol=1e-12)
    assert set(fit.model_maps()) == {"tau2"}


def test_input_errors():
    Y = np.ones((5, 3))
    with pytest.raises(DesignError, match="variance"):
        MixedEffectsEstimator().fit(Y, np.ones((5, 1)))
    with pytest.raises(DesignError, match="shape"):
        MixedEffectsEstimator().fit(Y, np.ones((5, 1)), np.ones((5, 2)))
    with pytest.raises(ValueError, match="method"):
        MixedEffectsEstimator("flame2")


def test_fit_converges_on_many_pain21_voxels(pain21):
    """Every complete voxel of a 30k-voxel random subset of the mask converges
    (the whole mask is in docs/mixed_effects.md); incomplete ones are NaN."""
    Y, S2, _ = pain21
    voxels = np.random.default_rng(2).choice(Y.shape[1], 30_000, replace=False)
    Y, S2 = Y[:, voxels], S2[:, voxels]
    fit = MixedEffectsEstimator().fit(Y, np.ones((21, 1)), S2)
    complete = np.all(S2 > 0, axis=0)
    assert 20_000 < complete.sum() < 30_000
    assert fit.info["converged"][complete].all()
    assert fit.info["n_iter"][complete].max() <= 30
    assert np.all(fit.tau2[complete] >= 0) and np.isnan(fit.tau2[~complete]).all()
