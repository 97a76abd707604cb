"""The real group data shared by the inference tests (conftest's ``wager_group``), and its checks."""
import numpy as np
from scipy import stats

from conftest import one_sample_z


def test_wager_mask_is_brain_sized(wager_group):
    group = wager_group
    assert group.Y.shape[0] == 30
    # 3.44 x 3.44 x 4.5 mm voxels: a whole-brain mask holds ~1.8 litres
    volume_l = group.mask.sum() * abs(np.linalg.det(group.affine[:3, :3])) / 1e6
    assert 1.3 < volume_l < 2.0


def test_one_sample_z_matches_scipy_ttest(wager_group):
    group = wager_group
    z = one_sample_z(group)
    result = stats.ttest_1samp(group.Y, 0.0, axis=0)
    expected = np.where(result.statistic > 0, stats.norm.isf(result.pvalue / 2),
                        -stats.norm.isf(result.pvalue / 2))
    np.testing.assert_allclose(z, expected, rtol=1e-9, atol=1e-9)
