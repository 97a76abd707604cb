"""The built-in demo end to end: the planted activation is recovered at the dataset node."""
import json

import nibabel as nb
import numpy as np
from scipy import ndimage

from bids_app.cli import main


def test_demo_recovers_planted_activation(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "demo"), "--subjects", "5"]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "demo" / "out"
    truth = json.loads((tmp_path / "demo" / "bids" / "code" / "simulation_truth.json").read_text())
    zpath = next((out / "node-dataset").glob(f"*contrast-{truth['contrast']}_stat-z_statmap.nii.gz"))
    img = nb.load(zpath)
    z = np.asarray(img.dataobj, dtype=float)
    # the largest cluster at p < 0.001 (read independently of the app's own scoring)
    above = np.nan_to_num(z) > 3.0902
    labels, n = ndimage.label(above)
    assert n >= 1
    sizes = ndimage.sum(above, labels, range(1, n + 1))
    largest = labels == 1 + int(np.argmax(sizes))
    ijk = np.unravel_index(np.argmax(np.where(largest, z, -np.inf)), z.shape)
    peak_mm = nb.affines.apply_affine(img.affine, ijk)
    distance = np.linalg.norm(peak_mm - np.asarray(truth["center_mm"]))
    assert distance <= truth["radius_mm"], (peak_mm, truth["center_mm"])
    # the cluster is the planted sphere (33 voxels of 4 mm at 10 mm radius), not a speck
    assert sizes.max() >= 10
    # far from the activation the uncorrected rate stays near 5 %
    valid = np.argwhere(np.isfinite(z))
    far = np.linalg.norm(nb.affines.apply_affine(img.affine, valid) - truth["center_mm"], axis=1) > 3 * truth["radius_mm"]
    rate = np.mean(z[tuple(valid[far].T)] > 1.6449)
    assert 0.01 < rate < 0.12, rate
    assert f"{distance:.1f} mm from the planted centre" in printed
    # the whole chain ran: run -> subject (fixed effects) -> dataset
    prov = json.loads((out / "provenance.json").read_text())
    nodes = {u["Node"] for u in prov["Units"]}
    assert len(nodes) == 3
    assert (out / "dataset_description.json").exists() and (out / "report.html").exists()
