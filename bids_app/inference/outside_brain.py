"""A check for results outside the brain: supra-threshold voxels outside the MNI152 template."""
from __future__ import annotations

import numpy as np
from nibabel.affines import apply_affine

#: Share of supra-threshold voxels outside the brain above which a map is flagged.
OUTSIDE_FRACTION = 0.1


def outside_brain_report(stat_map: np.ndarray, threshold: float, affine: np.ndarray, brain: np.ndarray, *,
                         two_sided: bool = True) -> dict:
    """Count supra-threshold voxels outside the MNI152 template brain.

    Blobs outside the brain usually mean the group mask let in voxels of
    unmasked inputs, or that registration failed.

    Parameters
    ----------
    stat_map : ndarray, shape (x, y, z)
        A statistic map (z, t...) in MNI space.
    threshold : float
        Voxels with ``stat > threshold`` (``|stat| > threshold`` when
        ``two_sided``) are supra-threshold.
    affine : ndarray, shape (4, 4)
    brain : ndarray of bool, shape (x, y, z)
        The MNI152 template brain on the map's grid
        (:func:`bids_app.io.images.template_brain_mask`).

    Returns
    -------
    dict
        JSON-able: counts, ``fraction_outside``, the strongest outside
        voxel (``peak_outside``: value and MNI mm, or None), ``flagged``
        (more than :data:`OUTSIDE_FRACTION` outside) and a ``message``.
    """
    stat = np.asarray(stat_map, dtype=np.float64)
    strength = np.abs(stat) if two_sided else stat
    supra = np.isfinite(stat) & (strength > threshold)
    outside = supra & ~np.asarray(brain, dtype=bool)
    n_supra, n_out = int(supra.sum()), int(outside.sum())
    fraction = n_out / n_supra if n_supra else 0.0
    peak = None
    if n_out:
        idx = np.unravel_index(np.argmax(np.where(outside, strength, -np.inf)), stat.shape)
        peak = {"value": float(stat[idx]), "voxel": [int(i) for i in idx],
                "mm": [round(float(c), 2) for c in apply_affine(affine, idx)]}
    flagged = fraction > OUTSIDE_FRACTION
    message = (f"{n_out} of {n_supra} supra-threshold voxels ({fraction:.0%}) lie outside the "
               "MNI152 brain mask" + ("; check the group mask and the registration of the "
                                      "inputs" if flagged else ""))
    return {"threshold": float(threshold), "two_sided": two_sided,
            "n_suprathreshold": n_supra, "n_outside_brain": n_out,
            "fraction_outside": fraction, "peak_outside": peak, "flagged": flagged,
            "message": message}
