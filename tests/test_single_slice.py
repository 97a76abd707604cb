"""Single-slice volumes (one z plane, e.g. Haxby's ``acq-1slice`` runs) through a group level,
and a report figure that cannot be drawn: the analysis finishes and provenance says what is missing."""
import json

import nibabel as nb
import numpy as np
import pytest
from scipy import stats

from bids_app.cli import main
from bids_app.io.maps import read_map
from bids_app.report import figures
from conftest import MODELS
from simulate_maps import AFFINE, simulate_maps

SLICE = 5


@pytest.mark.parametrize("shape", [(4, 5, 1), (4, 5, 1, 1)])
def test_a_single_slice_map_reads_as_three_dimensional(tmp_path, shape):
    values = np.arange(20, dtype=np.float32).reshape(shape)
    nb.save(nb.Nifti1Image(values, np.eye(4)), tmp_path / "map.nii.gz")
    data, affine, stored = read_map(tmp_path / "map.nii.gz")
    assert data.shape == (4, 5, 1)
    assert stored == (4, 5, 1)
    np.testing.assert_array_equal(data[..., 0], values.reshape(4, 5))


def _single_slice_dataset(root):
    """Simulated maps cut to their plane z = SLICE (shape (10, 12, 1)); the arrays kept for references."""
    maps = simulate_maps(root, task="emoreg", subjects=[f"{i:02d}" for i in range(1, 9)], contrasts=["a"])
    affine = AFFINE.copy()
    affine[2, 3] += SLICE * AFFINE[2, 2]
    effects = []
    for m in maps:
        for stat in ("effect", "variance"):
            path = m.path.with_name(m.path.name.replace("stat-effect", f"stat-{stat}"))
            plane = np.asarray(nb.load(path).dataobj)[:, :, SLICE:SLICE + 1]
            nb.save(nb.Nifti1Image(plane, affine), path)
        effects.append(m.effect[:, :, SLICE])
    return np.stack(effects)


def test_single_slice_maps_through_a_dataset_node(tmp_path, monkeypatch):
    effects = _single_slice_dataset(tmp_path / "data")

    def fail(*args, **kwargs):
        raise ValueError("simulated plotting failure")

    monkeypatch.setattr(figures, "stat_map", fail)
    out = tmp_path / "out"
    assert main([str(tmp_path / "data"), str(out), "dataset", "--model",
                 str(MODELS / "group_one_sample.json")]) == 0
    t_img = nb.load(next((out / "node-oneSample").glob("*contrast-a_stat-t_statmap.nii.gz")))
    assert t_img.shape == (10, 12, 1)
    t = np.asarray(t_img.dataobj)[:, :, 0]
    fitted = np.isfinite(effects).all(axis=0)
    assert fitted.sum() > 50
    reference = stats.ttest_1samp(effects[:, fitted], 0.0).statistic
    np.testing.assert_allclose(t[fitted], reference, rtol=1e-5)
    # every z map figure failed: the run still succeeds, provenance and the report say so
    warnings = json.loads((out / "provenance.json").read_text())["Warnings"]
    failed = [w for w in warnings if w.startswith("report: figure not drawn: z map")]
    assert failed and all("simulated plotting failure" in w for w in failed)
    assert "Figure not drawn: z map" in (out / "report.html").read_text()
