"""Walk the model graph and run every unit of work.

A *unit* is one design fitted once: a run at the Run level, or one GroupBy
group of incoming maps at a higher level. Each finished unit leaves a record in
``OUTPUT_DIR/.bids-stats/units/`` (written last, atomically) holding a
fingerprint of its inputs and settings; a rerun with the same fingerprint
reuses the unit's maps instead of refitting (resumable runs).
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from bids_app.derivatives.atomic import write_json, write_nifti, write_tsv
from bids_app.derivatives.naming import build_name, output_dir, parse_entities
from bids_app.derivatives.roistats import write_region_timeseries, write_roi_contrast
from bids_app.derivatives.statmaps import unmask, write_contrast
from bids_app.design.columns import expand_x
from bids_app.design.diagnostics import check_design
from bids_app.design.first_level import low_pass_filter
from bids_app.design.group_mask import group_mask
from bids_app.design.input_qc import qc_maps
from bids_app.design.regions import aggregate_method, region_timeseries
from bids_app.errors import DesignError, InputDataError, NoInputsError
from bids_app.estimation.first_level import FirstLevelEstimator, scale_timeseries
from bids_app.graph import higher_level as hl
from bids_app.graph import roi
from bids_app.graph import run_level as rl
from bids_app.graph.contrasts import plan_contrasts
from bids_app.graph.filters import match_frame, value_matches
from bids_app.graph.index import FileIndex
from bids_app.graph.inference_step import inference_settings, permute_contrast, threshold_contrast
from bids_app.graph.units import LEVEL_RANK, Settings, StatMap
from bids_app.spec.model import Node, StatsModel

log = logging.getLogger(__name__)


@dataclass
class RunLog:
    """What a run saw, for provenance and the report."""

    input_hashes: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    exclusions: list[dict] = field(default_factory=list)
    units: list[dict] = field(default_factory=list)

    def hash(self, path) -> str:
        key = str(Path(path).resolve())
        if key not in self.input_hashes:
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            self.input_hashes[key] = digest.hexdigest()
        return self.input_hashes[key]

    def warn(self, message: str) -> None:
        log.warning(message)
        self.warnings.append(message)


@dataclass
class Context:
    model: StatsModel
    index: FileIndex | None  # None in run-level worker processes
    out: Path
    settings: Settings
    log: RunLog = field(default_factory=RunLog)


# ---------------------------------------------------------------- planning

def nodes_to_run(model: StatsModel, analysis_level: str) -> list[Node]:
    """Nodes up to the requested level, parents before children."""
    limit = LEVEL_RANK[analysis_level.capitalize()]
    return [n for n in model.topological_order() if LEVEL_RANK[n.level] <= limit]


def existing_statmaps(ctx: Context, node: Node) -> list[StatMap]:
    """Effect maps already on disk (nilearn, SPM, FitLins outputs) for a root node above Run."""
    eff = ctx.index.select(stat="effect", suffix="statmap", extension=[".nii.gz", ".nii"])
    eff = match_frame(eff, {k: v for k, v in ctx.model.input.items() if k not in ("extension", "suffix")})
    if ctx.settings.participant_label and "subject" in eff:
        eff = eff[eff["subject"].isin(ctx.settings.participant_label)]
    if ctx.settings.space and "space" in eff:
        eff = eff[eff["space"] == ctx.settings.space]
    if eff.empty:
        raise NoInputsError(
            f"node {node.name!r} (level {node.level}) is the first node, so it needs existing "
            f"'*_stat-effect_statmap.nii.gz' maps; none match Input={dict(ctx.model.input)} under "
            f"{ctx.index.bids_dir}" + "".join(f", {d}" for d in ctx.index.derivatives))
    maps = []
    for _, row in eff.sort_values("path").iterrows():
        path = Path(row["path"])
        ents = {k: v for k, v in parse_entities(path).items()
                if k not in ("stat", "suffix", "extension", "desc")}
        var = path.with_name(path.name.replace("stat-effect", "stat-variance"))
        sidecar = path.with_name(path.name.split(".")[0] + ".json")
        dof = json.loads(sidecar.read_text()).get("DegreesOfFreedom") if sidecar.exists() else None
        maps.append(StatMap(ents, path, var if var.exists() else None,
                            dof if isinstance(dof, (int, float)) else None))
    return maps


def _passes(m: StatMap, filt: dict, participants: pd.DataFrame) -> bool:
    for key, allowed in filt.items():
        value = m.entities.get(key)
        if value is None and key in participants and m.entities.get("subject") is not None:
            row = participants[participants["subject"] == m.entities["subject"]]
            value = row.iloc[0][key] if len(row) else None
        if not value_matches(value, allowed):
            return False
    return True


def edge_inputs(ctx: Context, node: Node, outputs: dict[str, list[StatMap]]) -> list[StatMap]:
    """Maps flowing into ``node``: parents' t/pass outputs passing each Edge Filter.

    Filters apply to entities and to participants.tsv columns (pybids silently
    ignores the latter).
    """
    maps = []
    for edge in ctx.model.incoming(node.name):
        maps += [m for m in outputs.get(edge.source, [])
                 if _passes(m, edge.filter, ctx.index.participants)]
    if not maps:
        raise NoInputsError(f"node {node.name!r}: the incoming edges' filters selected no maps")
    return maps


# ---------------------------------------------------------------- resume records

def _record_path(ctx: Context, node: Node, entities: dict) -> Path:
    return ctx.out / ".bids-stats" / "units" / f"node-{node.name}" / build_name(entities, "unit", ".json")


def _fingerprint(ctx: Context, node: Node, input_files: list[Path], extra: dict) -> str:
    payload = {
        "node": next(n for n in ctx.model.raw["Nodes"] if n["Name"] == node.name),
        "inputs": sorted(ctx.log.hash(p) for p in input_files),
        "settings": {k: v for k, v in asdict(ctx.settings).items()
                     if k in ("estimator", "noise_model", "missing_confounds", "qc_policy", "seed")},
        "smoothing": ctx.settings.smoothing_at(node.level),
        **extra,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _reuse(ctx: Context, record: Path, fingerprint: str) -> list[StatMap] | None:
    if not record.exists():
        return None
    saved = json.loads(record.read_text())
    maps = [StatMap(m["entities"], Path(m["effect"]), Path(m["variance"]) if m["variance"] else None,
                    m["dof"], m["source_node"]) for m in saved["outputs"]]
    if saved.get("fingerprint") != fingerprint or not all(Path(p).exists() for p in saved["files"]):
        return None
    ctx.log.units.append({**saved["summary"], "reused": True})
    ctx.log.warnings.extend(saved["summary"].get("warnings", []))
    return maps


def _save(ctx: Context, record: Path, fingerprint: str, maps: list[StatMap], files: list[Path], summary: dict):
    ctx.log.units.append(summary)
    write_json(record, {
        "fingerprint": fingerprint,
        "outputs": [{**asdict(m), "effect": str(m.effect), "variance": str(m.variance) if m.variance else None}
                    for m in maps],
        "files": [str(f) for f in files],
        "summary": summary,
    })


# ---------------------------------------------------------------- units

def _ref(ctx: Context, path: Path) -> str:
    """A file as sidecars name it: relative to the output folder when inside it
    (so outputs move together), else absolute."""
    try:
        return Path(path).resolve().relative_to(ctx.out.resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())


def _sidecar(node: Node, contrast, estimator: str, extra: dict) -> dict:
    return {
        "Node": node.name, "Level": node.level, "Contrast": contrast.name,
        "ConditionList": list(contrast.conditions), "Weights": np.asarray(contrast.condition_weights).tolist(),
        "Estimator": estimator, **extra,
    }


def run_unit(ctx: Context, node: Node, run, design, mask_img) -> list[StatMap]:
    """Fit one run and write its maps, or its region tables when the node aggregates."""
    inputs = [p for p in (run.bold, run.events, run.confounds, run.mask, *roi.label_inputs(run.regions),
                          *(Path(r["path"]) for r in design.info["recordings"])) if p]
    entities = dict(run.entities)
    record = _record_path(ctx, node, entities)
    fp = _fingerprint(ctx, node, inputs, {"design": design.matrix.to_json(),
                                          "mask": hashlib.sha256(np.asarray(mask_img.dataobj).tobytes()).hexdigest()})
    reused = _reuse(ctx, record, fp)
    if reused is not None:
        return reused

    Y, mask_img = rl.load_run_data(run, mask_img, ctx.settings.smoothing_at("Run"))
    method = aggregate_method(node.model.options)
    regions = roi.load_regions(run.regions, mask_img) if method else None
    if regions is not None:
        # each region series is one column of Y: the GLM below is the voxels' one
        series = region_timeseries(Y, regions.voxels, method)
        Y = series[:, regions.fitted]
    Y, _ = scale_timeseries(Y)
    if design.info.get("low_pass"):
        Y = low_pass_filter(Y, run.tr, design.info["low_pass"]["cutoff_hz"])
    X = design.matrix
    noise = str(node.model.ours.get("NoiseModel", ctx.settings.noise_model)).lower()
    fit = FirstLevelEstimator(noise_model=noise).fit(Y, X.to_numpy(dtype=np.float64))
    columns = list(X.columns)
    x_columns = design.info.get("x_columns") or expand_x(node.model.x, columns)
    contrasts, warnings = plan_contrasts(node, columns, x_columns, incoming=None)
    mask = np.asarray(mask_img.dataobj).astype(bool)
    folder = output_dir(ctx.out, node.name, entities)
    ref = functools.partial(_ref, ctx)
    # contrast sidecars name the method and label images as the model's Options do
    aggregation = {} if regions is None else {"Aggregate": method, "Mask": [ref(p) for p in run.regions]}
    files = [write_tsv(folder / build_name(entities, "design", ".tsv"), X)]
    files.append(write_nifti(folder / build_name(entities, "mask", ".nii.gz"), mask.astype(np.float32),
                             mask_img.affine))
    files.append(write_json(folder / build_name(entities, "design", ".json"), {
        "Node": node.name, "Level": node.level, "Sources": [_ref(ctx, p) for p in inputs],
        "Mask": str(run.mask) if run.mask else "EPI mask computed over the subject's runs (nilearn)",
        "RepetitionTime": run.tr, "SliceTimeRef": run.slice_time_ref,
        "NoiseModel": noise, "SmoothingFWHM": ctx.settings.smoothing_at("Run"), **design.info,
        **({} if regions is None else {"Aggregate": method, "Regions": roi.region_list(regions, ref)})}))
    if regions is None:
        for key, values in fit.model_maps().items():
            files.append(write_nifti(folder / build_name({**entities, "stat": key}, "statmap", ".nii.gz"),
                                     unmask(values, mask), mask_img.affine))
    else:
        files += write_region_timeseries(folder, entities, method, series, regions.names,
                                         {**roi.timeseries_sidecar(method, regions, run.tr, ref), **aggregation})
        warnings += [*regions.notes, *roi.empty_region_notes(regions)]
    maps = []
    for c in contrasts:
        res = fit.contrast(c.weights, c.test)
        ents = {**entities, "contrast": c.name}
        written, effect, variance = _write_result(
            ctx, node, ents, res, _sidecar(node, c, f"first-level-{noise}",
                                           {"Sources": [_ref(ctx, run.bold)], **aggregation}),
            mask_img.affine, mask if regions is None else regions.fitted, None if regions is None else regions.names)
        files += written
        if c.flows:
            maps.append(StatMap(ents, effect, variance, float(res.dof), node.name))
    for w in design.info.get("warnings", []) + warnings:
        ctx.log.warn(f"{run.bold.name}: {w}")
    summary = {"node": node.name, "entities": entities, "n_inputs": 1, "contrasts": [c.name for c in contrasts],
               "warnings": design.info.get("warnings", []) + warnings, "design": _ref(ctx, files[0]),
               "estimator": f"first-level-{noise}",
               **({"n_voxels": int(mask.sum())} if regions is None else {"n_regions": int(regions.fitted.sum())})}
    _save(ctx, record, fp, maps, files, summary)
    return maps


def _write_result(ctx: Context, node: Node, entities: dict, result, sidecar: dict, affine, fitted,
                  regions) -> tuple[list[Path], Path, Path]:
    """Write one evaluated contrast: maps over the ``fitted`` voxels of a grid, or,
    when ``regions`` names the columns of the fit, a region table.

    Returns the files written and the effect and variance files that flow on
    (one table holds both for regions).
    """
    if regions is not None:
        written = write_roi_contrast(ctx.out, node.name, entities, result, regions, fitted, sidecar)
        return written, written[0], written[0]
    paths = write_contrast(ctx.out, node.name, entities, result, fitted, affine, sidecar)
    return list(paths.values()), paths["effect"], paths["variance"]


def _run_unit_in_worker(ctx: Context, node: Node, run, design, mask_img):
    maps = run_unit(ctx, node, run, design, mask_img)
    return maps, ctx.log


def fit_runs(ctx: Context, node: Node, planned: list) -> list[StatMap]:
    """Fit every run, in ``--n-procs`` worker processes when asked.

    Workers get a copy of the context without the file index (runs need none)
    and send back their maps and log, merged here in run order so outputs
    and provenance do not depend on scheduling.
    """
    if ctx.settings.n_procs <= 1 or len(planned) < 2:
        return [m for run, design, mask in planned for m in run_unit(ctx, node, run, design, mask)]
    from concurrent.futures import ProcessPoolExecutor

    light = Context(ctx.model, None, ctx.out, ctx.settings, RunLog(input_hashes=dict(ctx.log.input_hashes)))
    with ProcessPoolExecutor(max_workers=ctx.settings.n_procs) as pool:
        futures = [pool.submit(_run_unit_in_worker, light, node, run, design, mask)
                   for run, design, mask in planned]
        results = [f.result() for f in futures]
    maps = []
    for run_maps, run_log in results:
        maps += run_maps
        ctx.log.input_hashes.update(run_log.input_hashes)
        ctx.log.warnings += run_log.warnings
        ctx.log.units += run_log.units
    return maps


def group_unit(ctx: Context, node: Node, group: dict, maps: list[StatMap]) -> list[StatMap]:
    """Fit one GroupBy group at a higher level and write its maps, or its region
    tables when the inputs are region tables (regions are then the columns of ``Y``)."""
    entities = hl.common_entities(maps)
    contrast_names = sorted({m.entities.get("contrast") for m in maps})
    incoming = contrast_names[0] if len(contrast_names) == 1 else None
    files_in = list(dict.fromkeys([m.effect for m in maps] + [m.variance for m in maps if m.variance]))
    record = _record_path(ctx, node, entities)
    inference = inference_settings(node, ctx.settings.inference)
    # participants.tsv rows enter the design: a changed covariate must refit. Columns are
    # sorted because reused maps come back from their records with their entities sorted.
    covariates = hl.input_table(maps, ctx.index.participants).sort_index(axis=1).to_json(orient="split")
    fp = _fingerprint(ctx, node, files_in, {"n": len(maps), "inference": inference, "table": covariates})
    reused = _reuse(ctx, record, fp)
    if reused is not None:
        return reused

    # only the root Run node aggregates, so inputs are all region tables or all maps
    tables = roi.read_tables(maps) if maps[0].is_region_table else None
    names = [_ref(ctx, m.effect) for m in maps]
    if tables is None:
        effects, variances, affines, shapes = hl.load_maps(maps)
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
    table = hl.input_table(maps, ctx.index.participants)
    X, design_info = hl.design_for(node, table)
    columns = list(X.columns)
    x_columns = design_info.get("x") or columns
    contrasts, warnings = plan_contrasts(node, columns, x_columns, incoming)
    diagnostics = check_design(X, [(c.name, c.weights) for c in contrasts],
                               require_residual_dof=node.model.type != "meta")

    data = np.stack([effects[i] for i in keep])
    var = np.stack([variances[i] for i in keep]) if all(variances[i] is not None for i in keep) else None
    fwhm = ctx.settings.smoothing_at(node.level)
    affine, in_mni = None, False
    if tables is None:
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
    estimator, est_name = hl.make_estimator(node, ctx.settings, dofs)
    if node.model.type == "meta" and V is None:
        raise DesignError(f"node {node.name!r} is a fixed-effects ('meta') node but its inputs have no variance maps")
    fit = estimator.fit(Y, X.to_numpy(dtype=np.float64), variances=V)
    folder = output_dir(ctx.out, node.name, entities)
    files = [write_tsv(folder / build_name(entities, "design", ".tsv"), X)]
    files.append(write_json(folder / build_name(entities, "design", ".json"), {
        "Node": node.name, "Level": node.level, "Estimator": est_name, "SmoothingFWHM": fwhm,
        "Inputs": [_ref(ctx, m.effect) for m in maps], "Design": design_info,
        "Diagnostics": diagnostics.to_dict(), **mask_info, "QC": qc.to_dict()}))
    if tables is None:
        files.append(write_nifti(folder / build_name(entities, "mask", ".nii.gz"), mask.astype(np.float32), affine))
        for key, values in fit.model_maps().items():
            files.append(write_nifti(folder / build_name({**entities, "stat": key}, "statmap", ".nii.gz"),
                                     unmask(values, mask), affine))
    sidecar_extra = {"Inputs": [_ref(ctx, m.effect) for m in maps], **({} if tables is None else tables.inherited())}
    out = []
    for c in contrasts:
        res = fit.contrast(c.weights, c.test)
        ents = {**entities, "contrast": c.name}
        written, effect, variance = _write_result(ctx, node, ents, res, _sidecar(node, c, est_name, sidecar_extra),
                                                  affine, mask, None if tables is None else tables.names)
        files += written
        # thresholds, clusters and permutations are voxel-map inference; region tables keep their p column
        if inference is not None and tables is None:
            inf_files, inf_warnings = threshold_contrast(ctx.out, node, ents, res.z, mask, affine, inference, in_mni)
            files += inf_files
            warnings += inf_warnings
            if inference["NPerm"] and c.test == "t" and est_name == "ols":
                block_col = inference["ExchangeabilityBlocks"]
                blocks = table[block_col].factorize()[0] if block_col else None
                files += permute_contrast(ctx.out, node, ents, Y, X.to_numpy(dtype=np.float64), c.weights,
                                          mask, affine, inference, ctx.settings.seed, blocks)
        if c.flows:
            dof = float(res.dof) if np.ndim(res.dof) == 0 else float(np.nanmedian(res.dof))
            out.append(StatMap(ents, effect, variance, dof, node.name))
    all_warnings = warnings + list(diagnostics.warnings)
    for w in all_warnings:
        ctx.log.warn(f"node {node.name} {entities}: {w}")
    summary = {"node": node.name, "entities": entities, "n_inputs": len(maps), "estimator": est_name,
               "contrasts": [c.name for c in contrasts], "warnings": all_warnings, "design": _ref(ctx, files[0]),
               ("n_voxels" if tables is None else "n_regions"): int(mask.sum())}
    _save(ctx, record, fp, out, files, summary)
    return out


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
    mask, mask_info = group_mask(data, affine, explicit_mask=_options_mask(ctx, node),
                                 brain_mask="auto" if in_mni else False)
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
    return nb.load(path)


# ---------------------------------------------------------------- driver

def execute(ctx: Context) -> dict[str, list[StatMap]]:
    """Run every selected node; returns the flowing maps of each node."""
    nodes = nodes_to_run(ctx.model, ctx.settings.analysis_level)
    outputs: dict[str, list[StatMap]] = {}
    root = ctx.model.root
    # Plan the run level first: every design is built (cheap) before any fit, so
    # bad events, TRs or confounds stop the run before anything is written.
    planned = {}
    for node in nodes:
        if node.level == "Run" and node.name == root.name:
            runs = rl.collect_runs(ctx.index, ctx.model, node, ctx.settings)
            designs = [rl.prepare_design(run, node, ctx.settings) for run in runs]
            rl.note_missing_columns(runs, designs, ctx.settings.missing_confounds)
            masks = rl.run_masks(runs)
            roi.check_regions(runs, masks)
            planned[node.name] = [(run, design, masks[i]) for i, (run, design) in enumerate(zip(runs, designs))]
    roi.check_region_nodes(ctx.model, nodes, ctx.settings)
    if root.name in [n.name for n in nodes] and root.level != "Run":
        for m in (maps := existing_statmaps(ctx, root)):
            try:
                nb.load(m.effect).shape
            except Exception as exc:
                raise InputDataError(f"cannot read statistical map {m.effect}: {exc}") from exc
        planned[root.name] = maps

    for node in nodes:
        log.info("node %s (%s)", node.name, node.level)
        if node.level == "Run":
            if node.name not in planned:
                raise DesignError(f"node {node.name!r}: a Run-level node must be the model's first node")
            outputs[node.name] = fit_runs(ctx, node, planned[node.name])
            continue
        incoming = planned[node.name] if node.name == root.name else edge_inputs(ctx, node, outputs)
        for m in incoming:
            ctx.log.hash(m.effect)
        outputs[node.name] = []
        for group, members in hl.group_maps(incoming, node.group_by):
            outputs[node.name] += group_unit(ctx, node, group, members)
    return outputs
