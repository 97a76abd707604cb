"""Region (ROI) outputs of ``Model.Options.Aggregate`` models, written where a
voxelwise model writes its maps (``<e>`` = the unit's entities)::

    <e>_desc-<mean|pca>_timeseries.tsv/.json   Run level: the region series fitted, one column per region
    <e>_contrast-<c>_roistats.tsv/.json        one row per region: region, effect, variance, t|F, z, p, dof

An F contrast has one ``effect_<i>`` and one ``variance_<i>`` column per row
of its weights (1-based) instead of ``effect`` and ``variance``. Regions that
were not fitted (no voxel in the brain mask; at higher levels, not valid in
every input) have ``n/a`` values, as voxels outside the mask are NaN in maps.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bids_app.derivatives.atomic import write_json, write_tsv
from bids_app.derivatives.naming import build_name, output_dir
from bids_app.derivatives.statmaps import contrast_metadata, contrast_values, unmask

#: suffix of the per-contrast region tables
ROI_SUFFIX = "roistats"

_COLUMNS = {
    "region": "region name (from the label image's _dseg.tsv, its label-/desc- entity, or region-<value>)",
    "effect": "contrast estimate, percent signal change at the Run level",
    "variance": "sampling variance of the effect",
    "t": "t statistic", "F": "F statistic",
    "z": "standard-normal equivalent of the statistic (same tail probability)",
    "p": "uncorrected p: one-sided upper tail for t, upper tail for F",
    "dof": "error degrees of freedom",
}


def roi_table(result, regions, fitted) -> pd.DataFrame:
    """One contrast over regions as a table.

    Parameters
    ----------
    result : ContrastResult
        Over the fitted regions only (the columns of ``Y``).
    regions : sequence of str, (n_regions,)
        All region names.
    fitted : array_like of bool, (n_regions,)
        Which regions are columns of the fit; the others get NaN.

    Returns
    -------
    DataFrame, one row per region: ``region``, ``effect`` (``effect_<i>``
    for F), ``variance`` (``variance_<i>``), ``t`` or ``F``, ``z``, ``p``, ``dof``.
    """
    fitted = np.asarray(fitted, dtype=bool)
    columns: dict = {"region": list(regions)}
    for key, values in contrast_values(result).items():
        full = unmask(values, fitted)
        if full.ndim == 1:
            columns[key] = full
        else:  # F effects: (n_regions, n_rows)
            columns.update({f"{key}_{i + 1}": full[:, i] for i in range(full.shape[1])})
    columns["dof"] = unmask(np.broadcast_to(np.asarray(result.dof, dtype=np.float64), (int(fitted.sum()),)),
                            fitted)
    return pd.DataFrame(columns)


def write_roi_contrast(root: Path, node_name: str, entities: dict, result, regions, fitted,
                       sidecar: dict) -> list[Path]:
    """Write ``<e>_contrast-<c>_roistats.tsv`` and its JSON sidecar.

    Parameters
    ----------
    root, node_name, entities
        As :func:`bids_app.derivatives.statmaps.write_contrast`.
    result, regions, fitted
        As :func:`roi_table`.
    sidecar : dict
        Shared JSON fields (node, contrast, estimator, aggregation, ...).

    Returns
    -------
    [table, sidecar] paths.
    """
    path = output_dir(root, node_name, entities) / build_name(entities, ROI_SUFFIX, ".tsv")
    table = roi_table(result, regions, fitted)
    meta = {**sidecar, **contrast_metadata(result),
            "Columns": {c: _COLUMNS[c.split("_")[0]] for c in table.columns}}
    if np.ndim(result.dof) != 0:
        meta["DegreesOfFreedom"] = "per-region (column dof)"
    return [write_tsv(path, table), write_json(path.with_name(path.name.replace(".tsv", ".json")), meta)]


def write_region_timeseries(folder: Path, entities: dict, method: str, series: np.ndarray, names,
                            sidecar: dict) -> list[Path]:
    """Write ``<e>_desc-<method>_timeseries.tsv`` (one column per region) and its JSON sidecar.

    Parameters
    ----------
    folder : Path
    entities : dict
        The run's entities.
    method : {"mean", "pca"}
    series : ndarray, (n_scans, n_regions)
        Region series in scanner units, NaN for regions without voxels.
    names : sequence of str, (n_regions,)
    sidecar : dict
        JSON content (sampling frequency, regions, method).

    Returns
    -------
    [table, sidecar] paths.
    """
    path = Path(folder) / build_name({**entities, "desc": method}, "timeseries", ".tsv")
    frame = pd.DataFrame(np.asarray(series, dtype=np.float64), columns=list(names))
    return [write_tsv(path, frame), write_json(path.with_name(path.name.replace(".tsv", ".json")), sidecar)]
