"""Thresholding, cluster tables and permutation inference for one fitted contrast.

Settings come from the CLI (``--height-control``, ``--alpha``,
``--cluster-min-size``, ``--two-sided``, ``--n-perm``, ``--tfce``,
``--cluster-threshold``) and from ``Model.Software["bids-stats"]["Inference"]``,
the model winning key by key. Inference runs on Dataset-level nodes, and on
any node whose model asks for it.

Files beside the contrast's maps (``<e>`` = the contrast's entities)::

    <e>_stat-z_desc-<method>_statmap.nii.gz   thresholded z (0 below threshold)
    <e>_desc-<method>_clusters.tsv            clusters: peaks, sub-peaks, sizes, atlas labels
    <e>_stat-logp_desc-{maxT|maxF,clusterSize,clusterMass,tfce}_statmap.nii.gz   FWE -log10 p by permutation
"""
from __future__ import annotations

import warnings as python_warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bids_app.derivatives.atomic import write_json, write_tsv
from bids_app.derivatives.naming import build_name, output_dir
from bids_app.derivatives.statmaps import unmask
from bids_app.inference.atlas import CLUSTER_ATLASES, label_coordinates
from bids_app.inference.clusters import cluster_table, mesh_cluster_table
from bids_app.inference.connectivity import VoxelGraph, subgraph
from bids_app.inference.outside_brain import outside_brain_report
from bids_app.graph.parallel import block_map
from bids_app.inference.thresholds import threshold_map
from bids_app.io.images import template_brain_mask
from bids_app.io.maps import is_surface, sidecar_path, write_map
from bids_app.spec.model import Node

DEFAULTS = {
    "HeightControl": "fpr",
    "Alpha": None,  # 0.001 for fpr/none, 0.05 for fdr/bonferroni
    "ClusterMinSize": 0,
    "TwoSided": False,
    "NPerm": 0,
    "TFCE": False,
    "ClusterThreshold": 3.1,
    "ExchangeabilityBlocks": None,
    "WithinBlock": True,
}
_CLI_KEYS = {"height_control": "HeightControl", "alpha": "Alpha", "cluster_min_size": "ClusterMinSize",
             "two_sided": "TwoSided", "n_perm": "NPerm", "tfce": "TFCE", "cluster_threshold": "ClusterThreshold"}


def inference_settings(node: Node, cli: dict) -> dict | None:
    """Effective settings for a node, or None when the node gets no inference."""
    from_model = dict(node.model.ours.get("Inference") or {})
    if node.level != "Dataset" and not from_model:
        return None
    settings = dict(DEFAULTS)
    settings.update({_CLI_KEYS[k]: v for k, v in cli.items() if k in _CLI_KEYS and v is not None})
    settings.update(from_model)
    if settings["Alpha"] is None:
        settings["Alpha"] = 0.05 if settings["HeightControl"] in ("fdr", "bonferroni") else 0.001
    return settings


def contrast_inference(settings: dict, test: str, estimator: str) -> tuple[dict, list[str]]:
    """The settings that apply to one contrast, and a note for each asked-for option that does not.

    Every combination of option, estimator and contrast type either runs or
    is named here; the notes go to the contrast's sidecars
    (``InferenceNotes``), the provenance warnings and the report.

    * ``TwoSided`` with an F contrast: F has no sign, so thresholds and
      permutation p-values are one-sided (upper tail).
    * ``NPerm`` with the ``mixed`` or fixed-effects estimators: those models
      weight each input by its own variance, so rows are not exchangeable
      under the null and the permutation test would not be exact; no
      permutation maps are written (``--estimator ols`` gives them).
    * ``TFCE`` or ``ExchangeabilityBlocks`` without permutations: nothing to
      apply them to.
    """
    applied, notes = dict(settings), []
    if test == "F" and settings["TwoSided"]:
        applied["TwoSided"] = False
        notes.append("TwoSided does not apply to an F contrast (F has no sign): thresholds and permutation "
                     "p-values are one-sided, upper tail")
    if settings["NPerm"] and estimator != "ols":
        applied["NPerm"] = 0
        notes.append(f"NPerm={settings['NPerm']} not applied: permutation inference needs the OLS estimator; the "
                     f"{estimator} estimator weights each input by its own variance, so inputs are not "
                     "exchangeable under the null (use --estimator ols for permutation maps)")
    if not applied["NPerm"]:
        asked = [key for key in ("TFCE", "ExchangeabilityBlocks") if settings[key]]
        if asked:
            notes.append(f"{' and '.join(asked)} not applied: they are permutation options and no permutations "
                         "run for this contrast")
    return applied, notes


def scope_notes(nodes: list[Node], cli: dict) -> list[str]:
    """Warnings for inference settings that no node of this run will use.

    Command-line inference options apply to Dataset-level nodes (and nodes
    whose model sets ``Inference``); Run-level nodes get no thresholds or
    permutations (their maps are single-run time-series fits).
    """
    notes = []
    for node in nodes:
        if node.level == "Run" and node.model.ours.get("Inference"):
            notes.append(f"node {node.name!r}: Model.Software['bids-stats'].Inference is not applied at the Run "
                         "level (thresholds and permutations are group-level inference)")
    given = sorted("--" + k.replace("_", "-") for k, v in cli.items() if k in _CLI_KEYS and v is not None)
    if given and not any(node.level != "Run" and inference_settings(node, cli) is not None for node in nodes):
        notes.append(f"{', '.join(given)} not applied: inference options apply to Dataset-level nodes (or nodes "
                     "with Model.Software['bids-stats'].Inference), and none runs at this analysis level")
    return notes


def explicit_options(node: Node, cli: dict) -> list[str]:
    """Inference settings the user gave for this node (command line or model), not defaults."""
    given = {_CLI_KEYS[k] for k, v in cli.items() if k in _CLI_KEYS and v is not None}
    return sorted(given | set(node.model.ours.get("Inference") or {}))


def region_table_notes(node: Node, cli: dict) -> list[str]:
    """Region tables get no thresholded maps or cluster tables: say so if any such option was asked for."""
    asked = [k for k in explicit_options(node, cli) if k in ("HeightControl", "Alpha", "ClusterMinSize", "TwoSided")]
    if not asked:
        return []
    return [f"{', '.join(asked)} not applied: thresholded maps and cluster tables are made from voxel maps; "
            "region tables keep their uncorrected p column"]


def _method_label(settings: dict) -> str:
    return {"fdr": "fdr", "bonferroni": "bonferroni", "fpr": "uncorrected", "none": "thresholded"}[
        settings["HeightControl"]]


@dataclass
class Thresholded:
    """A thresholded z map and its cluster table, ready to write.

    Attributes
    ----------
    method : str
        The ``desc-`` label (``uncorrected``, ``fdr``...).
    z : ndarray, the grid's shape
        z where it survives, 0 below threshold, NaN outside the fitted units.
    meta : dict
        The map's JSON sidecar.
    table : DataFrame or None
        Clusters; None on a surface without mesh (no cluster can be formed).
    warnings : list of str
    """

    method: str
    z: np.ndarray
    meta: dict
    table: pd.DataFrame | None
    warnings: list


@dataclass
class Permuted:
    """FWE-corrected -log10 p maps of one contrast by permutation, ready to write.

    Attributes
    ----------
    maps : dict of str to ndarray, (n_units,)
        ``desc`` label (``maxT``/``maxF``, ``clusterSize``, ``clusterMass``, ``tfce``) -> values.
    meta : dict
        Entries every map's sidecar holds besides its ``Correction``.
    warnings : list of str
    """

    maps: dict
    meta: dict
    warnings: list


def threshold_contrast(entities: dict, z: np.ndarray, space, settings: dict, reference: dict) -> Thresholded:
    """Parametric thresholding of one z map (values over ``space.mask``) and its cluster table.

    ``space`` is a :class:`~bids_app.graph.space.VoxelSpace` or
    :class:`~bids_app.graph.space.SurfaceSpace`; surface clusters use its
    geometry's mesh graph, and without one no cluster extent or table can
    be formed, which the sidecar says. ``reference`` holds what was read for
    inference (:func:`inference_reference`): the MNI brain mask on the grid
    and the atlases.
    """
    method = _method_label(settings)
    grid, mask, geometry = space.grid, space.mask, space.geometry
    surface = is_surface(grid)
    full = np.where(mask, unmask(z, mask), 0.0)
    graph = geometry.graph if geometry is not None else None
    warnings = []
    min_size = int(settings["ClusterMinSize"])
    if surface and graph is None and min_size > 1:
        warnings.append(f"{build_name(entities, 'statmap', '')}: no mesh for space {grid.space!r} "
                        "(give --surface-mesh): ClusterMinSize not applied")
        min_size = 0
    if surface and graph is None:
        # no neighbours known: every vertex stands alone (no cluster extent is applied or reported)
        graph = VoxelGraph(full.size, np.zeros((0, 2), dtype=np.int32), "none")
    result = threshold_map(full, mask, height_control=settings["HeightControl"], alpha=settings["Alpha"],
                           cluster_min_size=min_size, two_sided=bool(settings["TwoSided"]),
                           affine=None if surface else grid, graph=graph if surface else None)
    meta = {"Method": settings["HeightControl"], "Alpha": settings["Alpha"], "TwoSided": settings["TwoSided"],
            "ClusterMinSizeVoxels": min_size, "ZThreshold": result.threshold,
            "NVoxelsTested": result.info["n_voxels_tested"], "NVoxelsSurviving": result.info["n_voxels_surviving"],
            "NClusters": result.info["n_clusters"] if not surface or geometry is not None else None}
    if surface:
        meta["Units"] = "surface vertices" + (" and subcortical voxels" if grid.voxels() is not None else "")
        meta["Connectivity"] = graph.connectivity if geometry is not None else "none: no mesh for this space"
    else:
        meta["VoxelVolumeMm3"] = result.info["voxel_volume_mm3"]
    if np.isfinite(result.threshold) and space.in_mni:
        outside = outside_brain_report(result.thresholded, result.threshold - 1e-9, grid, reference["template"],
                                       two_sided=bool(settings["TwoSided"]))
        meta["OutsideBrain"] = outside
        if outside.get("flagged"):
            zname = build_name({**entities, "stat": "z", "desc": method}, "statmap", ".nii.gz")
            warnings.append(f"{zname}: {outside['message']}")
    thresholded = np.where(mask, result.thresholded, np.nan)
    if surface and geometry is None:
        return Thresholded(method, thresholded, meta, None, warnings)
    height = result.threshold - 1e-9 if np.isfinite(result.threshold) else np.inf
    if surface:
        table = mesh_cluster_table(np.where(np.isfinite(height), result.thresholded, 0.0), graph,
                                   geometry.coordinates, geometry.areas, geometry.parts,
                                   height if np.isfinite(height) else 1.0,
                                   two_sided=bool(settings["TwoSided"]), min_size=min_size)
        if reference["atlases"] and len(table):
            labels = label_coordinates(table[["x", "y", "z"]].to_numpy(), reference["atlases"])
            table = pd.concat([table, labels.set_index(table.index)], axis=1)
    elif np.isfinite(result.threshold):
        table = cluster_table(result.thresholded, grid, height, two_sided=bool(settings["TwoSided"]),
                              min_size=min_size, atlases=reference["atlases"])
    else:
        table = cluster_table(np.zeros_like(full), grid, 1.0, atlases=())
    return Thresholded(method, thresholded, meta, table, warnings)


def inference_reference(space) -> dict:
    """What thresholding reads besides the maps: the MNI brain mask on a volume's grid (MNI spaces),
    and the atlases that label cluster peaks (MNI volumes; fsaverage surfaces)."""
    from bids_app.io.atlases import load_atlas  # only spaces with atlases (MNI, fsaverage) read them

    if space.in_mni:
        return {"template": template_brain_mask(space.grid, space.mask.shape),
                "atlases": tuple(map(load_atlas, CLUSTER_ATLASES))}
    names = space.geometry.atlases if space.geometry is not None else ()
    return {"template": None, "atlases": tuple(map(load_atlas, names))}


def write_thresholded(out: Path, node: Node, entities: dict, thresholded: Thresholded, grid) -> list[Path]:
    """The thresholded z map with its sidecar, and the cluster table."""
    folder = output_dir(out, node.name, entities)
    method = thresholded.method
    files = []
    zpath = folder / build_name({**entities, "stat": "z", "desc": method}, "statmap", ".nii.gz")
    for path in write_map(zpath, thresholded.z, grid):
        files += [path, write_json(sidecar_path(path), thresholded.meta)]
    if thresholded.table is not None:
        files.append(write_tsv(folder / build_name({**entities, "desc": method}, "clusters", ".tsv"),
                               thresholded.table))
    return files


def permute_contrast(entities: dict, Y: np.ndarray, X: np.ndarray, weights: np.ndarray, space, settings: dict,
                     seed: int, blocks, n_procs: int = 1) -> Permuted:
    """FWE-corrected permutation inference (maxT or maxF, cluster size/mass, TFCE) for one t or F contrast
    (``weights`` 1-D for t, 2-D for F) of ``Y`` (n_inputs, n_units) on design ``X`` (n_inputs, n_columns).

    ``n_procs`` > 1 spreads the blocks of resamplings over that many
    processes (:func:`~bids_app.graph.parallel.block_map`); the maps are the
    same for any ``n_procs``.

    On surface data clusters and TFCE use the mesh graph of the space's
    geometry restricted to the fitted units; without a mesh only maxT is
    computed, and the sidecars and a warning say so.
    """
    grid, mask = space.grid, space.mask
    graph, warnings, note = None, [], {}
    cluster_threshold, tfce = settings["ClusterThreshold"], bool(settings["TFCE"])
    if is_surface(grid):
        if space.geometry is None:
            note = {"Connectivity": f"none: no mesh for space {grid.space!r}; vertex-wise maxT only"}
            if cluster_threshold is not None or tfce:
                warnings.append(f"{build_name(entities, 'statmap', '')}: no mesh for space {grid.space!r} "
                                "(give --surface-mesh): permutation clusters and TFCE skipped, maxT only")
            cluster_threshold, tfce = None, False
        else:
            graph = subgraph(space.geometry.graph, mask)
    from bids_app.inference.permutation import permutation_test  # imported by runs that permute only

    # the engine warns when n_perm reaches the distinct resamplings: that belongs in the outputs too
    with python_warnings.catch_warnings(record=True) as caught, block_map(n_procs) as map_blocks:
        python_warnings.simplefilter("always")
        result = permutation_test(Y, X, weights, None if is_surface(grid) else mask, n_perm=int(settings["NPerm"]),
                                  seed=seed, two_sided=bool(settings["TwoSided"]), blocks=blocks,
                                  within_block=bool(settings["WithinBlock"]),
                                  cluster_threshold=cluster_threshold, tfce=tfce, graph=graph,
                                  map_blocks=map_blocks)
    engine_notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    warnings += [f"{build_name(entities, 'statmap', '')}: {n}" for n in engine_notes]
    if engine_notes:
        note = {**note, "Notes": engine_notes}
    max_stat = "maxT" if result.info["statistic"] == "t" else "maxF"
    maps = {desc: values for desc, values in ((max_stat, result.logp_max_t), ("clusterSize", result.logp_max_size),
                                              ("clusterMass", result.logp_max_mass), ("tfce", result.logp_max_tfce))
            if values is not None}
    return Permuted(maps, {**result.info, **note}, warnings)


def write_permuted(out: Path, node: Node, entities: dict, permuted: Permuted, space) -> list[Path]:
    """Each -log10 p map of ``permuted`` with its sidecar."""
    folder = output_dir(out, node.name, entities)
    files = []
    for desc, values in permuted.maps.items():
        path = folder / build_name({**entities, "stat": "logp", "desc": desc}, "statmap", ".nii.gz")
        for written in write_map(path, unmask(values, space.mask), space.grid):
            files.append(written)
            files.append(write_json(sidecar_path(written), {
                "Statistic": "-log10 p, family-wise error corrected by permutation", "Correction": desc,
                **permuted.meta}))
    return files
