"""Region (ROI) time series for ``Model.Options.Aggregate`` "mean" and "pca".

Arrays in, arrays out: :mod:`bids_app.graph.roi` finds and loads the label
images and hands over each region as the columns of a run's masked BOLD
(n_scans, n_voxels) that it covers. One region series is then one column of
the run-level ``Y``; the GLM is the same as for voxels.

* ``"mean"``: the mean of the region's voxels at each scan, as nilearn's
  ``NiftiLabelsMasker(strategy="mean")``.
* ``"pca"``: the first principal component of the region's voxel time
  series, the voxels centred in time, from :func:`numpy.linalg.svd`. Its
  sign makes it correlate positively with the regional mean, it is scaled so
  that its temporal standard deviation equals the regional mean's, and the
  regional mean's temporal mean is added back, so that the percent signal
  change scaling of the fit means the same for both methods. A one-voxel
  region's component is that voxel's series.

A region without voxels (outside the brain mask) has an all-NaN series.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bids_app.spec.validate import AGGREGATE_METHODS

#: What each method computes, for the sidecars of the outputs.
METHOD_NOTES = {
    "mean": "mean over the region's in-brain voxels at each scan",
    "pca": ("first principal component (numpy SVD) of the region's in-brain voxel time series, voxels "
            "centred in time; sign chosen to correlate positively with the regional mean, scaled to the "
            "regional mean's temporal SD, plus the regional mean's temporal mean"),
}


def aggregate_method(options: dict) -> str | None:
    """The method ``Model.Options`` asks for: "mean" or "pca", None for voxelwise ("none" or absent)."""
    method = str(options.get("Aggregate") or "none").lower()
    return method if method in AGGREGATE_METHODS else None


@dataclass(frozen=True)
class Regions:
    """Named regions over the voxels of one run's brain mask.

    Attributes
    ----------
    names : tuple of str
        Region names, in output order.
    voxels : tuple of ndarray of int
        For each region, the columns of the run's masked data
        (n_scans, n_voxels) inside it; empty when the region has no voxel in
        the brain mask.
    sources : tuple of str
        The label image of each region.
    values : tuple of int
        The label value of each region in its image.
    notes : tuple of str
        Warnings from building them (e.g. a value missing from the names table).
    """

    names: tuple[str, ...]
    voxels: tuple[np.ndarray, ...]
    sources: tuple[str, ...]
    values: tuple[int, ...]
    notes: tuple[str, ...] = ()

    @property
    def n_voxels(self) -> np.ndarray:
        """(n_regions,) int: voxels of each region inside the brain mask."""
        return np.array([len(v) for v in self.voxels], dtype=np.int64)

    @property
    def fitted(self) -> np.ndarray:
        """(n_regions,) bool: regions with at least one voxel, the columns of ``Y``."""
        return self.n_voxels > 0


def label_values(labels: np.ndarray) -> np.ndarray:
    """Distinct non-zero values of a label image, sorted, as int64.

    Non-finite voxels count as background (0).

    Raises
    ------
    ValueError
        A non-zero value is not an integer (a probabilistic atlas, or an image
        resampled with interpolation).
    """
    data = np.nan_to_num(np.asarray(labels, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    values = np.unique(data[data != 0])
    fractional = values[values != np.round(values)]
    if fractional.size:
        raise ValueError(f"{fractional.size} non-integer label value(s), e.g. {fractional[0]:g}: "
                         "a label image holds one integer per voxel (0 outside every region)")
    return values.astype(np.int64)


def region_timeseries(data: np.ndarray, voxels: tuple[np.ndarray, ...], method: str) -> np.ndarray:
    """One time series per region.

    Parameters
    ----------
    data : ndarray, (n_scans, n_voxels)
        Masked BOLD, scanner units.
    voxels : tuple of ndarray of int
        Columns of ``data`` in each region (:attr:`Regions.voxels`).
    method : {"mean", "pca"}

    Returns
    -------
    ndarray, (n_scans, n_regions), float64
        Scanner units; NaN columns for regions without voxels.
    """
    if method not in AGGREGATE_METHODS:
        raise ValueError(f"method must be one of {AGGREGATE_METHODS}, got {method!r}")
    data = np.asarray(data, dtype=np.float64)
    out = np.full((data.shape[0], len(voxels)), np.nan)
    for r, columns in enumerate(voxels):
        if len(columns):
            block = data[:, columns]
            out[:, r] = block.mean(axis=1) if method == "mean" else first_component(block)
    return out


def first_component(block: np.ndarray) -> np.ndarray:
    """First principal component of one region's voxel series, on the regional mean's scale.

    Parameters
    ----------
    block : ndarray, (n_scans, n_voxels)
        The region's voxels, scanner units.

    Returns
    -------
    ndarray, (n_scans,)
        ``mean(m) + s * u`` where ``m`` is the regional mean series, ``u`` the
        first left singular vector of the time-centred block, and ``s`` scales
        ``u`` to ``std(m)`` with the sign of ``corr(u, m)``. When that
        correlation is exactly 0, the voxel loading largest in magnitude is
        made positive, so the result never depends on the SVD's sign
        convention. A region constant in time returns ``m``.
    """
    block = np.asarray(block, dtype=np.float64)
    mean = block.mean(axis=1)
    centred = block - block.mean(axis=0)
    u, sigma, vt = np.linalg.svd(centred, full_matrices=False)
    component = u[:, 0] * sigma[0]
    spread = component.std()
    if spread == 0:
        return mean
    direction = np.sign(component @ (mean - mean.mean())) or np.sign(vt[0][np.argmax(np.abs(vt[0]))])
    return mean.mean() + direction * component * (mean.std() / spread)
