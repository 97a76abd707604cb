"""OLSEstimator against nilearn's SecondLevelModel, on real and simulated maps."""
import tracemalloc
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bids_app.errors import DesignError
from bids_app.estimation.ols import OLSEstimator

TOL = 1e-5  # required agreement with nilearn (t, F, z, p)


def _nilearn_contrast(imgs, mask_img, design, weights, test):
    """nilearn's maps (output_type="all") for one contrast, plus its model."""
    from nilearn.glm.second_level import SecondLevelModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nilearn's deprecation/rank notices
        model = SecondLevelModel(mask_img=mask_img, minimize_memory=False)
        model.fit(list(imgs), design_matrix=design)
        maps = model.compute_contrast(
            np.asarray(weights), second_level_stat_type=test, output_type="all"
        )
    return maps, model


def _in_mask(img, mask):
    return np.asarray(img.get_fdata()).reshape(mask.shape)[mask]


@pytest.fixture(scope="module")
def wager(wager_maps):
    """The 30 real effect maps, the mask where all are finite and non-zero, covariates."""
    imgs, data, participants = wager_maps
    mask = np.all(np.isfinite(data) & (data != 0), axis=0)
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), imgs[0].affine)
    return imgs, mask, mask_img, data[:, mask], participants


def _assert_matches_nilearn(result, maps, mask, test):
    """Our t/F, z and p against nilearn's; effect and variance too for t."""
    np.testing.assert_allclose(result.stat, _in_mask(maps["stat"], mask), rtol=0, atol=TOL)
    np.testing.assert_allclose(result.z, _in_mask(maps["z_score"], mask), rtol=0, atol=TOL)
    np.testing.assert_allclose(result.p, _in_mask(maps["p_value"], mask), rtol=0, atol=TOL)
    if test == "t":  # nilearn's F "effect" is whitened, not C @ beta
        effect = _in_mask(maps["effect_size"], mask)
        variance = _in_mask(maps["effect_variance"], mask)
        np.testing.assert_allclose(result.effect, effect, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(result.variance, variance, rtol=1e-10)


def test_one_sample_equals_nilearn_on_wager(wager):
    imgs, mask, mask_img, Y, _ = wager
    X = np.ones((30, 1))
    maps, _ = _nilearn_contrast(imgs, mask_img, pd.DataFrame(X, columns=["intercept"]), [1], "t")
    result = OLSEstimator().fit(Y, X).contrast([1.0], "t")
    _assert_matches_nilearn(result, maps, mask, "t")
    assert result.dof == 29 and result.dof_num == 1
    # The one-sample t is scipy's t-test, voxel by voxel.
    np.testing.assert_allclose(result.stat, stats.ttest_1samp(Y, 0.0, axis=0).statistic, rtol=1e-10)
    assert np.abs(result.stat).max() > 4  # a real effect, not a vacuous comparison


def test_one_sample_z_equals_scipy_ttest_on_wager(wager_group):
    """The one-sample z over the real brain-masked maps, from scipy's two-sided t-test p."""
    result = OLSEstimator().fit(wager_group.Y, np.ones((30, 1))).contrast([1.0], "t")
    reference = stats.ttest_1samp(wager_group.Y, 0.0, axis=0)
    np.testing.assert_allclose(result.stat, reference.statistic, rtol=1e-10)
    z = np.sign(reference.statistic) * stats.norm.isf(reference.pvalue / 2)
    np.testing.assert_allclose(result.z, z, rtol=1e-8, atol=1e-9)
    assert np.abs(result.z).max() > 5  # real effects: the tails are tested


@pytest.mark.parametrize(
    ("weights", "test"),
    [([0, 1], "t"), ([1, 0], "t"), ([[1, 0], [0, 1]], "F")],
    ids=["covariate-t", "intercept-t", "both-F"],
)
def test_covariate_model_equals_nilearn_on_wager(wager, weights, test):
    imgs, mask, mask_img, Y, participants = wager
    X = np.column_stack([np.ones(30), participants["Y_Reappraisal_Success"]])
    design = pd.DataFrame(X, columns=["intercept", "success"])
    maps, model = _nilearn_contrast(imgs, mask_img, design, weights, test)
    fit = OLSEstimator().fit(Y, X)
    result = fit.contrast(np.asarray(weights, dtype=float), test)
    _assert_matches_nilearn(result, maps, mask, test)
    assert result.dof == 28 and result.dof_num == (2 if test == "F" else 1)
    rsquared = _in_mask(model.r_square_, mask)  # nilearn stores float32
    np.testing.assert_allclose(fit.model_maps()["rsquared"], rsquared, atol=1e-6)
    residuals = np.asarray(model.residuals_.get_fdata()).reshape(*mask.shape, -1)[mask].T
    np.testing.assert_allclose(
        fit.model_maps()["residsd"], np.sqrt((residuals**2).sum(0) / 28), rtol=1e-5
    )


def _repeated_measures(n_subjects=16, shape=(6, 6, 5), seed=0, full_rank=False):
    """A simulated 3x3 within-subject design: 9 cell columns + subject columns.

    ``full_rank`` drops the last subject column (the cells already span the
    intercept), giving a full-rank coding of the same model. The maps hold a
    real main effect of factor A in the first half of the voxels.
    """
    rng = np.random.default_rng(seed)
    cells = [(a, b) for a in range(3) for b in range(3)]
    rows = [(s, a, b) for s in range(n_subjects) for a, b in cells]
    X = np.zeros((len(rows), 9 + n_subjects))
    for i, (s, a, b) in enumerate(rows):
        X[i, 3 * a + b] = 1
        X[i, 9 + s] = 1
    columns = [f"A{a}B{b}" for a, b in cells] + [f"sub{s:02d}" for s in range(n_subjects)]
    if full_rank:
        X, columns = X[:, :-1], columns[:-1]
    n_voxels = int(np.prod(shape))
    subject_effect = rng.normal(0, 2, size=(n_subjects, n_voxels))
    effect_a = np.zeros((3, n_voxels))
    effect_a[:, : n_voxels // 2] = np.array([[0.0], [0.5], [1.0]])
    Y = np.array([subject_effect[s] + effect_a[a] for s, a, _ in rows])
    Y += rng.normal(0, 1, size=Y.shape)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    imgs = [nib.Nifti1Image(y.reshape(shape).astype(np.float32), affine) for y in Y]
    Y = np.stack([np.asarray(img.dataobj, dtype=float).ravel() for img in imgs])
    return imgs, Y, X, columns, affine


def _main_effect_a(n_columns):
    """F contrast of the main effect of A: A1 - A2 and A2 - A3, averaged over B."""
    weights = np.zeros((2, n_columns))
    weights[0, 0:3], weights[0, 3:6] = 1 / 3, -1 / 3
    weights[1, 3:6], weights[1, 6:9] = 1 / 3, -1 / 3
    return weights


def test_repeated_measures_f_equals_nilearn():
    imgs, Y, X, columns, affine = _repeated_measures(full_rank=True)
    assert Y.shape == (144, 180) and X.shape == (144, 24) and np.linalg.matrix_rank(X) == 24
    mask = np.ones(imgs[0].shape, dtype=bool)
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), affine)
    weights = _main_effect_a(X.shape[1])
    maps, _ = _nilearn_contrast(imgs, mask_img, pd.DataFrame(X, columns=columns), weights, "F")
    result = OLSEstimator().fit(Y, X).contrast(weights, "F")
    _assert_matches_nilearn(result, maps, mask, "F")
    assert result.dof == 144 - 24 and result.dof_num == 2
    # The simulated effect is found where it was put, not elsewhere.
    half = Y.shape[1] // 2
    assert np.median(result.stat[:half]) > 8 and np.median(result.stat[half:]) < 2


def test_rank_deficient_coding_gives_the_same_f():
    """All 16 subject columns (rank 24 of 25): same F as the full-rank coding.

    nilearn is not the reference here: its OLS divides the RSS by
    n - n_columns but takes p-values with n - rank (nilearn issue #3361,
    rank-deficient second-level designs), so its F is 119/120 of this one.
    statsmodels uses n - rank throughout.
    """
    import statsmodels.api as sm

    _, Y, X, _, _ = _repeated_measures()
    _, _, X_full, _, _ = _repeated_measures(full_rank=True)
    assert X.shape == (144, 25) and np.linalg.matrix_rank(X) == 24
    deficient = OLSEstimator().fit(Y, X).contrast(_main_effect_a(25), "F")
    full = OLSEstimator().fit(Y, X_full).contrast(_main_effect_a(24), "F")
    np.testing.assert_allclose(deficient.stat, full.stat, rtol=1e-10)
    np.testing.assert_allclose(deficient.z, full.z, rtol=1e-8, atol=1e-10)
    assert deficient.dof == full.dof == 120
    for voxel in (0, 100):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # statsmodels notes the rank deficiency
            reference = sm.OLS(Y[:, voxel], X).fit().f_test(_main_effect_a(25))
        assert reference.df_denom == 120
        np.testing.assert_allclose(deficient.stat[voxel], reference.fvalue, rtol=1e-10)
        np.testing.assert_allclose(deficient.p[voxel], reference.pvalue, rtol=1e-8)


def test_redundant_f_rows_use_the_rank_of_the_contrast():
    imgs, Y, X, _, _ = _repeated_measures(n_subjects=8, shape=(4, 4, 4), seed=1)
    weights = np.vstack([_main_effect_a(X.shape[1]), np.zeros(X.shape[1])])
    weights[2] = weights[0] + weights[1]  # A1 - A3: redundant
    fit = OLSEstimator().fit(Y, X)
    redundant, independent = fit.contrast(weights, "F"), fit.contrast(weights[:2], "F")
    assert redundant.dof_num == 2
    np.testing.assert_allclose(redundant.stat, independent.stat, rtol=1e-10)
    np.testing.assert_allclose(redundant.p, independent.p, rtol=1e-8)
    # A one-row F is the square of the t with the same weights.
    t = fit.contrast(weights[0], "t")
    f = fit.contrast(weights[:1], "F")
    np.testing.assert_allclose(f.stat, t.stat**2, rtol=1e-10)
    np.testing.assert_allclose(f.p, 2 * stats.t.sf(np.abs(t.stat), t.dof), rtol=1e-8)


def test_non_estimable_contrast_is_rejected():
    _, Y, X, _, _ = _repeated_measures(n_subjects=4, shape=(2, 2, 2))
    fit = OLSEstimator().fit(Y, X)
    cell_mean = np.zeros(X.shape[1])
    cell_mean[0] = 1  # a single cell mean is confounded with the subject columns
    with pytest.raises(DesignError, match="not estimable"):
        fit.contrast(cell_mean, "t")
    with pytest.raises(DesignError, match="weights"):
        fit.contrast(np.ones(3), "t")
    with pytest.raises(DesignError, match="one row"):
        fit.contrast(np.ones((2, X.shape[1])), "t")


def test_design_errors():
    with pytest.raises(DesignError, match="degrees of freedom"):
        OLSEstimator().fit(np.ones((3, 5)), np.eye(3))
    with pytest.raises(DesignError, match="rows"):
        OLSEstimator().fit(np.ones((4, 5)), np.ones((3, 1)))
    with pytest.raises(DesignError, match="NaN"):
        OLSEstimator().fit(np.ones((3, 5)), np.array([[1.0], [np.nan], [1.0]]))


def test_chunks_and_float32_do_not_change_results():
    rng = np.random.default_rng(3)
    Y = rng.normal(size=(40, 1001)).astype(np.float32)
    X = np.column_stack([np.ones(40), rng.normal(size=(40, 2))])
    whole = OLSEstimator().fit(Y.astype(np.float64), X).contrast([0, 1, -1], "t")
    chunked_fit = OLSEstimator(chunk_bytes=40 * 8 * 3 * 7).fit(Y, X)  # 7 voxels per chunk
    chunked = chunked_fit.contrast([0, 1, -1], "t")
    np.testing.assert_allclose(chunked.stat, whole.stat, rtol=1e-12)
    assert chunked_fit.beta.dtype == np.float64
    # Non-finite data spoil only their own voxel.
    Y[5, 10] = np.nan
    spoiled = OLSEstimator(chunk_bytes=40 * 8 * 3 * 7).fit(Y, X).contrast([0, 1, -1], "t")
    assert np.isnan(spoiled.stat[10]) and np.isfinite(np.delete(spoiled.stat, 10)).all()


def test_fit_memory_is_bounded_by_chunks():
    """Peak allocation of fit = outputs + O(n x chunk), not O(n x v)."""
    n, v, chunk_bytes = 300, 20_000, 2**20
    Y = np.random.default_rng(4).normal(size=(n, v)).astype(np.float32)  # 24 MB
    X = np.column_stack([np.ones(n), np.arange(n) / n])
    tracemalloc.start()
    fit = OLSEstimator(chunk_bytes=chunk_bytes).fit(Y, X)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    outputs = fit.beta.nbytes + fit.sigma2.nbytes + fit.rsquared.nbytes + 8 * v  # + rss
    assert peak < outputs + 3 * chunk_bytes + 2**20, (peak, outputs)
    assert peak < Y.nbytes / 2  # no float64 copy of Y, not even a float32 one


def test_t_and_f_match_statsmodels_in_memory():
    """A covariate model on simulated maps, voxel by voxel against statsmodels' OLS."""
    import statsmodels.api as sm

    rng = np.random.default_rng(6)
    n, v = 24, 12
    X = np.column_stack([np.ones(n), rng.normal(40, 10, n), rng.integers(0, 2, n)])
    Y = X @ rng.normal(0, [1.0, 0.05, 1.0], (v, 3)).T + rng.normal(0, 1, (n, v))
    fit = OLSEstimator().fit(Y, X)
    c, C = np.array([0.0, 1.0, -1.0]), np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    t, F = fit.contrast(c, "t"), fit.contrast(C, "F")
    assert t.dof == F.dof == n - 3 and F.dof_num == 2
    for voxel in range(v):
        ols = sm.OLS(Y[:, voxel], X).fit()
        np.testing.assert_allclose(fit.beta[:, voxel], ols.params, rtol=1e-10)
        t_test, f_test = ols.t_test(c), ols.f_test(C)
        np.testing.assert_allclose(t.effect[voxel], t_test.effect[0], rtol=1e-10)
        np.testing.assert_allclose(np.sqrt(t.variance[voxel]), t_test.sd[0, 0], rtol=1e-10)
        np.testing.assert_allclose(t.stat[voxel], t_test.tvalue[0, 0], rtol=1e-10)
        # ours is the upper tail (as nilearn), statsmodels' two-sided
        np.testing.assert_allclose(2 * min(t.p[voxel], 1 - t.p[voxel]), t_test.pvalue, rtol=1e-8)
        np.testing.assert_allclose(F.stat[voxel], f_test.fvalue, rtol=1e-10)
        np.testing.assert_allclose(F.p[voxel], f_test.pvalue, rtol=1e-8)
    np.testing.assert_allclose(t.z, stats.norm.isf(t.p), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(F.z, stats.norm.isf(F.p), rtol=1e-8, atol=1e-12)
