"""Session, Subject and Dataset units: group incoming maps (or region tables) by GroupBy, then plan,
fit and write each group.

:func:`plan_group` reads and checks a group (inputs, QC, design, contrasts,
its unit space); :func:`load_group` reads the data a plan fits;
:func:`fit_group` fits and runs inference on arrays; :func:`write_group`
writes every file and then the resume record.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from bids_app.derivatives.atomic import write_json, write_tsv
from bids_app.derivatives.naming import build_name, camel_keys, output_dir, sanitize_label
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
    inference_reference,
    inference_settings,
    permute_contrast,
    region_table_notes,
    threshold_contrast,
    write_permuted,
    write_thresholded,
)
from bids_app.graph.records import fingerprint, record_path, reuse, save
from bids_app.graph.space import RegionSpace, SurfaceSpace, VoxelSpace, smooth
from bids_app.graph.surfaces import unit_parts
from bids_app.graph.unit_files import contrast_sidecar, ref
from bids_app.graph.units import ContrastFit, Settings, StatMap, UnitData, UnitPlan, UnitResult
from bids_app.io.images import load_image, mask_on_grid, template_brain_mask
from bids_app.io.maps import is_surface, load_maps, map_files
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


def group_label(entities: dict) -> str:
    """``subject-01_contrast-face``: a unit's entities as progress lines and messages name it."""
    return "_".join(f"{k}-{v}" for k, v in entities.items() if k != "datatype") or "all inputs"


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


@dataclass
class GroupPlan(UnitPlan):
    """A group unit as planned (:class:`~bids_app.graph.units.UnitPlan`), and what only groups have.

    Attributes
    ----------
    inputs : list of StatMap
        The incoming maps QC kept, one per row of ``design``.
    Y, V : ndarray, (n_inputs, n_units)
        The kept inputs' effects and variances over the fitted units, as
        planning read them (smoothed when asked): kept so that the fit reads
        and smooths nothing again. ``V`` is None unless every input has one.
    diagnostics : Diagnostics
        Of the design and contrasts; its warnings come last.
    inference : dict or None
        Threshold and permutation settings of the node.
    blocks : ndarray of int, (n_inputs,), or None
        Exchangeability block of each input, for permutations.
    seed : int
    n_procs : int
        Processes for the permutations (``--n-procs``).
    """

    inputs: list = field(default_factory=list)
    Y: np.ndarray | None = None
    V: np.ndarray | None = None
    diagnostics: object = None
    inference: dict | None = None
    blocks: np.ndarray | None = None
    seed: int = 0
    n_procs: int = 1


def plan_group(ctx: Context, node: Node, group: dict, maps: list[StatMap]) -> GroupPlan | list[StatMap]:
    """Read and check one GroupBy group: inputs, QC, design, contrasts, the units to fit.

    Returns
    -------
    GroupPlan, or list of StatMap
        The plan; or the unit's maps when its record says it is finished
        with these inputs and settings (nothing to fit).

    Raises
    ------
    NoInputsError, InputDataError, DesignError
        Every input excluded, mixed spaces, a design or option that cannot apply.
    """
    entities = common_entities(maps)
    contrast_names = sorted({m.entities.get("contrast") for m in maps})
    incoming = contrast_names[0] if len(contrast_names) == 1 else None
    record = record_path(ctx, node, entities)
    inference = inference_settings(node, ctx.settings.inference)
    fp = _fingerprint(ctx, node, maps, inference)
    reused = reuse(ctx, record, fp)
    if reused is not None:
        return reused

    inputs = read_group_inputs(maps, [ref(ctx, m.effect) for m in maps], ctx.settings.qc_policy)
    maps = _kept(ctx, node, group, maps, inputs.qc)
    table = input_table(maps, ctx.index.participants)
    blocks = _exchangeability_blocks(node, table, inference)
    X, design_info = design_for(node, table)
    columns = list(X.columns)
    contrasts, warnings = plan_contrasts(node, columns, design_info.get("x") or columns, incoming)
    try:
        diagnostics = check_design(X, [(c.name, c.weights) for c in contrasts],
                                   require_residual_dof=node.model.type != "meta")
    except DesignError as exc:
        # the plan refused every design the full inputs could not estimate: this one lost inputs to QC
        raise DesignError(f"node {node.name!r}, group {group_label(group)} ({len(maps)} map(s) after quality "
                          f"control): {exc}") from None
    fwhm = ctx.settings.smoothing_at(node.level)
    space, notes, Y, V = inputs.fitted(ctx, node, list(inputs.qc.kept), entities, fwhm)
    estimator, est_name = make_estimator(node, ctx.settings, np.array([m.dof if m.dof is not None else np.inf
                                                                       for m in maps]))
    if node.model.type == "meta" and not all(m.variance for m in maps):
        raise DesignError(f"node {node.name!r} is a fixed-effects ('meta') node but its inputs have no variance maps")
    sidecar = {"Node": node.name, "Level": node.level, "Estimator": est_name, "SmoothingFWHM": fwhm,
               "Inputs": [ref(ctx, m.effect) for m in maps], "Design": design_info,
               "Diagnostics": diagnostics.to_dict(), **space.sidecar, "QC": inputs.qc.to_dict()}
    return GroupPlan(node, entities, record, fp, space, X, contrasts, estimator, est_name, sidecar,
                     [*warnings, *notes], inputs=maps, Y=Y, V=V, diagnostics=diagnostics, inference=inference,
                     blocks=blocks, seed=ctx.settings.seed, n_procs=ctx.settings.n_procs)


def _fingerprint(ctx: Context, node: Node, maps: list[StatMap], inference) -> str:
    """The group's inputs (files, participants rows) and settings, as its record holds them."""
    files = list(dict.fromkeys(f for m in maps for p in (m.effect, m.variance) if p
                               for f in (map_files(p) if not m.is_region_table else [p])))
    # participants.tsv rows enter the design: a changed covariate must refit. Columns are
    # sorted because reused maps come back from their records with their entities sorted.
    covariates = input_table(maps, ctx.index.participants).sort_index(axis=1).to_json(orient="split")
    return fingerprint(ctx, node, files, {"n": len(maps), "inference": inference, "table": covariates})


def _kept(ctx: Context, node: Node, group: dict, maps: list[StatMap], qc) -> list[StatMap]:
    """The maps QC kept; each exclusion goes to provenance and the warnings."""
    for exc in qc.excluded:
        ctx.log.exclusions.append({"node": node.name, "file": exc["name"], "reasons": exc["reasons"]})
        ctx.log.warn(f"node {node.name}: excluded {exc['name']}: {'; '.join(exc['reasons'])}")
    kept = [maps[i] for i in qc.kept]
    if not kept:
        raise NoInputsError(f"node {node.name!r}, group {group}: every input map was excluded by QC")
    return kept


def load_group(plan: GroupPlan) -> UnitData:
    """The kept inputs' values over the plan's units (read while planning), and what inference reads."""
    reference = inference_reference(plan.space) if plan.inference is not None and plan.space.map_inference else {}
    return UnitData(plan.Y, plan.V, reference)


def fit_group(plan: GroupPlan, data: UnitData) -> UnitResult:
    """Fit the group's model and evaluate every contrast with its inference; arrays in, arrays out."""
    X = plan.design.to_numpy(dtype=np.float64)
    fit = plan.estimator.fit(data.Y, X, variances=data.V)
    fitted, warnings = [], []
    for c in plan.contrasts:
        res = fit.contrast(c.weights, c.test)
        applied, notes = (None, []) if plan.inference is None else contrast_inference(
            plan.inference, c.test, plan.estimator_name)
        if plan.inference is not None and not plan.space.map_inference:
            notes = plan.space.inference_notes
        warnings += [f"contrast {c.name}: {note}" for note in notes]
        out = ContrastFit(c, res, notes)
        # thresholds, clusters and permutations are map inference; region tables keep their p column
        if applied is not None and plan.space.map_inference:
            ents = {**plan.entities, "contrast": c.name}
            out.thresholded = threshold_contrast(ents, res.z, plan.space, applied, data.reference)
            warnings += out.thresholded.warnings
            if applied["NPerm"]:
                out.permuted = permute_contrast(ents, data.Y, X, c.weights, plan.space, applied, plan.seed,
                                                plan.blocks, plan.n_procs)
                warnings += out.permuted.warnings
        fitted.append(out)
    return UnitResult(fit.model_maps() if plan.space.map_inference else {}, fitted, warnings)


def write_group(ctx: Context, plan: GroupPlan, result: UnitResult) -> list[StatMap]:
    """Write the group's design, maps (or region tables) and inference, then its resume record."""
    node, entities, space = plan.node, plan.entities, plan.space
    folder = output_dir(ctx.out, node.name, entities)
    files = [write_tsv(folder / build_name(entities, "design", ".tsv"), plan.design)]
    files.append(write_json(folder / build_name(entities, "design", ".json"), camel_keys(plan.sidecar)))
    files += space.write_mask(folder, entities)
    files += space.write_maps(folder, entities, result.model_maps)
    extra = {"Inputs": [ref(ctx, m.effect) for m in plan.inputs], **space.inherited}
    out = []
    for fitted in result.contrasts:
        c, res = fitted.contrast, fitted.result
        ents = {**entities, "contrast": c.name}
        sidecar = contrast_sidecar(node, c, plan.estimator_name,
                                   {**extra, **({"InferenceNotes": fitted.notes} if fitted.notes else {})})
        written, effect, variance = space.write_contrast(ctx.out, node.name, ents, res, sidecar)
        files += written
        if fitted.thresholded is not None:
            files += write_thresholded(ctx.out, node, ents, fitted.thresholded, space.grid)
        if fitted.permuted is not None:
            files += write_permuted(ctx.out, node, ents, fitted.permuted, space)
        if c.flows:
            dof = float(res.dof) if np.ndim(res.dof) == 0 else float(np.nanmedian(res.dof))
            out.append(StatMap(ents, effect, variance, dof, node.name))
    all_warnings = [*plan.warnings, *result.warnings, *plan.diagnostics.warnings]
    for w in all_warnings:
        ctx.log.warn(f"node {node.name} {entities}: {w}")
    summary = {"node": node.name, "entities": entities, "n_inputs": len(plan.inputs),
               "estimator": plan.estimator_name, "contrasts": [c.name for c in plan.contrasts],
               "warnings": all_warnings, "design": ref(ctx, files[0]), space.count_key: space.n_units}
    save(ctx, plan.record, plan.fingerprint, out, files, summary)
    return out


def run_group(ctx: Context, plan: GroupPlan) -> list[StatMap]:
    """Load, fit and write one planned group."""
    return write_group(ctx, plan, fit_group(plan, load_group(plan)))


def _exchangeability_blocks(node: Node, table, inference):
    """Block code of each input for permutations, or None; a block column not in the inputs is an error."""
    column = (inference or {}).get("ExchangeabilityBlocks")
    if not column or not inference["NPerm"]:
        return None
    if column not in table:
        raise InputDataError(f"node {node.name!r}: ExchangeabilityBlocks {column!r} is not a column of the inputs "
                             f"(entities and participants.tsv: {', '.join(map(str, table.columns))})")
    return table[column].factorize()[0]


@dataclass
class GroupInputs:
    """A group's incoming maps or region tables as read, and their QC.

    Attributes
    ----------
    effects, variances : list of ndarray
        One per input: (x, y, z) volumes, (n_units,) surface maps or
        (n_regions,) table columns; a variance is None when the input has none.
    qc : QCReport
        Which inputs enter the model.
    affine : ndarray, (4, 4), or None
        The volumes' grid (that of the first kept input).
    surface : Surface or None
        The surface all inputs share.
    tables : RegionTables or None
        The inputs when they are region tables.
    """

    effects: list
    variances: list
    qc: object
    affine: np.ndarray | None = None
    surface: object = None
    tables: object = None

    def fitted(self, ctx: Context, node: Node, keep: list[int], entities: dict, fwhm):
        """The units the kept inputs are fitted on, warnings (regions left out), and the kept
        inputs' effects ``Y`` and variances ``V`` (None unless every input has one) over those
        units, (n_kept, n_units), smoothed to ``fwhm`` mm when asked.

        Units must be valid in every kept input: variances, where given,
        finite and positive (fixed and mixed effects divide by them).
        """
        data = np.stack([self.effects[i] for i in keep])
        var = np.stack([self.variances[i] for i in keep]) if all(self.variances[i] is not None for i in keep) \
            else None
        notes = []
        if self.tables is not None:
            space, notes = _region_space(ctx, node, self.tables, data, var)
        elif self.surface is not None:
            space = _surface_space(ctx, node, self.surface, data, var, fwhm)
        else:
            space, data = _voxel_space(ctx, node, self.affine, data, var, fwhm, entities)
        units = space.fitted if self.tables is not None else space.mask
        return space, notes, data[:, units], None if var is None else var[:, units]


def read_group_inputs(maps: list[StatMap], names: list[str], policy: str) -> GroupInputs:
    """Read a group's inputs (all region tables or all maps: only the root Run node aggregates) and QC them.

    Raises
    ------
    InputDataError
        Volumes and surfaces mixed, or surfaces with different vertices;
        ``policy == "fail"`` and an input is bad.
    """
    if maps[0].is_region_table:
        tables = read_tables([m.effect for m in maps])
        effects, variances = list(tables.effects), list(tables.variances)
        qc = qc_maps(effects, variances, names, policy=policy, constant=False)
        return GroupInputs(effects, variances, qc, tables=tables)
    effects, variances, grids, shapes = load_maps([m.effect for m in maps], [m.variance for m in maps],
                                                  [m.entities.get("space") for m in maps])
    surface = _one_surface(grids, names)
    # surfaces have no affine: their geometry is the unit count (and the Surface, checked above)
    affines = grids if surface is None else [np.eye(4)] * len(grids)
    qc = qc_maps(effects, variances, names, affines, shapes, policy=policy)
    affine = affines[qc.kept[0]] if surface is None and len(qc.kept) else None
    return GroupInputs(effects, variances, qc, affine, surface)


def _usable(mask: np.ndarray, var) -> np.ndarray:
    return mask & (np.isfinite(var) & (var > 0)).all(axis=0) if var is not None else mask


def _region_space(ctx: Context, node: Node, tables, data, var) -> tuple[RegionSpace, list[str]]:
    fitted = _usable(np.isfinite(data).all(axis=0), var)
    sidecar, notes = roi.fitted_regions(tables.names, fitted)
    return RegionSpace(tables.names, fitted, sidecar, tables.inherited(),
                       region_table_notes(node, ctx.settings.inference)), notes


def _surface_space(ctx: Context, node: Node, surface, data, var, fwhm) -> SurfaceSpace:
    if fwhm or node.model.options.get("Mask"):
        raise DesignError(f"node {node.name!r}: --smoothing and Options.Mask apply to volumes; "
                          "surface maps are fitted as given, on their own vertices")
    mask, surface_info = surface_mask(data, unit_parts(surface))
    return SurfaceSpace(_usable(mask, var), {"Mask": surface_info, "Surface": surface.describe()},
                        surface=surface, geometry=surfaces.geometry(surface, ctx.settings.surface_mesh))


def _voxel_space(ctx: Context, node: Node, affine, data, var, fwhm, entities: dict) -> tuple[VoxelSpace, np.ndarray]:
    """Smooth the incoming maps if asked, and choose the voxels to fit (:func:`group_mask`); returns
    the space and the maps (n_inputs, x, y, z), smoothed when asked."""
    in_mni = "MNI" in str(entities.get("space", "")).upper()
    if fwhm:
        if var is not None:
            raise DesignError(f"node {node.name!r}: --smoothing at level {node.level} would smooth effects but "
                              "not their variances; smooth at the run level for nodes that use variances")
        data = smooth(data, affine, fwhm)
    # the MNI template fallback only makes sense for inputs in an MNI space
    explicit = _options_mask(ctx, node)
    mask, mask_info = group_mask(data, affine,
                                 explicit_mask=None if explicit is None else mask_on_grid(explicit, affine, data.shape[1:]),
                                 brain_mask="auto" if in_mni else False,
                                 template=lambda: template_brain_mask(affine, data.shape[1:]))
    return VoxelSpace(_usable(mask, var), {"Mask": mask_info}, affine=affine, in_mni=in_mni), data


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
