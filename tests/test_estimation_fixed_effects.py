"""Fixed effects against nilearn's compute_fixed_effects and statsmodels WLS, in memory and on real data."""
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from nilearn.glm.contrasts import compute_fixed_effects
from nilearn.glm.first_level import make_first_level_design_matrix
from numpy.testing import assert_allclose, assert_array_equal

from bids_app.errors import DesignError
from bids_app.estimation import FirstLevelEstimator, FixedEffectsEstimator, scale_timeseries
from conftest import real_data


@pytest.fixture(scope="module")
def haxby_face_house():
    """Per-run face > house effects, variances and dofs of the 12 haxby runs (AR(1) GLM)."""
    func = real_data("haxby2001_sub1/sub-1/func")
    effects, variances, dofs = [], [], []
    for run in range(1, 13):
        stem = func / f"sub-1_task-objectviewing_run-{run:02d}"
        img = nib.load(f"{stem}_bold.nii.gz")
        events = pd.read_csv(f"{stem}_events.tsv", sep="\t")
        design = make_first_level_design_matrix(
            np.arange(img.shape[-1]) * 2.5, events, hrf_model="spm", drift_model="cosine"
        )
        Y = scale_timeseries(img.get_fdata().reshape(-1, img.shape[-1]).T)[0]
        fit = FirstLevelEstimator().fit(Y, design.values)
        result = fit.contrast((design.columns == "face") * 1.0 - (design.columns == "house"), "t")
        effects.append(result.effect)
        variances.append(result.variance)
        dofs.append(fit.dof)
    return np.array(effects), np.array(variances), np.array(dofs), img.affine


@pytest.fixture(scope="module")
def pain21(pain21_maps):
    """Effects, variances (n_studies, n_voxels) in the coverage mask, and study sizes."""
    effects, variances, participants = pain21_maps
    return effects, variances, participants["n_subjects_in_study"].to_numpy(float)


def nilearn_fixed_effects(effects, variances, dofs, affine=np.eye(4)):
    """nilearn's precision-weighted fixed effects on (n_inputs, n_voxels) arrays."""
    shape = (effects.shape[1], 1, 1)
    to_img = lambda a: nib.Nifti1Image(a.reshape(shape), affine)  # noqa: E731
    mask = nib.Nifti1Image(np.ones(shape, dtype=np.uint8), affine)
    images = compute_fixed_effects(
        [to_img(e) for e in effects], [to_img(v) for v in variances], mask=mask, precision_weighted=True, dofs=dofs
    )
    return [image.get_fdata().ravel() for image in images]


def test_intercept_matches_nilearn_in_memory():
    """Six simulated runs' effects with unequal variances and dofs, against nilearn."""
    rng = np.random.default_rng(7)
    n_runs, n_voxels = 6, 40
    variances = rng.uniform(0.2, 3.0, (n_runs, n_voxels))
    effects = rng.normal(0.5, np.sqrt(variances))
    dofs = rng.integers(60, 200, n_runs).astype(float)
    result = FixedEffectsEstimator(dofs=dofs).fit(effects, np.ones((n_runs, 1)), variances=variances)
    t = result.contrast([1.0], "t")
    effect, variance, stat, z = nilearn_fixed_effects(effects, variances, dofs)
    assert t.dof == dofs.sum()
    assert_allclose(t.effect, effect, rtol=1e-6)
    assert_allclose(t.variance, variance, rtol=1e-6)
    assert_allclose(t.stat, stat, rtol=1e-6)
    assert_allclose(t.z, z, rtol=1e-5, atol=1e-6)
    # and the closed form: precision-weighted mean, variance 1 / sum of precisions
    assert_allclose(t.effect, (effects / variances).sum(0) / (1 / variances).sum(0), rtol=1e-12)
    assert_allclose(t.variance, 1 / (1 / variances).sum(0), rtol=1e-12)


def test_intercept_matches_nilearn_on_haxby_runs(haxby_face_house):
    effects, variances, dofs, affine = haxby_face_house
    fit = FixedEffectsEstimator(dofs=dofs).fit(effects, np.ones((12, 1)), variances=variances)
    result = fit.contrast([1.0], "t")
    effect, variance, stat, z = nilearn_fixed_effects(effects, variances, dofs, affine)
    assert result.dof == dofs.sum()
    assert_allclose(result.effect, effect, rtol=1e-6)
    assert_allclose(result.variance, variance, rtol=1e-6)
    assert_allclose(result.stat, stat, rtol=1e-6)
    assert_allclose(result.z, z, rtol=1e-6, atol=1e-9)
    # face < house in ventral temporal cortex: strongly negative, as in the data README
    assert -9 < result.z.min() < -4
    assert np.sign(result.z[np.argmin(z)]) == -1


def test_intercept_is_the_weighted_mean(haxby_face_house):
    effects, variances, dofs, _ = haxby_face_house
    fit = FixedEffectsEstimator(dofs=dofs).fit(effects, np.ones((12, 1)), variances=variances)
    weights = 1 / variances
    assert_allclose(fit.beta[0], (weights * effects).sum(0) / weights.sum(0), rtol=1e-12)
    assert_allclose(fit.covariance[:, 0, 0], 1 / weights.sum(0), rtol=1e-12)
    expected_q = (weights * (effects - fit.beta[0]) ** 2).sum(0)
    assert_allclose(fit.model_maps()["chisq"], expected_q, rtol=1e-10)


def test_intercept_matches_nilearn_on_pain21_and_masks_missing_coverage(pain21):
    effects, variances, n_subjects = pain21
    dofs = n_subjects - 1
    valid = np.all(variances > 0, axis=0)
    assert 0 < valid.sum() < valid.size  # studies with missing coverage (variance 0)
    result = FixedEffectsEstimator(dofs=dofs).fit(effects, np.ones((21, 1)), variances=variances).contrast([1], "t")
    for name in ("effect", "variance", "stat", "z", "p"):
        values = getattr(result, name)
        assert np.all(np.isnan(values[~valid])), name
        assert np.all(np.isfinite(values[valid])), name
    keep = np.flatnonzero(valid)[::40]  # a spread-out subset keeps nilearn's masker quick
    effect, variance, stat, z = nilearn_fixed_effects(effects[:, keep], variances[:, keep], dofs)
    assert_allclose(result.effect[keep], effect, rtol=1e-6)
    assert_allclose(result.variance[keep], variance, rtol=1e-6)
    assert_allclose(result.stat[keep], stat, rtol=1e-6)
    comparable = np.abs(z) < 37  # nilearn clips p at 1e-300
    assert_allclose(result.z[keep][comparable], z[comparable], rtol=1e-6, atol=1e-9)


def test_covariate_matches_statsmodels_wls_with_known_variances(pain21):
    effects, variances, n_subjects = pain21
    X = np.column_stack([np.ones(21), n_subjects - n_subjects.mean()])
    voxels = np.flatnonzero(np.all(variances > 0, axis=0))[::20000]
    fit = FixedEffectsEstimator(dofs=n_subjects - 1).fit(effects[:, voxels], X, variances=variances[:, voxels])
    slope = fit.contrast([0, 1], "t")
    both = fit.contrast(np.eye(2), "F")
    assert both.dof_num == 2 and both.dof == (n_subjects - 1).sum()
    for i, voxel in enumerate(voxels):
        # fixed scale 1: the variances are known, not rescaled by the residuals
        wls = sm.WLS(effects[:, voxel], X, weights=1 / variances[:, voxel]).fit(
            cov_type="fixed scale", cov_kwds={"scale": 1.0}
        )
        assert_allclose(fit.beta[:, i], wls.params, rtol=1e-9)
        assert_allclose(fit.covariance[i], wls.cov_params(), rtol=1e-9)
        assert_allclose(slope.stat[i], wls.tvalues[1], rtol=1e-9)
        assert_allclose(both.stat[i], wls.wald_test(np.eye(2), scalar=True).statistic / 2, rtol=1e-9)
        assert_allclose(fit.chisq[i], (wls.wresid**2).sum(), rtol=1e-9)


def test_invalid_inputs_are_masked_out_voxelwise():
    rng = np.random.default_rng(1)
    effects = rng.normal(size=(4, 6))
    variances = rng.uniform(0.5, 2.0, size=(4, 6))
    variances[1, 0] = 0.0
    variances[2, 1] = -1.0
    variances[3, 2] = np.nan
    effects[0, 3] = np.inf
    fit = FixedEffectsEstimator(dofs=[10, 10, 10, 10]).fit(effects, np.ones((4, 1)), variances=variances)
    result = fit.contrast([1.0], "t")
    assert np.all(np.isnan(result.z[:4])) and np.all(np.isnan(fit.beta[:, :4]))
    clean = FixedEffectsEstimator(dofs=[10] * 4).fit(effects[:, 4:], np.ones((4, 1)), variances=variances[:, 4:])
    assert_allclose(result.z[4:], clean.contrast([1.0], "t").z, rtol=1e-14)


def test_voxelwise_dofs_are_summed():
    rng = np.random.default_rng(2)
    dofs = rng.integers(20, 200, size=(3, 5)).astype(float)
    effects, variances, X = rng.normal(size=(3, 5)), rng.uniform(1, 2, (3, 5)), np.ones((3, 1))
    result = FixedEffectsEstimator(dofs=dofs).fit(effects, X, variances).contrast([1.0], "t")
    assert_array_equal(result.dof, dofs.sum(0))
    for v in range(5):
        single = FixedEffectsEstimator(dofs=dofs[:, v]).fit(effects[:, [v]], X, variances[:, [v]])
        assert_allclose(result.p[v], single.contrast([1.0], "t").p[0], rtol=1e-14)


def test_bad_inputs_are_rejected():
    Y, V = np.ones((3, 4)), np.ones((3, 4))
    with pytest.raises(ValueError, match="variances"):
        FixedEffectsEstimator(dofs=[1, 1, 1]).fit(Y, np.ones((3, 1)))
    with pytest.raises(ValueError, match="dofs"):
        FixedEffectsEstimator(dofs=[1, 1]).fit(Y, np.ones((3, 1)), V)
    with pytest.raises(DesignError, match="rank deficient"):
        FixedEffectsEstimator(dofs=[1, 1, 1]).fit(Y, np.ones((3, 2)), V)
    fit = FixedEffectsEstimator(dofs=[1, 1, 1]).fit(Y, np.ones((3, 1)), V)
    with pytest.raises(DesignError, match="one row"):
        fit.contrast([[1.0], [1.0]], "t")
