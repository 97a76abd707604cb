"""Walk the model graph and run every unit of work.

A *unit* is one design fitted once: a run at the Run level
(:mod:`bids_app.graph.runs`), or one GroupBy group of incoming maps at a
higher level (:mod:`bids_app.graph.groups`). This module checks every run's
inputs before the first fit, decides which nodes run and which maps flow
along each edge, and, node by node, plans every unit before the first of
them writes, then loads, fits and writes each plan (docs/architecture.md,
"A unit of work"). Finished units leave resume records
(:mod:`bids_app.graph.records`).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import nibabel as nb
import pandas as pd

from bids_app.errors import DesignError, InputDataError, NoInputsError
from bids_app.graph import roi
from bids_app.graph.context import Context
from bids_app.graph.dispatch import map_units
from bids_app.graph.filters import match_frame, value_matches
from bids_app.graph import runs
from bids_app.graph.groups import group_label, group_maps, plan_group, run_group, tag_group
from bids_app.graph.inference_step import scope_notes
from bids_app.graph.parallel import SerialBackend
from bids_app.graph.plan import plan_graph
from bids_app.graph.progress import Progress
from bids_app.graph.runs import (check_variants, collect_runs, exclude_bad_voxels, note_missing_columns, plan_run,
                                 prepare_design)
from bids_app.graph.units import CheckedRun, StatMap, UnitPlan
from bids_app.levels import LEVEL_RANK
from bids_app.io.entities import parse_entities
from bids_app.io.index import FileIndex, read_json
from bids_app.io.images import run_masks
from bids_app.io.maps import MAP_EXTENSIONS, check_map, map_files, sidecar_path
from bids_app.spec.model import Node, StatsModel

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- planning

def nodes_to_run(model: StatsModel, analysis_level: str) -> list[Node]:
    """Nodes up to the requested level, parents before children."""
    limit = LEVEL_RANK[analysis_level.capitalize()]
    return [n for n in model.topological_order() if LEVEL_RANK[n.level] <= limit]


def existing_statmaps(ctx: Context, node: Node) -> list[StatMap]:
    """Effect maps already on disk (nilearn, SPM, FitLins outputs) for a root node above Run."""
    eff = ctx.index.select(stat="effect", suffix="statmap", extension=MAP_EXTENSIONS)
    eff = match_frame(eff, {k: v for k, v in ctx.model.input.items() if k not in ("extension", "suffix")})
    # a GIFTI map is its pair of hemisphere files, named by the left one
    if "hemi" in eff:
        eff = eff[eff["hemi"].isna() | (eff["hemi"] == "L")]
    if ctx.settings.participant_label and "subject" in eff:
        eff = eff[eff["subject"].isin(ctx.settings.participant_label)]
    if ctx.settings.space and "space" in eff:
        eff = eff[eff["space"] == ctx.settings.space]
    if eff.empty:
        raise NoInputsError(
            f"node {node.name!r} (level {node.level}) is the first node, so it needs existing "
            f"'*_stat-effect_statmap' maps (.nii.gz, .func.gii, .dscalar.nii); none match "
            f"Input={dict(ctx.model.input)}" + (f", space={ctx.settings.space}" if ctx.settings.space else "")
            + f" under "
            f"{ctx.index.bids_dir}" + "".join(f", {d}" for d in ctx.index.derivatives))
    check_variants(eff)
    maps = []
    for _, row in eff.sort_values("path").iterrows():
        path = Path(row["path"])
        ents = {k: v for k, v in parse_entities(path).items()
                if k not in ("stat", "suffix", "extension", "desc", "hemi")}
        var = path.with_name(path.name.replace("stat-effect", "stat-variance"))
        sidecar = sidecar_path(path)
        dof = read_json(sidecar).get("DegreesOfFreedom") if sidecar.exists() else None
        maps.append(StatMap(ents, path, var if var.exists() else None,
                            dof if isinstance(dof, (int, float)) else None))
    return maps


def check_statmap(m: StatMap) -> None:
    """Raise :class:`InputDataError` unless a volume effect map (and its variance) is one readable 3-D map."""
    shapes = {}
    for path in (m.effect, m.variance):
        if path is None or not str(path).endswith((".nii", ".nii.gz")):
            continue
        try:
            shape = nb.load(path).shape
        except Exception as exc:  # nibabel raises several types for broken files
            raise InputDataError(f"cannot read statistical map {path}: {exc}") from exc
        if len(shape) > 3 and any(d != 1 for d in shape[3:]):
            raise InputDataError(f"statistical map {path} is {len(shape)}-D with shape {shape}: each input map "
                                 "must be one 3-D volume (one file per subject/contrast); split it, e.g. "
                                 "with nilearn.image.iter_img, and name each file with its entities")
        shapes[path] = shape[:3]
    if len(set(shapes.values())) > 1:
        raise InputDataError(f"{m.variance}: shape {shapes[m.variance]} differs from its effect map's "
                             f"{shapes[m.effect]} ({m.effect.name})")


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
        parts = []
        for edge in ctx.model.incoming(node.name):
            made = outputs.get(edge.source, [])
            names = sorted({str(m.entities.get("contrast")) for m in made})
            parts.append(f"{edge.source!r} passes on {len(made)} map(s) (contrasts: {', '.join(names) or 'none'})"
                         + (f" and the edge's Filter {dict(edge.filter)} kept none" if edge.filter and made else ""))
        raise NoInputsError(f"node {node.name!r} receives no maps: {'; '.join(parts)}. Fix: give the parent "
                            "contrasts (or DummyContrasts) that flow (t or pass; F contrasts stop), or widen the Filter")
    return maps


# ---------------------------------------------------------------- driver

def plan_inputs(ctx: Context, nodes: list[Node], backend=None) -> dict:
    """The root node's units, checked: every run's design (Run root) or the existing maps.

    Every design is built (cheap) before any fit, so bad events, TRs or
    confounds stop the run before anything is written. Every BOLD series is
    read in full on ``backend`` (default serial), all before the first fit.
    """
    root = ctx.model.root
    planned = {}
    for node in nodes:
        if node.level == "Run" and node.name == root.name:
            runs = collect_runs(ctx.index, ctx.model, node, ctx.settings, backend)
            designs, late = zip(*[prepare_design(run, node, ctx.settings) for run in runs])
            missing = note_missing_columns(runs, designs, ctx.settings.missing_confounds)
            masks, checks = exclude_bad_voxels(runs, run_masks(runs), ctx.settings.qc_policy)
            ctx.log.exclusions += [{**c.exclusion, "node": node.name} for c in checks if c.exclusion]
            checks = [replace(found, warnings=[*a, *b, *found.warnings]) for a, b, found in zip(late, missing, checks)]
            regions = roi.plan_regions(runs, masks)
            planned[node.name] = [CheckedRun(run, designs[i], masks[i], regions[i], checks[i])
                                  for i, run in enumerate(runs)]
    roi.check_region_nodes(ctx.model, nodes, ctx.settings)
    for note in scope_notes(nodes, ctx.settings.inference):
        ctx.log.warn(note)
    if root.name in [n.name for n in nodes] and root.level != "Run":
        for m in (maps := existing_statmaps(ctx, root)):
            check_map(m.effect)
            check_statmap(m)
        planned[root.name] = maps
    ctx.index.participants  # read (and checked) now: Edge filters and group designs use it later
    return planned


def plan_dataset(model: StatsModel, bids_dir: Path, derivatives: list[Path], settings) -> dict:
    """Every selected node planned on a dataset (``bids-stats validate --bids-dir``): nothing fitted or written."""
    ctx = Context(model, FileIndex.build(bids_dir, derivatives), Path("."), settings)
    nodes = nodes_to_run(model, settings.analysis_level)
    return plan_graph(ctx, nodes, plan_inputs(ctx, nodes))


def execute(ctx: Context, backend=None, progress: Progress | None = None,
            before_first_write=lambda: None) -> dict[str, list[StatMap]]:
    """Run every selected node; returns the flowing maps of each node.

    A node's units (runs, or GroupBy groups) are independent: they run on
    ``backend`` (:mod:`bids_app.graph.parallel`; default serial), one node
    after the other. ``before_first_write`` is called once every input has
    been checked, before anything is written.
    """
    backend = backend or SerialBackend()
    progress = progress or Progress(enabled=False)
    nodes = nodes_to_run(ctx.model, ctx.settings.analysis_level)
    outputs: dict[str, list[StatMap]] = {}
    root = ctx.model.root
    planned = plan_inputs(ctx, nodes, backend)
    # every node's designs and contrasts, from the entities that would flow: names that match
    # nothing anywhere stop the run here, before the first file is written
    plan_graph(ctx, nodes, planned)
    before_first_write()
    for node in nodes:
        log.info("node %s (%s)", node.name, node.level)
        if node.level == "Run":
            if node.name not in planned:
                raise DesignError(f"node {node.name!r}: a Run-level node must be the model's first node")
            outputs[node.name] = _run_node(ctx, backend, progress, node, planned[node.name])
        else:
            incoming = planned[node.name] if node.name == root.name else edge_inputs(ctx, node, outputs)
            outputs[node.name] = _group_node(ctx, backend, progress, node, incoming)
    return outputs


def _run_node(ctx: Context, backend, progress: Progress, node: Node, planned: list[CheckedRun]) -> list[StatMap]:
    """Plan every run of a Run node from its checked inputs, then fit and write the planned ones."""
    labels = [group_label(checked.run.entities) for checked in planned]
    return _fit_planned(ctx, backend, progress, node, plan_run, _run_unit, [(node, checked) for checked in planned],
                        labels, keep_index=False)


def _group_node(ctx: Context, backend, progress: Progress, node: Node, incoming: list[StatMap]) -> list[StatMap]:
    """Plan every GroupBy group of a node (each read and checked), then fit and write the planned ones."""
    for m in incoming:
        for f in ([m.effect] if m.is_region_table else map_files(m.effect)):
            ctx.log.hash(f)
    groups = group_maps(incoming, node.group_by, ctx.index.participants)
    return _fit_planned(ctx, backend, progress, node, plan_group, run_group,
                        [(node, group, tag_group(group, members)) for group, members in groups],
                        [group_label(group) for group, _ in groups], keep_index=True)


def _fit_planned(ctx: Context, backend, progress: Progress, node: Node, plan, run, units: list[tuple],
                 labels: list[str], keep_index: bool) -> list[StatMap]:
    """``plan(ctx, *unit)`` for every unit before the first writes, then ``run(ctx, plan)`` (load, fit,
    write) for each plan; a unit its record reuses is planned as its maps. The flowing maps in unit order."""
    plans = map_units(ctx, backend, plan, units, keep_index=keep_index)
    todo = [i for i, planned in enumerate(plans) if isinstance(planned, UnitPlan)]
    with progress.node(node.name, len(plans)) as tick:
        for i in sorted(set(range(len(plans))) - set(todo)):
            tick(labels[i])
        fitted = map_units(ctx, backend, run, [(plans[i],) for i in todo], lambda k: tick(labels[todo[k]]),
                           keep_index=keep_index)
    for i, maps in zip(todo, fitted):
        plans[i] = maps
    return [m for maps in plans for m in maps]


def _run_unit(ctx: Context, plan) -> list[StatMap]:
    # looked up when called, so a worker process runs the run_unit its module holds (tests replace it)
    return runs.run_unit(ctx, plan)

