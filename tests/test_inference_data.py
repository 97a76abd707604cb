"""Real group data shared by the inference tests (wager2008_emoreg), and its checks.

The other ``test_inference_*`` modules import :func:`wager` from here. The
mask is "voxels finite and non-zero in every subject's map" intersected with
nilearn's packaged MNI152 brain mask resampled (nearest) to the data grid.
"""
import functools
import warnings
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import stats

from conftest import real_data


@dataclass(frozen=True)
class Group:
    """Masked subject maps and what is needed to put them back in space."""

    Y: np.ndarray           # (n_subjects, n_voxels) effect maps, mask order
    mask: np.ndarray        # (x, y, z) bool
    affine: np.ndarray      # (4, 4)
    images: tuple           # the subjects' Nifti1Images (for nilearn)
    participants: pd.DataFrame

    def volume(self, values):
        """Masked values back to an (x, y, z) float64 array, 0 outside the mask."""
        out = np.zeros(self.mask.shape)
        out[self.mask] = values
        return out

    def mask_img(self):
        return nib.Nifti1Image(self.mask.astype(np.uint8), self.affine)


@functools.lru_cache(maxsize=None)
def wager() -> Group:
    """The 30 wager2008_emoreg effect maps, masked (skips when the data are absent)."""
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_to_img

    root = real_data("wager2008_emoreg")
    files = sorted(root.glob("sub-*/*_stat-effect_statmap.nii.gz"))
    images = tuple(nib.load(f) for f in files)
    data = np.stack([img.get_fdata() for img in images])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nilearn's resampling deprecation chatter
        mni = resample_to_img(load_mni152_brain_mask(resolution=2), images[0],
                              interpolation="nearest", copy_header=True, force_resample=True)
    mask = np.all(np.isfinite(data) & (data != 0), axis=0) & (mni.get_fdata() > 0)
    participants = pd.read_csv(root / "participants.tsv", sep="\t")
    assert participants.participant_id.tolist() == [f.parent.name for f in files]
    return Group(data[:, mask], mask, images[0].affine, images, participants)


def one_sample_z(group: Group) -> np.ndarray:
    """OLS one-sample t of the group mean, as z (same tail probability), masked."""
    n = group.Y.shape[0]
    t = group.Y.mean(axis=0) / (group.Y.std(axis=0, ddof=1) / np.sqrt(n))
    return np.where(t > 0, stats.norm.isf(stats.t.sf(t, n - 1)),
                    stats.norm.ppf(stats.t.cdf(t, n - 1)))


def test_wager_mask_is_brain_sized():
    group = wager()
    assert group.Y.shape[0] == 30
    # 3.44 x 3.44 x 4.5 mm voxels: a whole-brain mask holds ~1.8 litres
    volume_l = group.mask.sum() * abs(np.linalg.det(group.affine[:3, :3])) / 1e6
    assert 1.3 < volume_l < 2.0


def test_one_sample_z_matches_scipy_ttest():
    group = wager()
    z = one_sample_z(group)
    result = stats.ttest_1samp(group.Y, 0.0, axis=0)
    expected = np.where(result.statistic > 0, stats.norm.isf(result.pvalue / 2),
                        -stats.norm.isf(result.pvalue / 2))
    np.testing.assert_allclose(z, expected, rtol=1e-9, atol=1e-9)
