"""Statistical maps in any unit space: NIfTI volumes, GIFTI hemisphere pairs, CIFTI-2.

The *grid* of a map says where its values live: a voxel-to-mm affine
(ndarray (4, 4)) for volumes, a :class:`~bids_app.io.surface.Surface` for
surface vertices and grayordinates. Map names are built with a ``.nii.gz``
extension; writers turn them into the files of the grid's kind.
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nb
import numpy as np

from bids_app.derivatives.atomic import write_nifti
from bids_app.errors import InputDataError
from bids_app.io.surface import (CIFTI_EXTENSIONS, GIFTI_EXTENSIONS, Surface, is_surface_file,
                                 read_surface, write_surface)

#: Extensions of input maps and BOLD series, volumes and surfaces.
MAP_EXTENSIONS = [".nii.gz", ".nii", *GIFTI_EXTENSIONS, *CIFTI_EXTENSIONS]
_ALL_EXTENSIONS = (*GIFTI_EXTENSIONS, *CIFTI_EXTENSIONS, ".nii.gz", ".nii", ".tsv")


def is_surface(grid) -> bool:
    return isinstance(grid, Surface)


def write_map(path, data, grid) -> list[Path]:
    """Write one map (full grid: volume ``(x, y, z[, k])`` or units ``(n_units,)``); returns its files."""
    if is_surface(grid):
        return write_surface(Path(path), data, grid)
    return [write_nifti(path, data, grid)]


def sidecar_path(path) -> Path:
    """The JSON sidecar of a data file."""
    path = Path(path)
    for ext in _ALL_EXTENSIONS:
        if path.name.endswith(ext):
            return path.with_name(path.name[: -len(ext)] + ".json")
    return path.with_suffix(".json")


def read_map(path, space: str | None = None):
    """One statistical map: ``(values, grid, shape)``.

    Volumes give their 3-D array and affine; surface files their unit vector
    ``(n_units,)`` and :class:`Surface`. ``shape`` is the stored shape, for
    geometry checks.

    Raises
    ------
    InputDataError
        Unreadable file, or a surface file holding more than one map.
    """
    if is_surface_file(path):
        data, surface = read_surface(path, space)
        if data.shape[0] != 1:
            raise InputDataError(f"{path}: holds {data.shape[0]} maps; one statistical map per file expected")
        return data[0], surface, (surface.n_units,)
    try:
        img = nb.load(path)
        values = np.asarray(img.dataobj, dtype=np.float64)
    except Exception as exc:  # nibabel raises several types for broken files
        raise InputDataError(f"cannot read statistical map {path}: {exc}") from exc
    # a single-slice volume keeps its z axis of length 1 (squeezing would make it 2-D);
    # trailing length-1 axes (x, y, z, 1) are dropped
    shape = values.shape[:3] + (1,) * (3 - values.ndim)
    if values.size != np.prod(shape):
        raise InputDataError(f"statistical map {path} has shape {values.shape}: one 3-D volume per file expected")
    return values.reshape(shape), img.affine, img.shape[:3]


def load_maps(effect_paths, variance_paths, spaces):
    """Effects and variances (None where a variance path is None) of each map, with its grid and stored shape.

    Volumes give (x, y, z) arrays and affines; surface maps (GIFTI pairs,
    CIFTI) give (n_units,) vectors and their :class:`~bids_app.io.surface.Surface`.
    """
    effects, variances, grids, shapes = [], [], [], []
    for effect, variance, space in zip(effect_paths, variance_paths, spaces):
        values, grid, shape = read_map(effect, space)
        effects.append(values)
        grids.append(grid)
        shapes.append(shape)
        variances.append(read_map(variance, space)[0] if variance else None)
    return effects, variances, grids, shapes


def map_files(path) -> list[Path]:
    """Every file of the map named ``path`` (both hemispheres for GIFTI)."""
    from bids_app.io.surface import hemisphere_files, is_gifti

    return list(hemisphere_files(path)) if is_gifti(path) else [Path(path)]


def check_map(path) -> None:
    """Raise :class:`InputDataError` naming ``path`` if a map's header (both hemispheres' for GIFTI) cannot be read."""
    try:
        for f in map_files(path):
            nb.load(f)
    except InputDataError:
        raise
    except Exception as exc:  # nibabel raises several types for broken files
        raise InputDataError(f"cannot read statistical map {path}: {exc}") from exc
