"""Run-level GLM against nilearn's run_glm / FirstLevelModel and statsmodels.

In memory (simulated AR(1) time series, no files) and on real BOLD.
"""
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from nilearn.glm.first_level import FirstLevelModel, make_first_level_design_matrix, mean_scaling
from nilearn.masking import apply_mask, compute_epi_mask
from numpy.testing import assert_allclose, assert_array_equal
from threadpoolctl import threadpool_limits

from bids_app.errors import DesignError, InputDataError
from bids_app.estimation import FirstLevelEstimator, scale_timeseries
from conftest import real_data

HAXBY = "haxby2001_sub1/sub-1/func"


def load_run(bold, events, t_r, z_slices=slice(None)):
    """Real BOLD (float64 image, so nilearn also works in float64) and an SPM-HRF design."""
    img = nib.load(bold)
    data = np.asarray(img.dataobj, dtype=np.float64)[:, :, z_slices]
    events = pd.read_csv(events, sep="\t")[["onset", "duration", "trial_type"]]
    frame_times = np.arange(data.shape[-1]) * t_r
    design = make_first_level_design_matrix(frame_times, events, hrf_model="spm", drift_model="cosine")
    return nib.Nifti1Image(data, img.affine), design


def haxby_run(run):
    stem = real_data(HAXBY) / f"sub-1_task-objectviewing_run-{run:02d}"
    img, design = load_run(f"{stem}_bold.nii.gz", f"{stem}_events.tsv", t_r=2.5)
    # 25 mm voxels: the whole 6x10x10 box is inside the head
    mask = nib.Nifti1Image(np.ones(img.shape[:3], dtype=np.uint8), img.affine)
    return img, design, mask


def forrest_run():
    """12 of the 35 slices of the studyforrest localizer run (~16k in-brain voxels)."""
    func = real_data("studyforrest_sub02/sub-02/func")
    return load_run(func / "sub-02_task-oneback_run-1_bold.nii.gz",
                    func / "sub-02_task-oneback_run-1_events.tsv", t_r=2.0, z_slices=slice(8, 20))


def weights(design, plus, minus=None):
    w = (design.columns == plus).astype(float)
    if minus is not None:
        w -= design.columns == minus
    return w


def fit_nilearn(img, design, mask, noise_model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "mask given at masker creation" etc.
        return FirstLevelModel(mask_img=mask, noise_model=noise_model, minimize_memory=False).fit(
            img, design_matrices=[design]
        )


def nilearn_contrast(model, weights, stat_type):
    maps = model.compute_contrast(weights, stat_type=stat_type, output_type="all")
    return {name: model.masker_.transform(image).ravel() for name, image in maps.items()}


def fit_ours(img, design, mask, noise_model="ar1", **kwargs):
    Y = img.get_fdata()[np.asarray(mask.dataobj) > 0].T
    return FirstLevelEstimator(noise_model=noise_model, **kwargs).fit(scale_timeseries(Y)[0], design.values)


def assert_same_t(ours, reference, rtol):
    assert_allclose(ours.effect, reference["effect_size"], rtol=rtol, atol=1e-12)
    assert_allclose(ours.variance, reference["effect_variance"], rtol=rtol)
    assert_allclose(ours.stat, reference["stat"], rtol=rtol, atol=1e-12)
    assert_allclose(ours.z, reference["z_score"], rtol=rtol, atol=1e-12)
    assert_allclose(ours.p, reference["p_value"], rtol=rtol, atol=1e-15)


def simulated_run(n_scans=160, n_voxels=60, seed=0):
    """Time series with AR(1) noise of voxel-varying coefficient (0 to 0.7) plus responses
    to two conditions, and their SPM-HRF design with cosine drifts (TR 2 s)."""
    rng = np.random.default_rng(seed)
    onsets = np.arange(8.0, 2.0 * n_scans - 24, 13.0)
    events = pd.DataFrame({"onset": onsets, "duration": 2.0,
                           "trial_type": np.resize(["face", "house"], onsets.size)})
    design = make_first_level_design_matrix(np.arange(n_scans) * 2.0, events, hrf_model="spm",
                                            drift_model="cosine")
    rho = rng.uniform(0.0, 0.7, n_voxels)
    innovations = rng.standard_normal((n_scans, n_voxels))
    noise = np.empty_like(innovations)
    noise[0] = innovations[0] / np.sqrt(1 - rho**2)
    for t in range(1, n_scans):
        noise[t] = rho * noise[t - 1] + innovations[t]
    beta = rng.normal(0.0, 1.0, (design.shape[1], n_voxels))
    return design.to_numpy() @ beta + noise, design


@pytest.mark.parametrize("noise_model", ["ols", "ar1"])
def test_matches_nilearn_run_glm_in_memory(noise_model):
    from nilearn.glm.contrasts import compute_contrast
    from nilearn.glm.first_level import run_glm

    Y, design = simulated_run()
    labels, results = run_glm(Y, design.to_numpy(), noise_model=noise_model, bins=100)
    fit = FirstLevelEstimator(noise_model=noise_model).fit(Y, design.to_numpy())
    if noise_model == "ar1":
        assert_array_equal(fit.ar_coef[0], labels.astype(float))
        assert len(np.unique(labels)) > 20  # many whitening filters, not one
    beta = np.empty_like(fit.beta)
    for label, result in results.items():
        beta[:, labels == label] = result.theta
    assert_allclose(fit.beta, beta, rtol=1e-9, atol=1e-12)

    c = weights(design, "face", "house")
    reference = compute_contrast(labels, results, c, stat_type="t")
    ours = fit.contrast(c, "t")
    assert_allclose(ours.effect, reference.effect_size().ravel(), rtol=1e-9, atol=1e-12)
    assert_allclose(ours.variance, reference.effect_variance().ravel(), rtol=1e-9)
    assert_allclose(ours.stat, reference.stat().ravel(), rtol=1e-9, atol=1e-12)
    assert_allclose(ours.z, reference.z_score().ravel(), rtol=1e-8, atol=1e-12)
    assert_allclose(ours.p, reference.p_value().ravel(), rtol=1e-8, atol=1e-15)
    assert ours.dof == next(iter(results.values())).df_residuals

    C = np.vstack([weights(design, "face"), weights(design, "house")])
    reference_F = compute_contrast(labels, results, C, stat_type="F")
    ours_F = fit.contrast(C, "F")
    assert ours_F.dof_num == 2
    assert_allclose(ours_F.stat, reference_F.stat().ravel(), rtol=1e-9)
    assert_allclose(ours_F.z, reference_F.z_score().ravel(), rtol=1e-8, atol=1e-12)
    assert_allclose(ours_F.p, reference_F.p_value().ravel(), rtol=1e-8, atol=1e-15)


def test_ols_matches_statsmodels_in_memory():
    """OLS on the simulated run, voxel by voxel against statsmodels (two-sided p folded)."""
    Y, design = simulated_run(n_voxels=8, seed=1)
    X = design.to_numpy()
    fit = FirstLevelEstimator(noise_model="ols").fit(Y, X)
    c = weights(design, "face", "house")
    t_result = fit.contrast(c, "t")
    for voxel in range(Y.shape[1]):
        ols = sm.OLS(Y[:, voxel], X).fit()
        assert_allclose(fit.beta[:, voxel], ols.params, rtol=1e-9, atol=1e-12)
        test = ols.t_test(c)
        assert_allclose(t_result.stat[voxel], test.tvalue[0, 0], rtol=1e-9)
        assert_allclose(2 * min(t_result.p[voxel], 1 - t_result.p[voxel]), test.pvalue, rtol=1e-8)
        assert_allclose(fit.model_maps()["residsd"][voxel], np.sqrt(ols.mse_resid), rtol=1e-9)


def test_scale_timeseries_is_nilearn_mean_scaling():
    img, _, _ = haxby_run(1)
    Y = img.get_fdata().reshape(-1, img.shape[-1]).T
    ours, mean = scale_timeseries(Y)
    reference, reference_mean = mean_scaling(Y)
    assert_array_equal(ours, reference)
    assert_array_equal(mean, reference_mean)
    assert_allclose(ours.mean(axis=0), 0.0, atol=1e-10)


@pytest.mark.parametrize("run", [1, 8])
def test_ar1_matches_nilearn_on_haxby(run):
    img, design, mask = haxby_run(run)
    reference = fit_nilearn(img, design, mask, "ar1")
    fit = fit_ours(img, design, mask)
    # same AR(1) grid value in every voxel, so the whitened fits are the same
    assert_array_equal(fit.ar_coef[0], reference.labels_[0].astype(float))
    assert len(np.unique(fit.ar_coef[0])) > 5
    assert fit.dof == next(iter(reference.results_[0].values())).df_residuals

    face_house = fit.contrast(weights(design, "face", "house"), "t")
    assert_same_t(face_house, nilearn_contrast(reference, weights(design, "face", "house"), "t"), rtol=1e-8)

    F_weights = np.vstack([weights(design, name) for name in ("face", "house", "cat")])
    ours_F = fit.contrast(F_weights, "F")
    reference_F = nilearn_contrast(reference, F_weights, "F")
    assert ours_F.dof_num == 3 and ours_F.effect.shape == (3, 600)
    assert_allclose(ours_F.stat, reference_F["stat"], rtol=1e-8)
    assert_allclose(ours_F.z, reference_F["z_score"], rtol=1e-8)
    assert_allclose(ours_F.p, reference_F["p_value"], rtol=1e-8, atol=1e-15)

    maps = fit.model_maps()
    r_square = reference.masker_.transform(reference.r_square_[0]).ravel()
    assert_allclose(maps["rsquared"], r_square, rtol=1e-8)
    mse = np.empty(600)
    for label, result in reference.results_[0].items():
        mse[reference.labels_[0] == label] = result.MSE
    assert_allclose(maps["residsd"], np.sqrt(mse), rtol=1e-8)


def test_face_house_sign_and_size_match_nilearn_on_haxby():
    img, design, mask = haxby_run(3)
    reference = nilearn_contrast(fit_nilearn(img, design, mask, "ar1"), weights(design, "face", "house"), "t")
    ours = fit_ours(img, design, mask).contrast(weights(design, "face", "house"), "t")
    strongest = np.argmax(np.abs(reference["z_score"]))
    assert np.sign(ours.z[strongest]) == np.sign(reference["z_score"][strongest])
    assert ours.z[strongest] == pytest.approx(reference["z_score"][strongest], rel=1e-8)
    assert abs(ours.z[strongest]) > 3


def test_ar1_matches_nilearn_on_studyforrest():
    # 12 of 35 slices keep the test to a few seconds (~16k in-mask voxels)
    img, design = forrest_run()
    mask = compute_epi_mask(img)
    reference = fit_nilearn(img, design, mask, "ar1")
    fit = fit_ours(img, design, mask, chunk_size=4096)
    assert fit.beta.shape[1] > 10000
    assert_array_equal(fit.ar_coef[0], reference.labels_[0].astype(float))

    face_house = weights(design, "face", "house")
    assert_same_t(fit.contrast(face_house, "t"), nilearn_contrast(reference, face_house, "t"), rtol=1e-8)
    conditions = np.eye(design.shape[1])[:6]  # all six categories
    ours_F = fit.contrast(conditions, "F")
    reference_F = nilearn_contrast(reference, conditions, "F")
    assert ours_F.dof_num == 6
    assert_allclose(ours_F.stat, reference_F["stat"], rtol=1e-8)
    assert_allclose(ours_F.z, reference_F["z_score"], rtol=1e-8, atol=1e-12)


def test_ols_matches_statsmodels():
    img, design, mask = haxby_run(2)
    fit = fit_ours(img, design, mask, noise_model="ols")
    Y = scale_timeseries(img.get_fdata().reshape(-1, img.shape[-1]).T)[0]
    c = weights(design, "face", "house")
    t_result = fit.contrast(c, "t")
    F_weights = np.vstack([weights(design, "face"), weights(design, "house")])
    F_result = fit.contrast(F_weights, "F")
    assert fit.ar_coef.shape == (0, 600)
    for voxel in [0, 57, 123, 345, 599]:
        ols = sm.OLS(Y[:, voxel], design.values).fit()
        assert_allclose(fit.beta[:, voxel], ols.params, rtol=1e-9, atol=1e-12)
        test = ols.t_test(c)
        assert_allclose(t_result.effect[voxel], test.effect[0], rtol=1e-9)
        assert_allclose(np.sqrt(t_result.variance[voxel]), test.sd[0, 0], rtol=1e-9)
        assert_allclose(t_result.stat[voxel], test.tvalue[0, 0], rtol=1e-9)
        # statsmodels is two-sided; ours one-sided upper
        assert_allclose(2 * min(t_result.p[voxel], 1 - t_result.p[voxel]), test.pvalue, rtol=1e-8)
        f_test = ols.f_test(F_weights)
        assert_allclose(F_result.stat[voxel], f_test.fvalue, rtol=1e-9)
        assert_allclose(F_result.p[voxel], f_test.pvalue, rtol=1e-8)
        assert (F_result.dof_num, F_result.dof) == (f_test.df_num, f_test.df_denom)
        assert_allclose(fit.model_maps()["rsquared"][voxel], ols.rsquared, rtol=1e-9)
        assert_allclose(fit.model_maps()["residsd"][voxel], np.sqrt(ols.mse_resid), rtol=1e-9)


def test_results_do_not_depend_on_chunking():
    img, design, mask = haxby_run(5)
    whole = fit_ours(img, design, mask)
    chunked = fit_ours(img, design, mask, chunk_size=7)
    assert_array_equal(whole.ar_coef, chunked.ar_coef)
    c = weights(design, "face", "house")
    assert_allclose(chunked.contrast(c, "t").stat, whole.contrast(c, "t").stat, rtol=1e-12)
    assert_allclose(chunked.beta, whole.beta, rtol=1e-12, atol=1e-12)


def test_constant_voxel_gives_nan_statistics():
    img, design, mask = haxby_run(1)
    Y = scale_timeseries(img.get_fdata().reshape(-1, img.shape[-1]).T)[0]
    Y[:, 10] = 0.0  # what scaling makes of a constant voxel
    fit = FirstLevelEstimator().fit(Y, design.values)
    result = fit.contrast(weights(design, "face", "house"), "t")
    assert result.variance[10] == 0 and np.isnan(result.stat[10]) and np.isnan(result.z[10])
    assert np.all(np.isfinite(np.delete(result.z, 10)))
    F = fit.contrast(np.eye(design.shape[1])[:2], "F")
    assert np.isnan(F.stat[10]) and np.all(np.isfinite(np.delete(F.z, 10)))


def test_invalid_designs_and_contrasts_are_rejected():
    rng = np.random.default_rng(0)
    Y = rng.standard_normal((30, 20))
    X = np.column_stack([np.ones(30), rng.standard_normal(30)])
    with pytest.raises(DesignError, match="no residual dof"):
        FirstLevelEstimator().fit(Y[:2], X[:2])
    with pytest.raises(DesignError, match="NaN"):
        FirstLevelEstimator().fit(Y, np.where(X == 1, np.nan, X))
    with pytest.raises(ValueError, match="variances"):
        FirstLevelEstimator().fit(Y, X, variances=np.ones_like(Y))
    holed = Y.copy()
    holed[3, 5] = np.nan
    for noise_model in ("ar1", "ar2", "ols"):
        with pytest.raises(InputDataError, match="1 voxel"):
            FirstLevelEstimator(noise_model=noise_model).fit(holed, X)
    for bad in ("ar0", "ar", "arma", "ar-1"):
        with pytest.raises(ValueError, match="'ols', 'ar1', 'ar2'"):
            FirstLevelEstimator(noise_model=bad)
    with pytest.raises(DesignError, match="AR.29. noise model needs more than 30 scans"):
        FirstLevelEstimator(noise_model="ar29").fit(Y, X)
    fit = FirstLevelEstimator().fit(Y, X)
    with pytest.raises(DesignError, match="one row"):
        fit.contrast(np.eye(2), "t")
    with pytest.raises(DesignError, match="columns"):
        fit.contrast([1, 0, 0], "t")
    with pytest.raises(DesignError, match="test"):
        fit.contrast([1, 0], "z")
    # duplicated column: only the sum of the two is estimable
    deficient = FirstLevelEstimator().fit(Y, np.column_stack([X, X[:, 1]]))
    assert deficient.dof == 28
    with pytest.raises(DesignError, match="not estimable"):
        deficient.contrast([0, 1, 0], "t")
    summed = deficient.contrast([0, 1, 1], "t")
    assert_allclose(summed.stat, fit.contrast([0, 1], "t").stat, rtol=1e-8)


def assert_same_ar_fit(fit, reference, order):
    """Our AR(p) coefficients, per voxel, are the ones nilearn's models whitened with.

    Yule-Walker sums in another order than nilearn's, so coefficients agree to ~1e-15,
    not bit for bit; the k-means clusters (seeded alike) come out the same."""
    labels = reference.labels_[0]
    rho = np.empty((order, labels.size))
    for label, result in reference.results_[0].items():
        rho[:, labels == label] = np.asarray(result.model.rho)[:, None]
    # same clusters (one of ours per nilearn label) and centres up to rounding
    pairs = {(g, label) for g, label in zip(fit.group, labels)}
    assert len(pairs) == len(set(fit.group)) == len(set(labels))
    assert_allclose(fit.ar_coef, rho, rtol=0, atol=1e-12)
    assert fit.dof == next(iter(reference.results_[0].values())).df_residuals


@pytest.mark.parametrize(("run", "noise_model"), [(1, "ar2"), (8, "ar3")])
def test_arp_matches_nilearn_on_haxby(run, noise_model):
    order = int(noise_model[2:])
    img, design, mask = haxby_run(run)
    with warnings.catch_warnings(), threadpool_limits(1, user_api="openmp"):
        warnings.simplefilter("ignore")
        reference = FirstLevelModel(mask_img=mask, noise_model=noise_model, minimize_memory=False,
                                    random_state=3).fit(img, design_matrices=[design])
    fit = fit_ours(img, design, mask, noise_model=noise_model, random_state=3)
    assert_same_ar_fit(fit, reference, order)
    # the clustering really gives several whitening filters, with non-zero higher lags
    assert len(reference.results_[0]) > 20 and np.abs(fit.ar_coef[order - 1]).max() > 0.05

    face_house = weights(design, "face", "house")
    assert_same_t(fit.contrast(face_house, "t"), nilearn_contrast(reference, face_house, "t"), rtol=1e-8)
    F_weights = np.vstack([weights(design, name) for name in ("face", "house", "cat")])
    ours_F, reference_F = fit.contrast(F_weights, "F"), nilearn_contrast(reference, F_weights, "F")
    assert_allclose(ours_F.stat, reference_F["stat"], rtol=1e-8)
    assert_allclose(ours_F.z, reference_F["z_score"], rtol=1e-8, atol=1e-12)
    r_square = reference.masker_.transform(reference.r_square_[0]).ravel()
    assert_allclose(fit.model_maps()["rsquared"], r_square, rtol=1e-8)


@pytest.mark.parametrize("noise_model", ["ar2", "ar3"])
def test_arp_matches_nilearn_on_studyforrest(noise_model):
    order = int(noise_model[2:])
    img, design = forrest_run()
    # 4 of the 12 slices (~5k voxels): nilearn's k-means is the slow part
    in_brain = compute_epi_mask(img).get_fdata() > 0
    in_brain[:, :, :4] = in_brain[:, :, 8:] = False
    mask = nib.Nifti1Image(in_brain.astype(np.uint8), img.affine)
    with warnings.catch_warnings(), threadpool_limits(1, user_api="openmp"):
        warnings.simplefilter("ignore")
        reference = FirstLevelModel(mask_img=mask, noise_model=noise_model, minimize_memory=False,
                                    random_state=0).fit(img, design_matrices=[design])
    fit = fit_ours(img, design, mask, noise_model=noise_model, chunk_size=2048)
    assert fit.beta.shape[1] > 4000
    assert_same_ar_fit(fit, reference, order)
    face_house = weights(design, "face", "house")
    assert_same_t(fit.contrast(face_house, "t"), nilearn_contrast(reference, face_house, "t"), rtol=1e-8)
    conditions = np.eye(design.shape[1])[:6]
    assert_allclose(fit.contrast(conditions, "F").stat, nilearn_contrast(reference, conditions, "F")["stat"],
                    rtol=1e-8)


def test_arp_is_deterministic_for_a_seed_and_independent_of_chunking():
    img, design, mask = haxby_run(5)
    whole = fit_ours(img, design, mask, noise_model="ar2")
    chunked = fit_ours(img, design, mask, noise_model="ar2", chunk_size=7)
    assert_array_equal(whole.ar_coef, chunked.ar_coef)
    assert_allclose(chunked.beta, whole.beta, rtol=1e-12, atol=1e-12)
    # AR(1) written as ar1 is the existing binned model: a second lag changes the filters
    ar1 = fit_ours(img, design, mask, noise_model="ar1")
    assert ar1.ar_coef.shape == (1, 600) and whole.ar_coef.shape == (2, 600)


@pytest.mark.parametrize("fwhm", [None, 6.0], ids=["unsmoothed", "smoothed"])
def test_int16_bold_falls_in_nilearns_ar1_bins(tmp_path, fwhm):
    """An int16 image (as scanners and fMRIPrep write them), read by io.images.load_run_data and scaled
    by scale_timeseries: float32, as nilearn's masker and mean_scaling, so every voxel's AR(1)
    coefficient falls in nilearn FirstLevelModel's bin and the maps agree to rounding. The same data
    scaled in float64 (what we did before) put voxels into other bins: small noise about a large
    mean (0.025 %) makes float32 rounding matter in many voxels."""
    from bids_app.io.images import load_run_data

    rng = np.random.default_rng(7)
    n_scans, shape, t_r = 100, (24, 24, 22), 2.0
    events = pd.DataFrame({"onset": np.arange(10.0, 180.0, 30.0), "duration": 10.0, "trial_type": "task"})
    box = ((np.arange(n_scans)[:, None] * t_r >= events.onset.values)
           & (np.arange(n_scans)[:, None] * t_r < events.onset.values + 10)).any(axis=1)
    noise = rng.standard_normal((*shape, n_scans))
    noise[..., 1:] += 0.3 * noise[..., :-1]
    data = np.round(20000 + 5 * noise + 3 * box).astype(np.int16)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "bold.nii.gz")
    mask = nib.Nifti1Image(np.ones(shape, dtype=np.uint8), affine)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = FirstLevelModel(t_r=t_r, mask_img=mask, smoothing_fwhm=fwhm, noise_model="ar1",
                                    minimize_memory=False).fit(str(tmp_path / "bold.nii.gz"), events=events)
    design = reference.design_matrices_[0]
    reference_bins = np.round(reference.labels_[0].astype(float) * 100)
    c = weights(design, "task")
    # not nilearn_contrast: the model's masker would smooth the maps again
    expected = {key: apply_mask(img, mask) for key, img in reference.compute_contrast(c, output_type="all").items()}

    Y, _ = load_run_data(tmp_path / "bold.nii.gz", mask, fwhm)
    assert Y.dtype == np.float32 and Y.flags.c_contiguous and Y.shape == (n_scans, data[..., 0].size)
    scaled, mean = scale_timeseries(Y)
    assert scaled.dtype == mean.dtype == np.float32
    fit = FirstLevelEstimator().fit(scaled, design.values)
    assert np.count_nonzero(np.round(fit.ar_coef[0] * 100) != reference_bins) == 0
    assert len(np.unique(reference_bins)) > 10
    result = fit.contrast(c, "t")
    for ours, key in ((result.stat, "stat"), (result.effect, "effect_size"), (result.z, "z_score")):
        assert np.abs(ours - expected[key]).max() < 1e-9 * max(1.0, np.abs(expected[key]).max()), key
    assert np.abs(result.stat).max() > 3  # the task is seen

    # float64 scaling of the same values misses nilearn's bins: what this test guards against
    fit64 = FirstLevelEstimator().fit(scale_timeseries(Y.astype(np.float64))[0], design.values)
    assert np.count_nonzero(np.round(fit64.ar_coef[0] * 100) != reference_bins) > 0


def test_fit_uses_one_blas_thread(monkeypatch):
    """The per-AR-value products are small: the fit runs them on one BLAS thread whatever the
    caller's setting (a second thread only synchronised, 3x slower on a busy 2-core machine)."""
    from threadpoolctl import threadpool_info

    import bids_app.estimation.first_level as first_level

    def blas_threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    seen, original = [], first_level._least_squares

    def recording(Y, design):
        seen.append(blas_threads())
        return original(Y, design)

    monkeypatch.setattr(first_level, "_least_squares", recording)
    img, design, mask = haxby_run(1)
    with threadpool_limits(2, user_api="blas"):
        assert blas_threads() == {2}
        fit = fit_ours(img, design, mask)
        assert blas_threads() == {2}  # restored
    assert len(seen) == len(np.unique(fit.ar_coef[0])) > 5 and all(s == {1} for s in seen)
