"""The one peak finder: local maxima of a statistic map, separated by a distance.

Cluster tables (:mod:`bids_app.inference.clusters`) take the peaks of each
cluster; the report takes the peaks of each sign of a whole map; both with
this rule, so one map never gets two peak lists.
"""
from __future__ import annotations

import numpy as np
from nibabel.affines import apply_affine
from scipy import ndimage

from bids_app.inference.connectivity import label_volume


def local_peaks(values, inside, affine, *, min_distance_mm: float, max_peaks: int, offset=(0, 0, 0)):
    """Up to ``max_peaks`` peaks of a region, highest first, pared by distance.

    A peak is a local maximum over the 26-neighbourhood inside the region (a
    flat top counts once, at its voxel nearest to its centre of mass, as in
    nilearn); peaks are taken by decreasing value and kept when more than
    ``min_distance_mm`` from every peak kept before them.

    Parameters
    ----------
    values : ndarray, (x, y, z)
        The statistic (larger is a stronger peak) over a box.
    inside : ndarray of bool, (x, y, z)
        The region (a cluster, or every voxel of one sign) within the box.
    affine : ndarray, (4, 4)
        Voxel to mm affine of the full image.
    offset : sequence of 3 int
        Position of the box's first voxel in the full image.

    Returns
    -------
    ijk : ndarray, int, (n_peaks, 3)
        Voxel indices in the full image.
    values : ndarray, (n_peaks,)
    """
    if not inside.any():
        return np.zeros((0, 3), dtype=np.int64), np.zeros(0)
    masked = np.where(inside, values, -np.inf)
    local_max = inside & (masked == ndimage.maximum_filter(masked, size=3, mode="constant",
                                                           cval=-np.inf))
    # face-connected maxima (a flat top) are one peak, as in nilearn: its voxel
    # nearest to its centre of mass
    tops, n_tops = label_volume(local_max)
    centres = np.array(ndimage.center_of_mass(local_max, tops, range(1, n_tops + 1)))
    members = np.argwhere(local_max)
    member_top = tops[tuple(members.T)] - 1
    distance = ((members - centres[member_top]) ** 2).sum(axis=1)
    order = np.lexsort((distance, member_top))
    nearest = np.r_[True, np.diff(member_top[order]) != 0]
    ijk = members[order][nearest]
    peak_values = masked[tuple(ijk.T)]
    order = np.argsort(-peak_values, kind="stable")
    ijk = ijk[order] + np.asarray(offset, dtype=np.int64)
    xyz = apply_affine(affine, ijk)
    kept = []
    for candidate in range(len(ijk)):
        if all(np.linalg.norm(xyz[candidate] - xyz[other]) > min_distance_mm for other in kept):
            kept.append(candidate)
            if len(kept) == max_peaks:
                break
    return ijk[kept], peak_values[order][kept]
