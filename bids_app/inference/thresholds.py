"""Parametric thresholding of z maps: voxel height control and cluster extent.

Same rules as nilearn's :func:`nilearn.glm.threshold_stats_img` (and the same
numbers, see the tests):

* ``fpr``: uncorrected, ``z >= isf(alpha)``;
* ``bonferroni``: ``z >= isf(alpha / n_voxels)`` over the mask;
* ``fdr``: Benjamini-Hochberg over the mask's voxels (:func:`fdr_threshold`,
  nilearn's rule, tested equal: importing ``nilearn.glm`` for it costs ~2 s);
* ``none``: the explicit ``threshold`` (default 0: no height threshold).

Two-sided tests use ``|z|`` and ``alpha / 2`` and keep both signs. Voxels are
kept when their statistic reaches the threshold; then clusters (faces
connectivity, each sign separately) smaller than ``cluster_min_size`` voxels
are removed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import special

from bids_app.inference.connectivity import components, label_volume

HEIGHT_CONTROLS = ("fdr", "bonferroni", "fpr", "none")


def norm_isf(q):
    """Standard normal upper-tail quantile, as ``scipy.stats.norm.isf`` computes it (``-ndtri(q)``).

    Spelled out so that thresholding does not import ``scipy.stats`` (~1 s).
    """
    return -special.ndtri(q)


def fdr_threshold(z, alpha: float) -> float:
    """Benjamini-Hochberg threshold on z values, as :func:`nilearn.glm.fdr_threshold`.

    Parameters
    ----------
    z : ndarray, (n_tests,)
        z statistics of the tested voxels.
    alpha : float
        False discovery rate, in [0, 1].

    Returns
    -------
    float
        The smallest z among the discoveries, less 1e-12 (so ``z >= threshold``
        keeps it); ``inf`` when nothing is discovered.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha should be between 0 and 1. {alpha} was provided")
    descending = -np.sort(-np.asarray(z))
    p = special.ndtr(-descending)   # scipy.stats.norm.sf
    n = len(p)
    discovered = p < alpha * np.linspace(1 / n, 1, n)
    return descending[discovered][-1] - 1.0e-12 if discovered.any() else np.inf


@dataclass
class ThresholdResult:
    """A thresholded z map and how it was thresholded.

    Attributes
    ----------
    thresholded : ndarray, float64, (x, y, z)
        The z map with sub-threshold, out-of-mask and small-cluster voxels
        set to 0.
    threshold : float
        Voxel-level z threshold applied (to ``|z|`` when two-sided); ``inf``
        when FDR finds no voxel.
    info : dict
        ``height_control``, ``alpha``, ``two_sided``, ``cluster_min_size``,
        ``n_voxels_tested``, ``n_voxels_surviving``, ``n_clusters`` and, when
        an affine was given, ``voxel_volume_mm3``.
    """

    thresholded: np.ndarray
    threshold: float
    info: dict = field(default_factory=dict)


def threshold_map(z, mask=None, *, height_control="fpr", alpha=0.001, cluster_min_size=0,
                  two_sided=True, threshold=0.0, affine=None, graph=None) -> ThresholdResult:
    """Threshold a z map at a voxel height, then by cluster extent.

    Parameters
    ----------
    z : array_like, (x, y, z)
        z statistic map; non-finite values count as 0.
    mask : array_like of bool, (x, y, z), optional
        Voxels tested; default is every non-zero voxel of ``z``.
    height_control : {"fdr", "bonferroni", "fpr", "none"}
        Voxel-level error control.
    alpha : float
        False-positive rate, FWE or FDR level (halved per tail when two-sided).
    cluster_min_size : int
        Smallest cluster kept, in voxels (0 or 1 keeps all).
    two_sided : bool
        Threshold ``|z|`` and keep negative effects too.
    threshold : float
        z threshold used with ``height_control="none"`` (ignored otherwise).
    affine : ndarray, (4, 4), optional
        Voxel-to-mm affine, only to report the voxel volume.
    graph : VoxelGraph, optional
        Neighbours among the units of ``z`` for cluster extent, when ``z``
        and ``mask`` are vectors over units of another space (surface
        vertices); default: face neighbours of the 3-D grid.

    Returns
    -------
    ThresholdResult
    """
    if height_control not in HEIGHT_CONTROLS:
        raise ValueError(f"height_control must be one of {HEIGHT_CONTROLS}, got {height_control!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    z = np.nan_to_num(np.asarray(z, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    mask = z != 0 if mask is None else np.asarray(mask, dtype=bool)
    tested = np.abs(z[mask]) if two_sided else z[mask]
    alpha_tail = alpha / 2 if two_sided else alpha

    if height_control == "fpr":
        height = float(norm_isf(alpha_tail))
    elif height_control == "bonferroni":
        height = float(norm_isf(alpha_tail / tested.size))
    elif height_control == "fdr":
        height = float(fdr_threshold(tested, alpha_tail))
    else:
        height = float(threshold)

    signed = np.where(mask, z, 0.0)
    keep = (np.abs(signed) >= height) if two_sided else (signed >= height)
    keep &= mask & (signed != 0)
    n_clusters = 0
    for side in (signed > 0, signed < 0):
        if graph is None:
            labels, n_found = label_volume(keep & side)
        else:
            labels = components(graph, keep & side)
            n_found = int(labels.max(initial=0))
        if n_found == 0:
            continue
        sizes = np.bincount(labels.ravel())
        small = sizes < cluster_min_size
        small[0] = False
        keep[small[labels]] = False
        n_clusters += int(np.count_nonzero(~small[1:]))
    thresholded = np.where(keep, signed, 0.0)

    info = {
        "height_control": height_control,
        "alpha": alpha,
        "two_sided": bool(two_sided),
        "threshold": height,
        "cluster_min_size": int(cluster_min_size),
        "n_voxels_tested": int(tested.size),
        "n_voxels_surviving": int(np.count_nonzero(keep)),
        "n_clusters": n_clusters,
    }
    if affine is not None:
        info["voxel_volume_mm3"] = float(abs(np.linalg.det(np.asarray(affine)[:3, :3])))
    return ThresholdResult(thresholded, height, info)
