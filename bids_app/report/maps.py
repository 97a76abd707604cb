"""What the report computes from a z map: peaks of both signs, supra-threshold
counts and blobs outside the brain.

Everything works on arrays already loaded; nothing here draws or writes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from nibabel.affines import apply_affine
from bids_app.inference.outside_brain import outside_brain_report
from bids_app.inference.peaks import local_peaks
from bids_app.inference.thresholds import norm_isf
from bids_app.io.images import template_brain_mask

#: One-sided p of the display threshold; figures show |z| above DISPLAY_Z.
DISPLAY_P = 0.001
DISPLAY_Z = float(norm_isf(DISPLAY_P))

PEAK_COLUMNS = ["sign", "value", "x", "y", "z", "i", "j", "k"]


def find_peaks(stat, affine, *, n_peaks: int = 5, min_distance_mm: float = 8.0, signs=(1, -1)) -> pd.DataFrame:
    """Strongest local maxima of each sign of a statistic map.

    The peaks of the voxels > 0 (< 0), by the rule of cluster tables
    (:func:`bids_app.inference.peaks.local_peaks`): local maxima over the
    26-neighbourhood, taken by decreasing magnitude and kept when more than
    ``min_distance_mm`` from every stronger kept peak of the same sign, so
    one blob is not listed five times. The first row of each sign is
    therefore the map's maximum (minimum).

    Parameters
    ----------
    stat : array_like, (x, y, z)
        Statistic map; non-finite voxels (outside the analysed mask) are ignored.
    affine : ndarray, (4, 4)
        Voxel to world (mm) affine.
    n_peaks : int
        Peaks kept per sign.
    min_distance_mm : float
        Minimum distance between two kept peaks of one sign.
    signs : sequence of {1, -1}
        Signs to look for (``(1,)`` for maps where only large values mean
        something, such as z from an F test).

    Returns
    -------
    pandas.DataFrame
        :data:`PEAK_COLUMNS`: ``sign`` (+1 or -1), ``value`` (the statistic),
        ``x, y, z`` world coordinates in mm and ``i, j, k`` voxel indices;
        positive peaks first, each sign by decreasing magnitude.
    """
    stat = np.asarray(stat, dtype=np.float64)
    affine = np.asarray(affine, dtype=np.float64)
    rows = []
    for sign in map(float, signs):
        signed = np.where(np.isfinite(stat), sign * stat, -np.inf)
        ijk, _ = local_peaks(signed, signed > 0, affine, min_distance_mm=min_distance_mm, max_peaks=n_peaks)
        for voxel, xyz in zip(ijk, apply_affine(affine, ijk)):
            rows.append([int(sign), float(stat[tuple(voxel)]), *xyz, *(int(v) for v in voxel)])
    return pd.DataFrame(rows, columns=PEAK_COLUMNS)


@dataclass(frozen=True)
class MapSummary:
    """A z map as the report describes it.

    Attributes
    ----------
    threshold : float
        |z| display threshold used for the counts.
    n_voxels : int
        Analysed (finite) voxels.
    n_positive, n_negative : int
        Voxels with z > threshold and z < -threshold.
    two_sided : bool
        Whether negative z is an effect (t tests) or not (F tests).
    peaks : pandas.DataFrame
        :func:`find_peaks` output (positive peaks only when one-sided).
    outside_brain : dict or None
        :func:`bids_app.inference.outside_brain.outside_brain_report` for maps in an
        MNI space, else None.
    """

    threshold: float
    n_voxels: int
    n_positive: int
    n_negative: int
    two_sided: bool
    peaks: pd.DataFrame
    outside_brain: dict | None


def summarize_map(z, affine, *, threshold: float = DISPLAY_Z, mni: bool = False, two_sided: bool = True
                  ) -> MapSummary:
    """Supra-threshold counts of both signs, peaks and (MNI only) voxels outside the brain.

    Parameters
    ----------
    z : array_like, (x, y, z)
        z map, NaN outside the analysed voxels.
    affine : ndarray, (4, 4)
    threshold : float
        |z| threshold for the counts and the outside-brain check.
    mni : bool
        Whether the map is in an MNI space (the template check needs it).
    two_sided : bool
        Whether negative z values are effects: False for z converted from
        an F test, whose negative values are merely p > 0.5.
    """
    z = np.asarray(z, dtype=np.float64)
    finite = np.isfinite(z)
    outside = outside_brain_report(z, threshold, affine, template_brain_mask(affine, z.shape),
                                   two_sided=two_sided) if mni else None
    return MapSummary(
        threshold=float(threshold),
        n_voxels=int(finite.sum()),
        n_positive=int(np.count_nonzero(finite & (z > threshold))),
        n_negative=int(np.count_nonzero(finite & (z < -threshold))),
        two_sided=two_sided,
        peaks=find_peaks(z, affine, signs=(1, -1) if two_sided else (1,)),
        outside_brain=outside,
    )
