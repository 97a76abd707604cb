"""``bids-stats demo``: simulate a dataset with a known activation, run the demo model, score recovery."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import nibabel as nb
import numpy as np

from bids_app.demo.simulate import simulate_dataset
from bids_app.derivatives.naming import output_dir
from bids_app.graph.pipeline import run_app
from bids_app.graph.units import Settings
from bids_app.inference.clusters import cluster_table
from bids_app.spec import load_model

#: one-sided uncorrected p = 0.05
_FALSE_POSITIVE_Z = 1.6449
#: one-sided uncorrected p = 0.001, the usual cluster-forming threshold
_CLUSTER_Z = 3.0902


def demo_model_path() -> Path:
    """The demo model, installed with the package (``models/demo.json`` links to it)."""
    return Path(str(files("bids_app") / "data" / "demo.json"))


def score_recovery(zmap: Path, truth: dict) -> dict:
    """Where the largest cluster peaks, how far from the planted centre; false positives far from it.

    The recovered activation is the largest cluster at z > 3.09 (p < 0.001
    one-sided, uncorrected), as a reader of the cluster table would find it:
    with few subjects the t test has few degrees of freedom, and the single
    highest voxel of a whole-brain map can be a heavy-tailed null voxel.
    Voxels farther than three radii from the centre carry no signal, so the
    fraction of them above z = 1.645 estimates the uncorrected
    false-positive rate (nominal 5 %).
    """
    img = nb.load(zmap)
    z = np.asarray(img.dataobj, dtype=float)
    valid = np.isfinite(z)
    xyz = nb.affines.apply_affine(img.affine, np.argwhere(valid))
    values = z[valid]
    centre = np.asarray(truth["center_mm"], dtype=float)
    far = np.linalg.norm(xyz - centre, axis=1) > 3 * float(truth["radius_mm"])
    clusters = cluster_table(z, img.affine, _CLUSTER_Z, atlases=())
    peaks = clusters[clusters["peak"] == 0]
    score = {
        "max_z": float(values.max()),
        "n_clusters": int(len(peaks)),
        "false_positive_rate": float(np.mean(values[far] > _FALSE_POSITIVE_Z)),
        "n_far_voxels": int(far.sum()),
    }
    if len(peaks):
        largest = peaks.sort_values(["cluster_size_voxels", "peak_stat"], ascending=False).iloc[0]
        peak_mm = largest[["x", "y", "z"]].to_numpy(dtype=float)
        score.update(peak_z=float(largest["peak_stat"]), peak_mm=peak_mm.round(1).tolist(),
                     peak_distance_mm=float(np.linalg.norm(peak_mm - centre)),
                     cluster_size_voxels=int(largest["cluster_size_voxels"]))
    return score


def run_demo(root: Path, seed: int = 0, n_subjects: int = 6) -> dict:
    root = Path(root)
    bids = root / "bids"
    out = root / "out"
    truth = simulate_dataset(bids, n_subjects=n_subjects, seed=seed)
    model_path = demo_model_path()
    model = load_model(model_path)
    run_app(bids, out, model_path, Settings(analysis_level="dataset", seed=seed),
            argv=["bids-stats", str(bids), str(out), "dataset", "--model", str(model_path)])
    last = model.topological_order()[-1]
    zmaps = sorted(output_dir(out, last.name, {}).glob(f"*contrast-{truth['contrast']}_stat-z_statmap.nii.gz"))
    score = score_recovery(zmaps[0], truth)
    lines = [
        f"simulated dataset: {bids}",
        f"results: {out} (report: {out / 'report.html'})",
        f"planted activation: {truth['contrast']} at {truth['center_mm']} mm, radius {truth['radius_mm']} mm",
        (f"largest dataset-level cluster at z > {_CLUSTER_Z:.2f}: {score['cluster_size_voxels']} voxels, "
         f"peak z = {score['peak_z']:.2f} at {score['peak_mm']} mm, "
         f"{score['peak_distance_mm']:.1f} mm from the planted centre"
         if score["n_clusters"] else f"no dataset-level cluster at z > {_CLUSTER_Z:.2f}: activation not recovered"),
        f"{score['n_clusters']} cluster(s) in all; highest z in the map {score['max_z']:.2f}",
        f"false-positive rate far from the activation (z > 1.645): {100 * score['false_positive_rate']:.1f} % "
        f"of {score['n_far_voxels']} voxels (nominal 5 %)",
    ]
    return {"truth": truth, "score": score, "zmap": zmaps[0], "lines": lines}
