"""Group mask (coverage, explicit mask, MNI fallback), outside-brain check, input QC.

Real data: the Wager et al. 2008 maps fill their whole box (no brain mask),
the pain21 maps are masked and come with variance maps and a coverage mask.
References are computed independently with nilearn's resampling and numpy.
"""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from nilearn.datasets import load_mni152_brain_mask
from nilearn.image import resample_to_img

from bids_app.design.group_mask import group_mask
from bids_app.inference.outside_brain import outside_brain_report
from bids_app.io.images import mask_on_grid, template_brain_mask
from bids_app.design.input_qc import qc_maps
from bids_app.errors import InputDataError
from conftest import real_data

@pytest.fixture(scope="module")
def wager(wager_maps):
    images, data, _ = wager_maps
    return data, images[0]


@pytest.fixture(scope="module")
def pain():
    """Five pain21 studies: effects, variances, first image."""
    root = real_data("pain21")
    effects = sorted(root.glob("sub-0[1-5]/*_stat-effect_statmap.nii.gz"))
    variances = sorted(root.glob("sub-0[1-5]/*_stat-variance_statmap.nii.gz"))
    imgs = [nib.load(f) for f in effects]
    return ([img.get_fdata() for img in imgs], [nib.load(f).get_fdata() for f in variances],
            [f.name for f in effects], imgs[0])


# --- group mask -----------------------------------------------------------------------

def test_unmasked_wager_maps_fall_back_to_the_mni_brain_mask(wager):
    data, img = wager
    mask, info = group_mask(data, img.affine, template=lambda: template_brain_mask(img.affine, img.shape[:3]))
    assert info["box_fraction_covered"] > 0.75 and info["template"] is not None
    assert "MNI152" in info["rule"]
    # the reference: every input valid, inside nilearn's template resampled independently
    template = resample_to_img(load_mni152_brain_mask(resolution=2), img,
                               interpolation="nearest", force_resample=True, copy_header=True)
    expected = (np.isfinite(data) & (data != 0)).all(axis=0) & (template.get_fdata() > 0)
    np.testing.assert_array_equal(mask, expected)
    corners = [mask[i, j, k] for i in (0, -1) for j in (0, -1) for k in (0, -1)]
    assert not any(corners)
    # the masked volume is the template brain's volume (both in mm^3, within 5 %)
    voxel_mm3 = abs(np.linalg.det(img.affine[:3, :3]))
    brain_mm3 = np.count_nonzero(load_mni152_brain_mask(resolution=2).get_fdata()) * 8.0
    assert mask.sum() * voxel_mm3 == pytest.approx(brain_mm3, rel=0.05)
    assert info["n_voxels_mask"] == mask.sum() < info["n_voxels_covered"]
    json.dumps(info)


def test_masked_inputs_keep_the_coverage_rule_only(pain):
    effects, _, _, img = pain
    data = np.stack(effects)
    mask, info = group_mask(data, img.affine, template=lambda: template_brain_mask(img.affine, img.shape[:3]))
    assert info["template"] is None and info["box_fraction_covered"] < 0.5
    np.testing.assert_array_equal(mask, (np.isfinite(data) & (data != 0)).all(axis=0))


def test_coverage_counts_inputs():
    data = np.ones((4, 2, 1, 1))
    data[0, 0] = np.nan
    data[1, 0] = 0.0          # voxel 0 valid in 2 of 4 inputs, voxel 1 in 4 of 4
    for coverage, expected in [(1.0, [False, True]), (0.75, [False, True]), (0.5, [True, True])]:
        mask, info = group_mask(data, np.eye(4), coverage=coverage, brain_mask=False)
        assert mask[:, 0, 0].tolist() == expected
        assert info["min_valid_inputs"] == int(np.ceil(coverage * 4))


def test_explicit_mask_is_resampled_and_intersected(pain):
    effects, _, _, img = pain
    data = np.stack(effects)
    path = real_data("pain21/group_mask_min10studies.nii.gz")
    coarse = nib.Nifti1Image(nib.load(path).get_fdata()[::2, ::2, ::2],
                             nib.load(path).affine @ np.diag([2, 2, 2, 1]))
    mask, info = group_mask(data, img.affine, explicit_mask=mask_on_grid(coarse, img.affine, img.shape[:3]))
    explicit = resample_to_img(coarse, img, interpolation="nearest", force_resample=True,
                               copy_header=True).get_fdata() > 0
    np.testing.assert_array_equal(mask, (np.isfinite(data) & (data != 0)).all(0) & explicit)
    assert info["n_voxels_explicit"] == explicit.sum()
    assert "explicit mask" in info["rule"] and info["template"] is None


def test_empty_mask_is_an_error():
    with pytest.raises(InputDataError, match="group mask is empty"):
        group_mask(np.zeros((3, 2, 2, 2)), np.eye(4), brain_mask=False)


def test_outside_brain_report_on_the_unmasked_wager_t_map(wager):
    data, img = wager
    with np.errstate(invalid="ignore", divide="ignore"):
        t = data.mean(0) / (data.std(0, ddof=1) / np.sqrt(len(data)))
    report = outside_brain_report(t, 3.0, img.affine, template_brain_mask(img.affine, t.shape))
    template = resample_to_img(load_mni152_brain_mask(resolution=2), img,
                               interpolation="nearest", force_resample=True,
                               copy_header=True).get_fdata() > 0
    supra = np.isfinite(t) & (np.abs(t) > 3.0)
    assert report["n_suprathreshold"] == supra.sum()
    assert report["n_outside_brain"] == (supra & ~template).sum() > 0
    assert report["flagged"] == (report["fraction_outside"] > 0.1)
    peak = report["peak_outside"]
    assert abs(peak["value"]) == pytest.approx(np.abs(t[supra & ~template]).max())
    np.testing.assert_allclose(peak["mm"], nib.affines.apply_affine(img.affine, peak["voxel"]),
                               atol=0.01)
    # once restricted to the group mask, nothing is left outside the brain
    mask, _ = group_mask(data, img.affine, template=lambda: template_brain_mask(img.affine, img.shape[:3]))
    assert outside_brain_report(np.where(mask, t, 0.0), 3.0, img.affine,
                                template_brain_mask(img.affine, t.shape))["n_outside_brain"] == 0
    json.dumps(report)


# --- input QC ---------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["simulated", "pain21"])
def qc_pain(request):
    """Five studies' effect and variance maps: simulated in memory (an ellipsoid of values,
    0 outside, on a 2 mm grid), and five real pain21 studies."""
    if request.param == "pain21":
        return request.getfixturevalue("pain")
    rng = np.random.default_rng(11)
    shape = (20, 24, 18)
    grid = np.indices(shape) - (np.array(shape) - 1)[:, None, None, None] / 2
    inside = ((grid / (np.array(shape) / 2)[:, None, None, None]) ** 2).sum(0) <= 1
    effects = [np.where(inside, rng.normal(1.0, 1.0, shape), 0.0) for _ in range(5)]
    variances = [np.where(inside, rng.uniform(0.5, 2.0, shape), 0.0) for _ in range(5)]
    affine = np.array([[2.0, 0, 0, -20], [0, 2.0, 0, -40], [0, 0, 2.0, -10], [0, 0, 0, 1]])
    return effects, variances, [f"sub-0{i}_stat-effect_statmap.nii.gz" for i in range(1, 6)], \
        nib.Nifti1Image(effects[0], affine)


def _qc_inputs(pain):
    effects, variances, names, img = pain
    return ([e.copy() for e in effects], [v.copy() for v in variances], list(names),
            [img.affine.copy() for _ in names], [e.shape for e in effects])


def test_good_inputs_pass_qc(qc_pain):
    effects, variances, names, affines, shapes = _qc_inputs(qc_pain)
    report = qc_maps(effects, variances, names, affines, shapes)
    assert report.kept == list(range(len(names))) and report.excluded == []


def test_all_nan_map_is_excluded_with_a_reason(qc_pain):
    effects, variances, names, affines, shapes = _qc_inputs(qc_pain)
    effects[2][:] = np.nan
    report = qc_maps(effects, variances, names, affines, shapes)
    assert report.kept == [0, 1, 3, 4]
    assert report.excluded == [{"index": 2, "name": names[2], "reasons": ["all values are NaN"]}]
    assert json.loads(json.dumps(report.to_dict()))["excluded"][0]["name"] == names[2]


def test_every_kind_of_bad_file_is_flagged(qc_pain):
    effects, variances, names, affines, shapes = _qc_inputs(qc_pain)
    effects[0][:] = 0.0
    effects[1] = np.where(effects[1] != 0, 2.5, 0.0)
    inside = np.flatnonzero(np.isfinite(effects[2]) & (effects[2] != 0))
    variances[2].reshape(-1)[inside[:7]] = 0.0
    variances[2].reshape(-1)[inside[7:10]] = np.nan
    variances[2].reshape(-1)[np.flatnonzero(effects[2] == 0)[:50]] = -1.0  # outside: ignored
    affines[3][0, 3] += 2.0
    shape = shapes[4]
    shapes[4] = (*shape[:2], shape[2] - 1)
    good = _qc_inputs(qc_pain)
    report = qc_maps(effects + good[0][:2], variances + good[1][:2], names + ["a", "b"],
                     affines + good[3][:2], shapes + good[4][:2])
    reasons = {e["index"]: e["reasons"] for e in report.excluded}
    assert report.kept == [5, 6] and report.kept_names == ["a", "b"]
    assert reasons == {
        0: ["all values are zero"],
        1: ["constant map: every non-zero value is 2.5"],
        2: [f"variance has 3 NaN/inf and 7 zero or negative values in {inside.size} voxels "
            "where the effect is defined"],
        3: ["affine differs from that of most inputs (max difference 2 mm)"],
        4: [f"shape {shapes[4]} differs from {shape} of most inputs"],
    }


def test_fail_policy_lists_every_bad_file(qc_pain):
    effects, variances, names, affines, shapes = _qc_inputs(qc_pain)
    effects[1][:] = np.nan
    effects[3][:] = 0.0
    with pytest.raises(InputDataError) as err:
        qc_maps(effects, variances, names, affines, shapes, policy="fail")
    message = str(err.value)
    assert f"{names[1]}: all values are NaN" in message
    assert f"{names[3]}: all values are zero" in message
    assert names[0] not in message


def test_no_usable_input_is_an_error():
    with pytest.raises(InputDataError, match="no input map passed"):
        qc_maps([np.full((2, 2, 2), np.nan)], None, ["x.nii"], [np.eye(4)], [(2, 2, 2)])


@pytest.mark.parametrize("affine, shape", [
    (np.diag([3.0, 3.0, 3.0, 1.0]) + np.array([[0, 0, 0, -96], [0, 0, 0, -132], [0, 0, 0, -78], [0, 0, 0, 0]]),
     (67, 79, 64)),                                                          # nilearn's 3 mm MNI grid
    (np.diag([-3.44, 3.44, 4.5, 1.0]) + np.array([[0, 0, 0, 78], [0, 0, 0, -112], [0, 0, 0, -50], [0, 0, 0, 0]]),
     (47, 56, 31)),                                                          # wager2008's SPM grid
    (np.diag([2.0, 2.0, 2.0, 1.0]) + np.array([[0, 0, 0, -90], [0, 0, 0, -126], [0, 0, 0, -72], [0, 0, 0, 0]]),
     (91, 109, 91)),                                                         # the 2 mm MNI grid of pain21
    (np.array([[1.9, 0.2, 0, -88], [-0.2, 1.9, 0, -120], [0, 0, 2.5, -70], [0, 0, 0, 1]]), (90, 110, 60)),
])
def test_template_mask_equals_nilearn_resampling(affine, shape, tmp_path, monkeypatch):
    # the cached template and our resampling give nilearn's resample_img voxel for voxel
    from nilearn.datasets import load_mni152_brain_mask

    from bids_app.io import images as gm

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    gm._mni_mask.cache_clear(), gm._template_on_grid.cache_clear()
    try:
        ours = gm.template_brain_mask(affine, shape)
        gm._mni_mask.cache_clear(), gm._template_on_grid.cache_clear()
        cached = gm.template_brain_mask(affine, shape)      # read back from the cache folder
    finally:
        gm._mni_mask.cache_clear(), gm._template_on_grid.cache_clear()
    expected = gm.mask_on_grid(load_mni152_brain_mask(resolution=2), affine, shape)
    assert ours.shape == tuple(shape) and ours.sum() > 1000
    np.testing.assert_array_equal(ours, expected)
    np.testing.assert_array_equal(cached, expected)
    assert len(list((tmp_path / "bids-stats").glob("mni152-brain-mask-*.npz"))) == 1
