"""io.bold.scan_bold against the same summaries computed from nibabel's scaled float64 array."""
import numpy as np
import nibabel as nb
import pytest

from bids_app.io.bold import scan_bold


def _reference(path):
    data = nb.load(path).get_fdata()
    finite = np.isfinite(data)
    nonfinite = ~finite.all(axis=3)
    constant = ~nonfinite & (data.min(axis=3) == data.max(axis=3))
    bad = []
    for t in range(data.shape[3]):
        values = data[..., t][finite[..., t]]
        if not values.size:
            bad.append((t, "no finite value (all NaN/inf)"))
        elif values.min() == values.max():
            bad.append((t, f"every voxel is {values[0]:g}"))
    return nonfinite, constant, bad


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.uint8, ">f4"])
@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_scan_equals_the_summaries_of_the_scaled_array(tmp_path, dtype, scaled, ext):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(5, 6, 4, 8)) * 40 + 60).astype(dtype)
    x[..., 2] = 7                          # a volume of one value
    x[1, 2, 3, :] = 7                      # a voxel constant over time
    if np.dtype(dtype).kind == "f":
        x[0, 0, 0, 3] = np.nan
        x[2, 2, 2, 1] = np.inf
        x[..., 5] = np.nan                 # a volume without finite values
        x[..., 6] = 3
        x[0, 1, 1, 6] = -np.inf            # one value, and one infinite voxel
    img = nb.Nifti1Image(x, np.eye(4))
    if scaled:
        img.header.set_slope_inter(2.5, -1.0)
    path = tmp_path / f"bold{ext}"
    nb.save(img, path)
    nonfinite, constant, bad = _reference(path)
    scan = scan_bold(path)
    assert scan.shape == x.shape
    np.testing.assert_array_equal(scan.nonfinite, nonfinite)
    np.testing.assert_array_equal(scan.constant, constant)
    assert scan.bad_volumes == bad
    # the cases occur: a bad volume, and a constant voxel where no volume is all NaN
    assert (2, f"every voxel is {7 * (2.5 if scaled else 1) - (1 if scaled else 0):g}") in bad
    assert constant[1, 2, 3] == (np.dtype(dtype).kind != "f")


@pytest.mark.parametrize("dtype", [np.int16, np.uint32, np.float32, np.float64, ">f4"])
@pytest.mark.parametrize("scaled", [False, True])
@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])  # gzip through ISA-L; memory-mapped
def test_masked_series_equal_nilearns_apply_mask(tmp_path, dtype, scaled, ext):
    from nilearn.masking import apply_mask

    from bids_app.io.images import load_run_data

    rng = np.random.default_rng(1)
    x = (rng.normal(size=(7, 8, 6, 9)) * 1e3 + 2e3).astype(dtype)
    if dtype == np.uint32:
        x = x * 5000 + 16777217            # above 2**24: float32 rounds, as in nilearn
    if np.dtype(dtype).kind == "f":
        x[1, 1, 1, 3], x[2, 3, 1, 0] = np.nan, np.inf
    img = nb.Nifti1Image(x, np.diag([2.0, 2.0, 2.0, 1.0]))
    if scaled:
        img.header.set_slope_inter(0.37, 5.0)
    nb.save(img, tmp_path / f"bold{ext}")
    mask = rng.random((7, 8, 6)) > 0.4
    mask[1, 1, 1] = mask[2, 3, 1] = True
    mask_img = nb.Nifti1Image(mask.astype(np.uint8), img.affine)
    ours, _ = load_run_data(tmp_path / f"bold{ext}", mask_img, None)
    reference = apply_mask(nb.load(tmp_path / f"bold{ext}"), mask_img)
    # nilearn's dtype (float32 for integers, so the scaling is nilearn's float32 arithmetic), native byte order
    assert ours.dtype == reference.dtype.newbyteorder("=") and ours.dtype.isnative
    if np.dtype(dtype).kind in "iu" and not scaled:  # scaled: nibabel's float64
        assert ours.dtype == np.float32
    assert ours.shape == (9, mask.sum()) and ours.flags.c_contiguous
    np.testing.assert_array_equal(ours, reference)
