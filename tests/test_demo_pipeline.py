"""The built-in demo end to end: the planted activation is recovered at the dataset node."""
import json

import nibabel as nb
import numpy as np

from bids_app.cli import main


def test_demo_recovers_planted_activation(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "demo"), "--subjects", "5"]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "demo" / "out"
    truth = json.loads((tmp_path / "demo" / "bids" / "code" / "simulation_truth.json").read_text())
    zpath = next((out / "node-dataset").glob(f"*contrast-{truth['contrast']}_stat-z_statmap.nii.gz"))
    img = nb.load(zpath)
    z = np.asarray(img.dataobj, dtype=float)
    ijk = np.unravel_index(np.nanargmax(z), z.shape)
    peak_mm = nb.affines.apply_affine(img.affine, ijk)
    distance = np.linalg.norm(peak_mm - np.asarray(truth["center_mm"]))
    assert distance <= truth["radius_mm"], (peak_mm, truth["center_mm"])
    assert np.nanmax(z) > 3.0
    # far from the activation the uncorrected rate stays near 5 %
    valid = np.argwhere(np.isfinite(z))
    far = np.linalg.norm(nb.affines.apply_affine(img.affine, valid) - truth["center_mm"], axis=1) > 3 * truth["radius_mm"]
    rate = np.mean(z[tuple(valid[far].T)] > 1.6449)
    assert 0.01 < rate < 0.12, rate
    assert f"{distance:.1f} mm from the planted centre" in printed
    # the whole chain ran: run -> subject (fixed effects) -> dataset
    prov = json.loads((out / "provenance.json").read_text())
    nodes = {u["node"] for u in prov["Units"]}
    assert len(nodes) == 3
    assert (out / "dataset_description.json").exists() and (out / "report.html").exists()
