"""Run-level units: find each run's inputs, build its design, fit, write its maps (or region tables)."""
from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from bids_app.derivatives.atomic import write_json, write_nifti, write_tsv
from bids_app.derivatives.naming import build_name, output_dir
from bids_app.derivatives.roistats import write_region_timeseries
from bids_app.derivatives.statmaps import unmask
from bids_app.design.columns import expand_x
from bids_app.design.contrasts import plan_contrasts
from bids_app.design.first_level import RunDesign, build_run_design, low_pass_filter, uses_recording
from bids_app.design.recordings import RecordingFile
from bids_app.design.regions import aggregate_method, region_timeseries
from bids_app.errors import DesignError, InputDataError, NoInputsError
from bids_app.estimation.first_level import FirstLevelEstimator, scale_timeseries
from bids_app.graph import roi
from bids_app.graph.context import Context, RunLog
from bids_app.graph.filters import match_frame, value_matches
from bids_app.graph.records import fingerprint, record_path, reuse, save
from bids_app.graph.unit_files import contrast_sidecar, ref, write_result
from bids_app.graph.units import RunInputs, Settings, StatMap
from bids_app.io.confounds import read_confounds
from bids_app.io.events import read_events
from bids_app.io.images import check_bold, load_run_data, n_volumes
from bids_app.io.index import FileIndex
from bids_app.io.recordings import read_used
from bids_app.io.regions import label_inputs
from bids_app.spec.model import Node, StatsModel


log = logging.getLogger(__name__)

_RUN_KEYS = ("subject", "session", "task", "acquisition", "run")


def collect_runs(index: FileIndex, model: StatsModel, node: Node, settings: Settings) -> list[RunInputs]:
    """One :class:`RunInputs` per BOLD series selected by ``Input``, labels and space.

    Preprocessed BOLD (``desc-preproc``, or ``--desc-label``) from derivatives
    is preferred; raw BOLD is used only when no derivatives provide any, with
    a warning. Every selected image is checked with :func:`check_bold`, so a
    broken file stops the run before anything is written.
    """
    bold = index.select(suffix="bold", extension=[".nii.gz", ".nii"])
    desc = settings.desc_label or "preproc"
    preproc = bold[(~bold["is_raw"].astype(bool)) & (bold["desc"] == desc)] \
        if "desc" in bold else bold.iloc[0:0]
    if len(preproc):
        bold = preproc
        if settings.space:
            bold = bold[bold.get("space", pd.Series(None, index=bold.index)) == settings.space]
        else:
            spaces = sorted(set(bold["space"].dropna())) if "space" in bold else []
            if len(spaces) > 1:
                raise InputDataError(f"preprocessed BOLD exists in several spaces {spaces}: choose one with --space")
    else:
        bold = bold[bold["is_raw"].astype(bool)]
        log.warning("no preprocessed BOLD (desc-%s) in the derivatives: fitting raw BOLD images", desc)
    bold = match_frame(bold, {k: v for k, v in model.input.items() if k not in ("extension", "suffix")})
    if settings.participant_label:
        bold = bold[bold["subject"].isin(settings.participant_label)]
    if bold.empty:
        raise NoInputsError(
            f"node {node.name!r}: no BOLD images match Input={dict(model.input)}"
            + (f", participants={settings.participant_label}" if settings.participant_label else "")
            + (f", space={settings.space}" if settings.space else "")
        )
    runs = []
    for _, row in bold.sort_values("path").iterrows():
        check_bold(Path(row["path"]))
        runs.append(_run_inputs(index, node, row))
    return runs


def _first(frame: pd.DataFrame) -> Path | None:
    return Path(frame.sort_values("path").iloc[0]["path"]) if len(frame) else None


def _run_inputs(index: FileIndex, node: Node, row: pd.Series) -> RunInputs:
    ents = {k: row.get(k) for k in (*_RUN_KEYS, "space") if row.get(k) is not None}
    same_run = {k: row.get(k) for k in _RUN_KEYS}
    events = _first(index.select(suffix="events", extension=".tsv", **same_run))
    confounds = _first(index.select(is_raw=False, desc="confounds", suffix=["timeseries", "regressors"],
                                    extension=".tsv", **same_run))
    mask_filter = node.model.options.get("Mask")
    space = {"space": row.get("space")}
    regions = _label_images(index, node, row) if aggregate_method(node.model.options) else ()
    if mask_filter and not regions:
        candidates = match_frame(index.select(is_raw=False, extension=[".nii.gz", ".nii"], **same_run, **space),
                            {k: v if isinstance(v, list) else [v] for k, v in mask_filter.items()})
        mask = _first(candidates)
        if mask is None:
            raise NoInputsError(f"Options.Mask {mask_filter} matched no file for {Path(row['path']).name}")
    else:
        mask = _first(index.select(is_raw=False, desc="brain", suffix="mask",
                                   extension=[".nii.gz", ".nii"], **same_run, **space))
    meta = index.metadata(row["path"])
    tr = meta.get("RepetitionTime")
    if tr is None:
        raise InputDataError(f"{row['path']}: RepetitionTime missing from its JSON sidecar(s)")
    slice_ref = 0.0
    if meta.get("SliceTimingCorrected") and meta.get("StartTime") is not None:
        slice_ref = float(meta["StartTime"]) / float(tr)
    # any recording- label, raw or derivatives; the sidecar (with inheritance) says which columns each has
    recordings = tuple(RecordingFile(Path(p), index.metadata(p)) for p in sorted(
        index.select(suffix=["physio", "stim"], extension=".tsv.gz", **same_run)["path"]))
    return RunInputs(ents, Path(row["path"]), events, confounds, mask, float(tr), slice_ref, regions,
                     recordings)


def _label_images(index: FileIndex, node: Node, row: pd.Series) -> tuple[Path, ...]:
    """The label images ``Options.Mask`` selects for one run of an aggregating node.

    Searched in the derivatives, like masks, but a label image usually
    covers more than one run (an anatomical ``dseg``, an atlas): a file
    qualifies when each of its subject, session, task, acquisition, run and
    space entities equals the run's or is absent. Of those, the most
    specific (naming the most of these entities) are used, so a run-specific
    or same-space image wins over a general one.

    Raises
    ------
    NoInputsError
        No file qualifies.
    """
    filt = node.model.options["Mask"]
    hits = match_frame(index.select(is_raw=False, extension=[".nii.gz", ".nii"]),
                       {k: v if isinstance(v, list) else [v] for k, v in filt.items()})
    scope = (*_RUN_KEYS, "space")
    ranked = []
    for _, hit in hits.iterrows():
        named = [k for k in scope if hit.get(k) is not None]
        if all(row.get(k) is not None and value_matches(hit[k], [row[k]]) for k in named):
            ranked.append((len(named), Path(hit["path"])))
    if not ranked:
        raise NoInputsError(f"node {node.name!r}: Options.Mask {filt} matched no label image for "
                            f"{Path(row['path']).name} (searched the derivatives for files whose subject, "
                            "session, task, acquisition, run and space are the run's or absent)")
    best = max(n for n, _ in ranked)
    return tuple(sorted(path for n, path in ranked if n == best))


def prepare_design(run: RunInputs, node: Node, settings: Settings) -> RunDesign:
    """Build (cheaply, before any fitting) the design of one run; raises on bad inputs."""
    n_vols = n_volumes(run.bold)
    events = read_events(run.events) if run.events else pd.DataFrame(columns=["onset", "duration"])
    confounds = read_confounds(run.confounds) if run.confounds else None
    source = str(run.events or run.bold)
    try:
        return build_run_design(node, events, tr=run.tr, n_vols=n_vols, confounds=confounds,
                                slice_time_ref=run.slice_time_ref, source=source,
                                missing_confounds=settings.missing_confounds,
                                recordings=read_used(run.recordings, functools.partial(uses_recording, node)))
    except (DesignError, InputDataError) as exc:
        # some design errors (transformations, HRF, X) name the column but not the run
        named = (run.bold, run.events, run.confounds, *(r.path for r in run.recordings))
        if any(p.name in str(exc) for p in named if p):
            raise
        raise type(exc)(f"{source}: {exc}") from exc


def note_missing_columns(runs: list[RunInputs], designs: list[RunDesign], policy: str = "drop") -> None:
    """Warn, in each design's ``info["warnings"]``, about columns other runs of the task have.

    A ``Model.X`` pattern (``trans_*``, ``trial_type.*``) that matches fewer
    columns in one run than in the others is not an error for
    :func:`build_run_design`, which sees one run; across runs it is the same
    silent omission as a missing named column, so it follows the same
    ``--missing-confounds`` policy: a warning (``"drop"``) or a
    :class:`DesignError` (``"error"``). Columns already reported as dropped
    are not repeated.
    """
    by_task: dict = {}
    for run, design in zip(runs, designs):
        by_task.setdefault(run.entities.get("task"), []).append(design)
    for group in by_task.values():
        union = list(dict.fromkeys(c for d in group for c in d.info["x_columns"]))
        for design in group:
            dropped = {d["entry"] for d in design.info["dropped"]}
            absent = [c for c in union if c not in design.info["x_columns"] and c not in dropped]
            if not absent:
                continue
            message = (f"{design.info['source']}: column(s) {', '.join(map(repr, absent))} of other runs' "
                       "designs are absent from this run (a Model.X pattern matched fewer columns here)")
            if policy == "error":
                raise DesignError(message + "; use --missing-confounds drop to fit the run without them")
            design.info["warnings"].append(message)


def run_unit(ctx: Context, node: Node, run, design, mask_img, regions) -> list[StatMap]:
    """Fit one run and write its maps, or its region tables when the node aggregates
    (``regions``: the run's :class:`~bids_app.design.regions.Regions` from planning, else None)."""
    inputs = [p for p in (run.bold, run.events, run.confounds, run.mask, *label_inputs(run.regions),
                          *(Path(r["path"]) for r in design.info["recordings"])) if p]
    entities = dict(run.entities)
    record = record_path(ctx, node, entities)
    fp = fingerprint(ctx, node, inputs, {"design": design.matrix.to_json(),
                                          "mask": hashlib.sha256(np.asarray(mask_img.dataobj).tobytes()).hexdigest()})
    reused = reuse(ctx, record, fp)
    if reused is not None:
        return reused

    Y, mask_img = load_run_data(run.bold, mask_img, ctx.settings.smoothing_at("Run"))
    method = aggregate_method(node.model.options)
    if regions is not None:
        # each region series is one column of Y: the GLM below is the voxels' one
        series = region_timeseries(Y, regions.voxels, method)
        Y = series[:, regions.fitted]
    Y, _ = scale_timeseries(Y)
    if design.info.get("low_pass"):
        Y = low_pass_filter(Y, run.tr, design.info["low_pass"]["cutoff_hz"])
    X = design.matrix
    noise = str(node.model.ours.get("NoiseModel", ctx.settings.noise_model)).lower()
    estimator = FirstLevelEstimator(noise_model=noise, random_state=ctx.settings.seed)
    fit = estimator.fit(Y, X.to_numpy(dtype=np.float64))
    columns = list(X.columns)
    x_columns = design.info.get("x_columns") or expand_x(node.model.x, columns)
    contrasts, warnings = plan_contrasts(node, columns, x_columns, incoming=None)
    mask = np.asarray(mask_img.dataobj).astype(bool)
    folder = output_dir(ctx.out, node.name, entities)
    rel = functools.partial(ref, ctx)
    # contrast sidecars name the method and label images as the model's Options do
    aggregation = {} if regions is None else {"Aggregate": method, "Mask": [rel(p) for p in run.regions]}
    files = [write_tsv(folder / build_name(entities, "design", ".tsv"), X)]
    files.append(write_nifti(folder / build_name(entities, "mask", ".nii.gz"), mask.astype(np.float32),
                             mask_img.affine))
    files.append(write_json(folder / build_name(entities, "design", ".json"), {
        "Node": node.name, "Level": node.level, "Sources": [ref(ctx, p) for p in inputs],
        "Mask": str(run.mask) if run.mask else "EPI mask computed over the subject's runs (nilearn)",
        "RepetitionTime": run.tr, "SliceTimeRef": run.slice_time_ref,
        "NoiseModel": noise, "NoiseModelDetails": {**estimator.describe(), "NFilters": len(fit.group_covariance)},
        "SmoothingFWHM": ctx.settings.smoothing_at("Run"), **design.info,
        **({} if regions is None else {"Aggregate": method, "Regions": roi.region_list(regions, rel)})}))
    if regions is None:
        for key, values in fit.model_maps().items():
            files.append(write_nifti(folder / build_name({**entities, "stat": key}, "statmap", ".nii.gz"),
                                     unmask(values, mask), mask_img.affine))
    else:
        files += write_region_timeseries(folder, entities, method, series, regions.names,
                                         {**roi.timeseries_sidecar(method, regions, run.tr, rel), **aggregation})
        warnings += [*regions.notes, *roi.empty_region_notes(regions)]
    maps = []
    for c in contrasts:
        res = fit.contrast(c.weights, c.test)
        ents = {**entities, "contrast": c.name}
        written, effect, variance = write_result(
            ctx, node, ents, res, contrast_sidecar(node, c, f"first-level-{noise}",
                                           {"Sources": [ref(ctx, run.bold)], **aggregation}),
            mask_img.affine, mask if regions is None else regions.fitted, None if regions is None else regions.names)
        files += written
        if c.flows:
            maps.append(StatMap(ents, effect, variance, float(res.dof), node.name))
    for w in design.info.get("warnings", []) + warnings:
        ctx.log.warn(f"{run.bold.name}: {w}")
    summary = {"node": node.name, "entities": entities, "n_inputs": 1, "contrasts": [c.name for c in contrasts],
               "warnings": design.info.get("warnings", []) + warnings, "design": ref(ctx, files[0]),
               "estimator": f"first-level-{noise}",
               **({"n_voxels": int(mask.sum())} if regions is None else {"n_regions": int(regions.fitted.sum())})}
    save(ctx, record, fp, maps, files, summary)
    return maps


def _run_unit_in_worker(ctx: Context, node: Node, run, design, mask_img, regions):
    maps = run_unit(ctx, node, run, design, mask_img, regions)
    return maps, ctx.log


def fit_runs(ctx: Context, node: Node, planned: list) -> list[StatMap]:
    """Fit every run, in ``--n-procs`` worker processes when asked.

    Workers get a copy of the context without the file index (runs need none)
    and send back their maps and log, merged here in run order so outputs
    and provenance do not depend on scheduling.
    """
    if ctx.settings.n_procs <= 1 or len(planned) < 2:
        return [m for unit in planned for m in run_unit(ctx, node, *unit)]
    from concurrent.futures import ProcessPoolExecutor

    light = Context(ctx.model, None, ctx.out, ctx.settings, RunLog(input_hashes=dict(ctx.log.input_hashes)))
    with ProcessPoolExecutor(max_workers=ctx.settings.n_procs) as pool:
        futures = [pool.submit(_run_unit_in_worker, light, node, *unit) for unit in planned]
        results = [f.result() for f in futures]
    maps = []
    for run_maps, run_log in results:
        maps += run_maps
        ctx.log.input_hashes.update(run_log.input_hashes)
        ctx.log.warnings += run_log.warnings
        ctx.log.units += run_log.units
    return maps
