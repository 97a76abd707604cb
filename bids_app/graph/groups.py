"""Session, Subject and Dataset units: group incoming maps (or region tables) by GroupBy, fit each group, write its outputs."""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from bids_app.derivatives.atomic import write_json, write_tsv
from bids_app.derivatives.naming import build_name, camel_keys, output_dir, sanitize_label
from bids_app.derivatives.statmaps import unmask
from bids_app.design.contrasts import plan_contrasts
from bids_app.design.diagnostics import check_design
from bids_app.design.group import build_group_design
from bids_app.design.group_mask import group_mask, surface_mask
from bids_app.design.input_qc import qc_maps
from bids_app.errors import DesignError, InputDataError, NoInputsError
from bids_app.estimation.fixed_effects import FIXED_EFFECTS_DOF_RULE
from bids_app.graph import roi, surfaces
from bids_app.graph.context import Context
from bids_app.graph.filters import match_frame
from bids_app.graph.inference_step import (
    contrast_inference,
    inference_settings,
    permute_contrast,
    region_table_notes,
    threshold_contrast,
)
from bids_app.graph.records import fingerprint, record_path, reuse, save
from bids_app.graph.surfaces import unit_parts
from bids_app.graph.unit_files import contrast_sidecar, ref, write_result
from bids_app.graph.units import Settings, StatMap
from bids_app.io.images import load_image, mask_on_grid, template_brain_mask
from bids_app.io.maps import is_surface, load_maps, map_files, write_map
from bids_app.io.regions import read_tables
from bids_app.spec.model import Node


log = logging.getLogger(__name__)


def group_maps(maps: list[StatMap], group_by: tuple[str, ...],
               participants: pd.DataFrame | None = None) -> list[tuple[dict, list[StatMap]]]:
    """Split incoming maps by the GroupBy entities, or participants columns (``group``).

    A GroupBy key absent from the data (e.g. ``session`` in a dataset without
    sessions) does not split anything: those maps form one group. A key that
    is no entity of the maps but a participants.tsv column splits by the
    subject's value (the spec's ``["contrast", "group"]``).
    """
    lookup = {}
    if participants is not None and len(participants) and "subject" in participants:
        rows = participants.drop_duplicates("subject").set_index("subject")
        lookup = {k: rows[k].to_dict() for k in group_by
                  if k in rows.columns and not any(k in m.entities for m in maps)}
    groups: dict[tuple, list[StatMap]] = {}
    for m in maps:
        key = tuple((k, lookup[k].get(m.entities.get("subject")) if k in lookup else m.entities.get(k))
                    for k in group_by)
        groups.setdefault(key, []).append(m)
    return [({k: v for k, v in key if v is not None and not pd.isna(v)}, members) for key, members in sorted(
        groups.items(), key=lambda kv: tuple(str(v) for _, v in kv[0]))]


def tag_group(group: dict, members: list[StatMap]) -> list[StatMap]:
    """Members of a group split by participants columns, with a ``desc`` entity naming the split.

    Output names hold BIDS entities only, so two groups that differ by a
    participants value (``group-patient`` / ``group-control`` is no entity)
    would write the same files; ``desc-groupPatient`` keeps them apart.
    """
    split = {k: v for k, v in group.items() if all(k not in m.entities for m in members)}
    if not split:
        return members
    desc = sanitize_label(" ".join(f"{k} {v}" for k, v in split.items()))
    return [replace(m, entities={**m.entities, "desc": desc}) for m in members]


def common_entities(maps: list[StatMap]) -> dict:
    """Entities with the same value in every map of a group."""
    first = maps[0].entities
    return {k: v for k, v in first.items()
            if v is not None and all(m.entities.get(k) == v for m in maps[1:])}


def input_table(maps: list[StatMap], participants: pd.DataFrame) -> pd.DataFrame:
    """One row per incoming map: its entities joined with participants.tsv on ``subject``.

    Raises
    ------
    InputDataError
        A subject of these maps has several rows in participants.tsv (the
        join would duplicate its maps' rows, and the values may conflict).
    """
    rows = pd.DataFrame([m.entities for m in maps])
    if "subject" in rows and len(participants):
        listed = participants["subject"]
        repeated = sorted(set(listed[listed.duplicated()]) & set(rows["subject"]))
        if repeated:
            raise InputDataError("participants.tsv lists " + ", ".join(f"sub-{s}" for s in repeated)
                                 + " more than once; keep one row per participant_id")
        extra = participants.drop(columns=[c for c in participants if c in rows and c != "subject"])
        rows = rows.merge(extra, on="subject", how="left")
    return rows


def design_for(node: Node, table: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Design matrix of a group, built the same way for ``glm`` and ``meta`` nodes.

    A ``meta`` node's design (any ``X`` or ``Formula``, e.g. two run subsets
    contrasted within each subject) is fitted by inverse-variance weighted
    least squares; the sidecar states its degrees-of-freedom rule.
    """
    design = build_group_design(node, table)
    if node.model.type != "meta":
        return design.matrix, design.info
    return design.matrix, {**design.info, "type": "meta", "DegreesOfFreedom": FIXED_EFFECTS_DOF_RULE}


def make_estimator(node: Node, settings: Settings, dofs):
    """The estimation engine a node asks for (Model.Software wins over the CLI)."""
    from bids_app.estimation.fixed_effects import FixedEffectsEstimator
    from bids_app.estimation.mixed import MixedEffectsEstimator
    from bids_app.estimation.ols import OLSEstimator

    if node.model.type == "meta":
        return FixedEffectsEstimator(dofs=dofs), "fixed-effects"
    name = str(node.model.ours.get("Estimator", settings.estimator)).lower()
    if name == "ols":
        return OLSEstimator(), "ols"
    if name == "mixed":
        method = str(node.model.ours.get("Method", "reml")).lower()
        return MixedEffectsEstimator(method=method), f"mixed-{method}"
    raise InputDataError(f"node {node.name!r}: unknown estimator {name!r} (use 'ols' or 'mixed')")


def group_unit(ctx: Context, node: Node, group: dict, maps: list[StatMap]) -> list[StatMap]:
    """Fit one GroupBy group at a higher level and write its maps, or its region
    tables when the inputs are region tables (regions are then the columns of ``Y``)."""
    entities = common_entities(maps)
    contrast_names = sorted({m.entities.get("contrast") for m in maps})
    incoming = contrast_names[0] if len(contrast_names) == 1 else None
    files_in = list(dict.fromkeys(f for m in maps for p in (m.effect, m.variance) if p
                                  for f in (map_files(p) if not m.is_region_table else [p])))
    record = record_path(ctx, node, entities)
    inference = inference_settings(node, ctx.settings.inference)
    # participants.tsv rows enter the design: a changed covariate must refit. Columns are
    # sorted because reused maps come back from their records with their entities sorted.
    covariates = input_table(maps, ctx.index.participants).sort_index(axis=1).to_json(orient="split")
    fp = fingerprint(ctx, node, files_in, {"n": len(maps), "inference": inference, "table": covariates})
    reused = reuse(ctx, record, fp)
    if reused is not None:
        return reused

    # only the root Run node aggregates, so inputs are all region tables or all maps
    tables = read_tables([m.effect for m in maps]) if maps[0].is_region_table else None
    names = [ref(ctx, m.effect) for m in maps]
    surface = None
    if tables is None:
        effects, variances, grids, shapes = load_maps([m.effect for m in maps], [m.variance for m in maps],
                                                      [m.entities.get("space") for m in maps])
        surface = _one_surface(grids, names)
        # surfaces have no affine: their geometry is the unit count (and the Surface, checked above)
        affines = grids if surface is None else [np.eye(4)] * len(grids)
        qc = qc_maps(effects, variances, names, affines, shapes, policy=ctx.settings.qc_policy)
    else:
        effects, variances = list(tables.effects), list(tables.variances)
        qc = qc_maps(effects, variances, names, policy=ctx.settings.qc_policy, constant=False)
    keep = list(qc.kept)
    for exc in qc.excluded:
        ctx.log.exclusions.append({"node": node.name, "file": exc["name"], "reasons": exc["reasons"]})
        ctx.log.warn(f"node {node.name}: excluded {exc['name']}: {'; '.join(exc['reasons'])}")
    maps = [maps[i] for i in keep]
    if not maps:
        raise NoInputsError(f"node {node.name!r}, group {group}: every input map was excluded by QC")
    table = input_table(maps, ctx.index.participants)
    blocks = _exchangeability_blocks(node, table, inference)
    X, design_info = design_for(node, table)
    columns = list(X.columns)
    x_columns = design_info.get("x") or columns
    contrasts, warnings = plan_contrasts(node, columns, x_columns, incoming)
    diagnostics = check_design(X, [(c.name, c.weights) for c in contrasts],
                               require_residual_dof=node.model.type != "meta")

    data = np.stack([effects[i] for i in keep])
    var = np.stack([variances[i] for i in keep]) if all(variances[i] is not None for i in keep) else None
    fwhm = ctx.settings.smoothing_at(node.level)
    affine, in_mni, geometry = None, False, None
    if surface is not None:
        affine = surface
        if fwhm or node.model.options.get("Mask"):
            raise DesignError(f"node {node.name!r}: --smoothing and Options.Mask apply to volumes; "
                              "surface maps are fitted as given, on their own vertices")
        mask, surface_info = surface_mask(data, unit_parts(surface))
        mask_info = {"Mask": surface_info, "Surface": surface.describe()}
        geometry = surfaces.geometry(surface, ctx.settings.surface_mesh)
    elif tables is None:
        affine = affines[keep[0]]
        in_mni = "MNI" in str(entities.get("space", "")).upper()
        data, mask, mask_info = _voxel_mask(ctx, node, data, var, affine, fwhm, in_mni)
    else:
        mask = np.isfinite(data).all(axis=0)
    if var is not None:
        # variances must be usable wherever we fit (fixed and mixed effects divide by them)
        mask &= (np.isfinite(var) & (var > 0)).all(axis=0)
    if tables is not None:
        mask_info, notes = roi.fitted_regions(tables.names, mask)
        warnings += notes
    Y = data[:, mask]
    V = var[:, mask] if var is not None else None
    dofs = np.array([m.dof if m.dof is not None else np.inf for m in maps])
    estimator, est_name = make_estimator(node, ctx.settings, dofs)
    if node.model.type == "meta" and V is None:
        raise DesignError(f"node {node.name!r} is a fixed-effects ('meta') node but its inputs have no variance maps")
    fit = estimator.fit(Y, X.to_numpy(dtype=np.float64), variances=V)
    folder = output_dir(ctx.out, node.name, entities)
    files = [write_tsv(folder / build_name(entities, "design", ".tsv"), X)]
    files.append(write_json(folder / build_name(entities, "design", ".json"), camel_keys({
        "Node": node.name, "Level": node.level, "Estimator": est_name, "SmoothingFWHM": fwhm,
        "Inputs": [ref(ctx, m.effect) for m in maps], "Design": design_info,
        "Diagnostics": diagnostics.to_dict(), **mask_info, "QC": qc.to_dict()})))
    if tables is None:
        files += write_map(folder / build_name(entities, "mask", ".nii.gz"), mask.astype(np.float32), affine)
        for key, values in fit.model_maps().items():
            files += write_map(folder / build_name({**entities, "stat": key}, "statmap", ".nii.gz"),
                               unmask(values, mask), affine)
    sidecar_extra = {"Inputs": [ref(ctx, m.effect) for m in maps], **({} if tables is None else tables.inherited())}
    out = []
    for c in contrasts:
        res = fit.contrast(c.weights, c.test)
        ents = {**entities, "contrast": c.name}
        applied, notes = (None, []) if inference is None else contrast_inference(inference, c.test, est_name)
        if tables is not None and inference is not None:
            notes = region_table_notes(node, ctx.settings.inference)
        warnings += [f"contrast {c.name}: {note}" for note in notes]
        sidecar = contrast_sidecar(node, c, est_name, {**sidecar_extra, **({"InferenceNotes": notes} if notes else {})})
        written, effect, variance = write_result(ctx, node, ents, res, sidecar,
                                                  affine, mask, None if tables is None else tables.names)
        files += written
        # thresholds, clusters and permutations are voxel-map inference; region tables keep their p column
        if applied is not None and tables is None:
            inf_files, inf_warnings = threshold_contrast(ctx.out, node, ents, res.z, mask, affine, applied, in_mni,
                                                         geometry)
            files += inf_files
            warnings += inf_warnings
            if applied["NPerm"]:
                perm_files, perm_warnings = permute_contrast(
                    ctx.out, node, ents, Y, X.to_numpy(dtype=np.float64), c.weights, mask, affine, applied,
                    ctx.settings.seed, blocks, geometry, ctx.settings.n_procs)
                files += perm_files
                warnings += perm_warnings
        if c.flows:
            dof = float(res.dof) if np.ndim(res.dof) == 0 else float(np.nanmedian(res.dof))
            out.append(StatMap(ents, effect, variance, dof, node.name))
    all_warnings = warnings + list(diagnostics.warnings)
    for w in all_warnings:
        ctx.log.warn(f"node {node.name} {entities}: {w}")
    summary = {"node": node.name, "entities": entities, "n_inputs": len(maps), "estimator": est_name,
               "contrasts": [c.name for c in contrasts], "warnings": all_warnings, "design": ref(ctx, files[0]),
               ("n_voxels" if tables is None else "n_regions"): int(mask.sum())}
    save(ctx, record, fp, out, files, summary)
    return out


def _exchangeability_blocks(node: Node, table, inference):
    """Block code of each input for permutations, or None; a block column not in the inputs is an error."""
    column = (inference or {}).get("ExchangeabilityBlocks")
    if not column or not inference["NPerm"]:
        return None
    if column not in table:
        raise InputDataError(f"node {node.name!r}: ExchangeabilityBlocks {column!r} is not a column of the inputs "
                             f"(entities and participants.tsv: {', '.join(map(str, table.columns))})")
    return table[column].factorize()[0]


def _one_surface(grids, names):
    """The surface all inputs share (None for volumes); mixing kinds or meshes is an error."""
    surfaces_in = [g for g in grids if is_surface(g)]
    if not surfaces_in:
        return None
    first = surfaces_in[0]
    for grid, name in zip(grids, names):
        if not is_surface(grid) or not grid.same_as(first):
            raise InputDataError(f"{name}: its vertices differ from those of {names[0]} "
                                 "(a group combines maps of one surface space, or volumes only)")
    return first


def _voxel_mask(ctx: Context, node: Node, data: np.ndarray, var, affine: np.ndarray, fwhm, in_mni: bool):
    """Smooth the incoming maps if asked, and choose the voxels to fit.

    Returns
    -------
    data : ndarray, (n_inputs, x, y, z)
        Smoothed when ``fwhm``.
    mask : ndarray of bool, (x, y, z)
    mask_info : dict
        ``{"Mask": ...}`` for the design sidecar.
    """
    if fwhm:
        if var is not None:
            raise DesignError(f"node {node.name!r}: --smoothing at level {node.level} would smooth effects but "
                              "not their variances; smooth at the run level for nodes that use variances")
        data = _smooth(data, affine, fwhm)
    # the MNI template fallback only makes sense for inputs in an MNI space
    explicit = _options_mask(ctx, node)
    mask, mask_info = group_mask(data, affine,
                                 explicit_mask=None if explicit is None else mask_on_grid(explicit, affine, data.shape[1:]),
                                 brain_mask="auto" if in_mni else False,
                                 template=lambda: template_brain_mask(affine, data.shape[1:]))
    return data, mask, {"Mask": mask_info}


def _smooth(data: np.ndarray, affine: np.ndarray, fwhm: float) -> np.ndarray:
    """Gaussian smoothing (FWHM in mm) of maps (n, x, y, z); NaN (outside the inputs) becomes 0 first."""
    from nilearn.image import smooth_img

    img = nb.Nifti1Image(np.moveaxis(np.nan_to_num(data), 0, -1), affine)
    smoothed = np.moveaxis(np.asarray(smooth_img(img, fwhm).dataobj, dtype=np.float64), -1, 0)
    return np.where(np.isfinite(data), smoothed, np.nan)


def _options_mask(ctx: Context, node: Node):
    filt = node.model.options.get("Mask")
    if not filt:
        return None
    hits = match_frame(ctx.index.select(extension=[".nii.gz", ".nii"]),
                     {k: v if isinstance(v, list) else [v] for k, v in filt.items()})
    if hits.empty:
        raise NoInputsError(f"node {node.name!r}: Options.Mask {filt} matched no file")
    path = Path(hits.sort_values("path").iloc[0]["path"])
    ctx.log.hash(path)
    return load_image(path)
