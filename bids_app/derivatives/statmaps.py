"""Write one contrast's maps (effect, variance, t|F, z, p) with JSON sidecars."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bids_app.derivatives.atomic import write_json
from bids_app.derivatives.naming import build_name, output_dir
from bids_app.io.maps import sidecar_path, write_map


def unmask(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Vector(s) over in-mask voxels -> volume(s); NaN outside the analysed voxels.

    ``values`` (n_voxels,) -> (x, y, z); (k, n_voxels) -> (x, y, z, k).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        vol = np.full(mask.shape, np.nan)
        vol[mask] = values
        return vol
    vol = np.full(mask.shape + (values.shape[0],), np.nan)
    vol[mask] = values.T
    return vol


def write_contrast(root: Path, node_name: str, entities: dict, result, mask: np.ndarray,
                   grid, sidecar: dict) -> tuple[dict[str, Path], list[Path]]:
    """Write the maps of one evaluated contrast.

    Parameters
    ----------
    root : Path
        Output directory.
    entities : dict
        Output entities including ``contrast``.
    result : ContrastResult
    mask : ndarray of bool, (x, y, z) or (n_units,)
    grid : ndarray (4, 4) or Surface
        Affine of a volume, or the surface the units are on (:mod:`bids_app.io.maps`).
    sidecar : dict
        Shared JSON fields; each map adds its own ``Statistic``.

    Returns
    -------
    paths : dict
        Stat name (``effect``, ``variance``, ``t``/``F``, ``z``, ``p``) to the
        map's path (a GIFTI map: its left hemisphere's file).
    files : list of Path
        Every file written, sidecars included.
    """
    folder = output_dir(root, node_name, entities)
    meta = {**sidecar, **contrast_metadata(result)}
    paths, files = {}, []
    for stat, values in contrast_values(result).items():
        written = write_map(folder / build_name({**entities, "stat": stat}, "statmap", ".nii.gz"),
                            unmask(values, mask), grid)
        for path in written:
            files += [path, write_json(sidecar_path(path), {**meta, "Statistic": stat})]
        paths[stat] = written[0]
    return paths, files


def contrast_values(result) -> dict[str, np.ndarray]:
    """``effect``, ``variance``, ``t`` or ``F``, ``z``, ``p`` of a ContrastResult, in writing order."""
    return {"effect": result.effect, "variance": result.variance, result.test: result.stat,
            "z": result.z, "p": result.p}


def contrast_metadata(result) -> dict:
    """Sidecar fields every output of a contrast shares: test and degrees of freedom."""
    meta = {"Test": result.test,
            "DegreesOfFreedom": float(result.dof) if np.ndim(result.dof) == 0 else "per-voxel"}
    if np.ndim(result.dof) == 0 and not np.isfinite(result.dof):
        # strict JSON has no Infinity: null, with the reason
        meta["DegreesOfFreedom"] = None
        meta["DegreesOfFreedomNote"] = ("infinite: an input map carried no DegreesOfFreedom, so the "
                                        "statistic is referred to the normal distribution (z = t)")
    if result.test == "F":
        meta["NumeratorDegreesOfFreedom"] = int(result.dof_num)
    return meta
