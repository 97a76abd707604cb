"""Run-level units: fit one BOLD series (voxels or regions) and write its maps or tables."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np

from bids_app.derivatives.atomic import journal, write_json, write_nifti, write_tsv
from bids_app.derivatives.naming import build_name, camel_keys, output_dir
from bids_app.derivatives.roistats import write_region_timeseries
from bids_app.derivatives.statmaps import unmask
from bids_app.design.columns import expand_x
from bids_app.design.first_level import low_pass_filter
from bids_app.design.regions import aggregate_method, region_timeseries
from bids_app.estimation.first_level import FirstLevelEstimator, scale_timeseries
from bids_app.graph import roi
from bids_app.graph import run_level as rl
from bids_app.graph.context import Context, RunLog
from bids_app.graph.contrasts import plan_contrasts
from bids_app.graph.outputs import contrast_sidecar, ref, write_result
from bids_app.graph.records import fingerprint, record_path, reuse, save
from bids_app.graph.units import StatMap
from bids_app.spec.model import Node


def run_unit(ctx: Context, node: Node, run, design, mask_img, regions) -> list[StatMap]:
    """Fit one run and write its maps, or its region tables when the node aggregates
    (``regions``: the run's :class:`~bids_app.design.regions.Regions` from planning, else None)."""
    inputs = [p for p in (run.bold, run.events, run.confounds, run.mask, *roi.label_inputs(run.regions),
                          *(Path(r["path"]) for r in design.info["recordings"])) if p]
    entities = dict(run.entities)
    record = record_path(ctx, node, entities)
    fp = fingerprint(ctx, node, inputs, {"design": design.matrix.to_json(),
                                          "mask": hashlib.sha256(np.asarray(mask_img.dataobj).tobytes()).hexdigest()})
    reused = reuse(ctx, record, fp)
    if reused is not None:
        return reused

    Y, mask_img = rl.load_run_data(run, mask_img, ctx.settings.smoothing_at("Run"))
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
    # the design's own copies of RepetitionTime and SliceTimeRef would repeat them in other units
    info = {k: v for k, v in design.info.items() if k not in ("tr", "slice_time_ref")}
    files.append(write_json(folder / build_name(entities, "design", ".json"), camel_keys({
        "Node": node.name, "Level": node.level, "Sources": [ref(ctx, p) for p in inputs],
        "Mask": rel(run.mask) if run.mask else "EPI mask computed over the subject's runs (nilearn)",
        "RepetitionTime": run.tr, "SliceTimeRef": run.slice_time_ref,
        "NoiseModel": noise, "NoiseModelDetails": {**estimator.describe(), "NFilters": len(fit.group_covariance)},
        "SmoothingFWHM": ctx.settings.smoothing_at("Run"), **info,
        **({} if regions is None else {"Aggregate": method, "Regions": roi.region_list(regions, rel)})})))
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
    # the parent's journal does not see a worker's writes: a failed unit removes its own files here
    with journal() as written:
        try:
            maps = run_unit(ctx, node, run, design, mask_img, regions)
        except BaseException:
            written.rollback()
            raise
    return maps, ctx.log


def die_with_parent(parent: int) -> None:
    """Worker initializer: end this worker as soon as the process that started the run is gone.

    A killed parent (``kill -9``, an HPC job hitting its time limit) must not
    leave workers that keep fitting and writing into OUTPUT_DIR. Linux ends
    the worker at once (``PR_SET_PDEATHSIG``); elsewhere, and as a fallback,
    a watcher thread checks every half second.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    start = os.getppid()

    def watch():
        while True:
            time.sleep(0.5)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(1)
            if os.getppid() != start:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def fit_runs(ctx: Context, node: Node, planned: list) -> list[StatMap]:
    """Fit every run, in ``--n-procs`` worker processes when asked.

    Workers get a copy of the context without the file index (runs need none)
    and send back their maps and log, merged here in run order so outputs
    and provenance do not depend on scheduling.
    """
    if ctx.settings.n_procs <= 1 or len(planned) < 2:
        return [m for unit in planned for m in run_unit(ctx, node, *unit)]
    from concurrent.futures import ProcessPoolExecutor

    light = Context(ctx.model, None, ctx.out, ctx.settings, RunLog(input_hashes=dict(ctx.log.input_hashes)),
                    ctx.links)
    with ProcessPoolExecutor(max_workers=ctx.settings.n_procs, initializer=die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(_run_unit_in_worker, light, node, *unit) for unit in planned]
        try:
            results = [f.result() for f in futures]
        except BaseException:
            # no new unit starts after a failure; running ones finish (complete, with records)
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    maps = []
    for run_maps, run_log in results:
        maps += run_maps
        ctx.log.input_hashes.update(run_log.input_hashes)
        ctx.log.warnings += run_log.warnings
        ctx.log.units += run_log.units
        ctx.log.finished += run_log.finished
    return maps
