"""Write small simulated datasets of existing first-level statistical maps.

A dataset is what bids-stats accepts as input above the Run level: for every
(subject, [session], [run], contrast) an effect map
``sub-XX/[ses-YY/]sub-XX_[ses-YY_]task-T_[run-R_]space-S_contrast-C_stat-effect_statmap.nii.gz``,
optionally its ``stat-variance`` map and a JSON sidecar with
``DegreesOfFreedom``, plus ``participants.tsv`` and
``dataset_description.json``.

Maps live on a 10 x 12 x 10 grid of 4 mm voxels in MNI space and are NaN
outside an ellipsoid ("the brain", inside the MNI152 brain), so the group
mask is exactly :func:`brain_mask` and nilearn's template fallback never
applies. Tests keep the arrays this module returns and compute their
references from them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

SHAPE = (10, 12, 10)
#: 4 mm voxels; the box is centred on MNI (0, -18, 8) so the ellipsoid lies
#: inside nilearn's MNI152 brain mask (no "outside the brain" warnings)
AFFINE = np.array([[4.0, 0, 0, -18.0],
                   [0, 4.0, 0, -40.0],
                   [0, 0, 4.0, -10.0],
                   [0, 0, 0, 1.0]])
SPACE = "MNI152NLin2009cAsym"


def brain_mask(shape=SHAPE) -> np.ndarray:
    """Boolean ellipsoid touching the box faces: 640 of the 1200 voxels of :data:`SHAPE`."""
    grids = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) / (n / 2) for n in shape], indexing="ij")
    return sum(g**2 for g in grids) <= 1.0


@dataclass
class SimMap:
    """One simulated first-level contrast.

    ``effect`` and ``variance`` are (x, y, z) float64 arrays, NaN outside
    :func:`brain_mask`; ``variance`` is None when no variance map is written.
    """

    entities: dict
    effect: np.ndarray
    variance: np.ndarray | None
    dof: float | None
    path: Path | None = None


def statmap_name(entities: dict, stat: str) -> str:
    """BIDS name of a first-level map (entities: subject, session, task, run, contrast)."""
    keys = (("sub", "subject"), ("ses", "session"), ("task", "task"), ("run", "run"))
    parts = [f"{short}-{entities[long]}" for short, long in keys if entities.get(long)]
    parts += [f"space-{SPACE}", f"contrast-{entities['contrast']}", f"stat-{stat}", "statmap"]
    return "_".join(parts) + ".nii.gz"


def simulate_maps(root: Path, *, task: str, subjects, contrasts, sessions=(None,), runs=(None,),
                  mean=None, with_variance: bool = True, dof: float | None = 50.0,
                  participants: pd.DataFrame | None = None, seed: int = 0,
                  equal_variances: bool = False) -> list[SimMap]:
    """Simulate and write one effect map per (subject, session, run, contrast).

    Parameters
    ----------
    root : Path
        Dataset folder (created).
    task : str
    subjects, contrasts : sequence of str
        Labels without prefixes.
    sessions, runs : sequence of (str or None)
        ``(None,)`` writes no such entity.
    mean : callable or None
        ``mean(entities) -> float``: the true effect of a map (arbitrary
        units), added to unit-variance Gaussian noise; default 0.5.
    with_variance : bool
        Write ``stat-variance`` maps: positive, varying over voxels and maps.
    dof : float or None
        ``DegreesOfFreedom`` written in each effect map's JSON sidecar; None
        writes no sidecar.
    participants : DataFrame or None
        Written as ``participants.tsv`` (must hold ``participant_id``).
    equal_variances : bool
        Give every map the same variance map (varying over voxels only).

    Returns
    -------
    list of SimMap
        In the order written (subject, session, run, contrast).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "simulated maps", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "tests/simulate_maps.py"}]}))
    if participants is not None:
        participants.to_csv(root / "participants.tsv", sep="\t", index=False, na_rep="n/a")
    rng = np.random.default_rng(seed)
    brain = brain_mask()
    shared_variance = rng.uniform(0.2, 2.0, SHAPE)
    maps = []
    for sub in subjects:
        for ses in sessions:
            for run in runs:
                for con in contrasts:
                    ents = {"subject": sub, "session": ses, "task": task, "run": run, "contrast": con}
                    ents = {k: v for k, v in ents.items() if v is not None}
                    mu = 0.5 if mean is None else float(mean(ents))
                    effect = np.where(brain, mu + rng.standard_normal(SHAPE), np.nan)
                    variance = None
                    if with_variance:
                        v = shared_variance if equal_variances else rng.uniform(0.2, 2.0, SHAPE)
                        variance = np.where(brain, v, np.nan)
                    maps.append(_write(root, SimMap(ents, effect, variance, dof)))
    return maps


def _write(root: Path, m: SimMap) -> SimMap:
    folder = root / f"sub-{m.entities['subject']}"
    if m.entities.get("session"):
        folder = folder / f"ses-{m.entities['session']}"
    folder.mkdir(parents=True, exist_ok=True)
    m.path = folder / statmap_name(m.entities, "effect")
    nb.save(nb.Nifti1Image(m.effect.astype(np.float32), AFFINE), m.path)
    # what the pipeline reads back: float32 storage
    m.effect = m.effect.astype(np.float32).astype(np.float64)
    if m.variance is not None:
        nb.save(nb.Nifti1Image(m.variance.astype(np.float32), AFFINE),
                folder / statmap_name(m.entities, "variance"))
        m.variance = m.variance.astype(np.float32).astype(np.float64)
    if m.dof is not None:
        (folder / statmap_name(m.entities, "effect").replace(".nii.gz", ".json")).write_text(
            json.dumps({"DegreesOfFreedom": m.dof}))
    return m


def load(path) -> np.ndarray:
    """A map as float64."""
    return np.asarray(nb.load(path).dataobj, dtype=np.float64)


def mask_img() -> nb.Nifti1Image:
    """:func:`brain_mask` as an image, for nilearn's maskers."""
    return nb.Nifti1Image(brain_mask().astype(np.uint8), AFFINE)
