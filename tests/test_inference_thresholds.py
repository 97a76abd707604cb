"""threshold_map against nilearn's threshold_stats_img, on a simulated and a real group z map."""
import itertools
import warnings

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bids_app.inference.thresholds import threshold_map

CASES = list(itertools.product(["fdr", "bonferroni", "fpr", "none"], [True, False], [0, 10]))


@pytest.mark.parametrize(("height_control", "two_sided", "cluster_min_size"), CASES)
def test_matches_nilearn_threshold_stats_img(zmap, height_control, two_sided, cluster_min_size):
    from nilearn.glm import threshold_stats_img

    group, z = zmap
    alpha = 0.05 if height_control in ("fdr", "bonferroni") else 0.001
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nilearn's FutureWarning about its default threshold
        expected, expected_threshold = threshold_stats_img(
            nib.Nifti1Image(z, group.affine), group.mask_img(), alpha=alpha,
            height_control=None if height_control == "none" else height_control,
            threshold=3.0 if height_control == "none" else None,
            cluster_threshold=cluster_min_size, two_sided=two_sided)
    result = threshold_map(z, group.mask, height_control=height_control, alpha=alpha,
                           cluster_min_size=cluster_min_size, two_sided=two_sided,
                           threshold=3.0, affine=group.affine)
    assert result.threshold == expected_threshold
    np.testing.assert_array_equal(result.thresholded, expected.get_fdata())
    surviving = np.count_nonzero(result.thresholded)
    assert surviving == result.info["n_voxels_surviving"] > 0
    assert result.info["n_voxels_tested"] == group.mask.sum()
    assert result.info["voxel_volume_mm3"] == pytest.approx(abs(np.linalg.det(group.affine[:3, :3])))


def test_cluster_extent_removes_small_clusters_only(zmap):
    group, z = zmap
    every = threshold_map(z, group.mask, height_control="fpr", alpha=0.001, two_sided=True)
    large = threshold_map(z, group.mask, height_control="fpr", alpha=0.001, two_sided=True,
                          cluster_min_size=10)
    kept = large.thresholded != 0
    removed = (every.thresholded != 0) & ~kept
    assert removed.any() and kept.any()
    structure = ndimage.generate_binary_structure(3, 1)
    for sign in (1, -1):
        labels, _ = ndimage.label(sign * every.thresholded > 0, structure)
        sizes = np.bincount(labels.ravel())
        assert np.all(sizes[np.unique(labels[kept & (sign * z > 0)])] >= 10)
        assert np.all(sizes[np.unique(labels[removed & (sign * z > 0)])] < 10)
    assert large.info["n_clusters"] < every.info["n_clusters"]


def test_fdr_without_discoveries_keeps_nothing(zmap):
    group, z = zmap
    result = threshold_map(z, group.mask, height_control="fdr", alpha=1e-12)
    assert result.threshold == np.inf
    assert not result.thresholded.any()


def test_rejects_unknown_height_control(zmap):
    group, z = zmap
    with pytest.raises(ValueError, match="height_control"):
        threshold_map(z, group.mask, height_control="holm")


def test_fdr_threshold_and_norm_isf_equal_nilearn_and_scipy(zmap):
    # our copies exist only to avoid importing nilearn.glm / scipy.stats; they must agree exactly
    from nilearn.glm import fdr_threshold as nilearn_fdr
    from scipy import stats

    from bids_app.inference.thresholds import fdr_threshold, norm_isf

    z = np.asarray(zmap[1], dtype=np.float64)
    tested = z[np.isfinite(z) & (z != 0)]
    rng = np.random.default_rng(0)
    for values in (tested, np.abs(tested), rng.normal(size=5000), rng.normal(size=300) + 3):
        for alpha in (0.001, 0.025, 0.05, 0.2):
            assert fdr_threshold(values, alpha) == nilearn_fdr(values, alpha)
    q = np.concatenate([rng.uniform(size=1000), 10.0 ** -np.arange(1, 15), [0.5, 0.025, 0.0005]])
    np.testing.assert_array_equal(norm_isf(q), stats.norm.isf(q))
    assert fdr_threshold(np.array([0.1, 0.2]), 0.05) == np.inf
