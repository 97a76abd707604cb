"""Run-level units: find and check each run's inputs and design, then plan, fit and write each run
(its maps, or its region time series and tables)."""
from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from bids_app.derivatives.atomic import write_json, write_tsv
from bids_app.derivatives.naming import build_name, camel_keys, output_dir
from bids_app.derivatives.roistats import write_region_timeseries
from bids_app.design.columns import expand_x
from bids_app.design.contrasts import plan_contrasts
from bids_app.design.events import events_after_end
from bids_app.design.first_level import RunDesign, build_run_design, low_pass_filter, uses_recording
from bids_app.design.recordings import RecordingFile
from bids_app.design.regions import aggregate_method
from bids_app.errors import DesignError, InputDataError, NoInputsError
from bids_app.estimation.first_level import FirstLevelEstimator, scale_timeseries
from bids_app.graph import roi
from bids_app.graph.context import Context
from bids_app.graph.filters import ENTITY_ALIASES, match_frame, value_matches
from bids_app.graph.parallel import SerialBackend
from bids_app.graph.records import fingerprint, record_path, reuse, save
from bids_app.graph.space import RegionSpace, SurfaceSpace, VoxelSpace
from bids_app.graph.unit_files import contrast_sidecar, ref
from bids_app.graph.units import (CheckedRun, ContrastFit, RunChecks, RunInputs, Settings, StatMap, UnitData,
                                  UnitPlan, UnitResult)
from bids_app.io.bold import BoldScan, scan_bold
from bids_app.io.confounds import read_confounds
from bids_app.io.entities import ENTITY_KEYS, LONG_TO_SHORT
from bids_app.io.events import read_events
from bids_app.io.images import n_volumes, on_grid
from bids_app.io.index import FileIndex
from bids_app.io.maps import MAP_EXTENSIONS, map_files
from bids_app.io.recordings import read_used
from bids_app.io.regions import label_inputs
from bids_app.io.surface import check_series, is_surface_file, load_series, n_samples
from bids_app.spec.model import Node, StatsModel


log = logging.getLogger(__name__)

_RUN_KEYS = ("subject", "session", "task", "acquisition", "run")


def collect_runs(index: FileIndex, model: StatsModel, node: Node, settings: Settings,
                 backend=None) -> list[RunInputs]:
    """One :class:`RunInputs` per BOLD series selected by ``Input``, labels and space.

    Preprocessed BOLD (``desc-preproc``, or ``--desc-label``; surface series
    without ``desc-``, as fMRIPrep names them) from derivatives is preferred;
    raw BOLD is used only when no derivatives provide any, with a warning.
    Every selected image is read in full once (:func:`scan_input`, on
    ``backend``, a :mod:`bids_app.graph.parallel` backend; default serial),
    so a broken file or an unusable volume stops the run before anything is
    written.
    """
    bold = index.select(suffix="bold", extension=MAP_EXTENSIONS)
    # a GIFTI series is its pair of hemisphere files, named by the left one
    if "hemi" in bold:
        bold = bold[bold["hemi"].isna() | (bold["hemi"] == "L")]
    desc = settings.desc_label or "preproc"
    derived = ~bold["is_raw"].astype(bool)
    named = (bold["desc"] == desc) if "desc" in bold else pd.Series(False, index=bold.index)
    no_desc = bold["desc"].isna() if "desc" in bold else pd.Series(True, index=bold.index)
    # fMRIPrep names surface series without desc- (*_hemi-L_space-fsaverage5_bold.func.gii)
    surface = bold["path"].map(is_surface_file).astype(bool) & no_desc & (settings.desc_label is None)
    preproc = bold[derived & (named | surface)]
    if len(preproc):
        bold = preproc
    else:
        bold = bold[bold["is_raw"].astype(bool)]
        log.warning("no preprocessed BOLD (desc-%s) in the derivatives: fitting raw BOLD images", desc)
    # the model's Input selects first (it may name a space or resolution), then the command line
    bold = match_frame(bold, {k: v for k, v in model.input.items() if k not in ("extension", "suffix")})
    if settings.space:
        bold = bold[bold.get("space", pd.Series(None, index=bold.index)) == settings.space]
    elif len(preproc):
        spaces = sorted(set(bold["space"].dropna())) if "space" in bold else []
        if len(spaces) > 1:
            raise InputDataError(f"preprocessed BOLD exists in several spaces {spaces}: choose one with --space "
                                 "or the model's Input (\"space\": [...])")
    if settings.participant_label:
        bold = bold[bold["subject"].isin(settings.participant_label)]
    if bold.empty:
        raise NoInputsError(
            f"node {node.name!r}: no BOLD images match Input={dict(model.input)}"
            + (f", participants={settings.participant_label}" if settings.participant_label else "")
            + (f", space={settings.space}" if settings.space else "")
        )
    check_variants(bold)
    runs = [_run_inputs(index, node, row) for _, row in bold.sort_values("path").iterrows()]
    # each scan reads a whole series (seconds at 2 mm, mostly gzip): on the backend's workers, in
    # parallel; every scan has finished when this returns, before anything is written
    scans = (backend or SerialBackend()).map(scan_input, [run.bold for run in runs])
    for run, scan in zip(runs, scans):
        run.scan = scan
        if scan is not None:
            check_volumes(run)
    return runs


def scan_input(path: Path) -> BoldScan | None:
    """Read one selected series in full: a volume's :class:`~bids_app.io.bold.BoldScan`; a surface
    series is checked (:func:`~bids_app.io.surface.check_series`) and gives None.

    Raises
    ------
    InputDataError
        Naming the file, when it cannot be read in full.
    """
    if is_surface_file(path):
        check_series(path)
        return None
    return scan_bold(path)


#: entities that tell versions of one acquisition apart: fitting two of them fits one run twice
VARIANT_ENTITIES = ("space", "resolution", "density", "echo", "part", "reconstruction")
#: entities that are not part of a run's identity in output names (a GIFTI series' outputs get
#: their hemi- per file, from the data's Surface)
_NOT_OUTPUT = ("desc", "suffix", "extension", "path", "root", "is_raw", "stat", "hemi")


def output_entities(row) -> dict:
    """The entities a run's outputs are named by: every BIDS entity of its BOLD file but ``desc``."""
    return {k: row.get(k) for k in ENTITY_KEYS.values()
            if k not in _NOT_OUTPUT and row.get(k) is not None and not pd.isna(row.get(k))}


def check_variants(bold: pd.DataFrame) -> None:
    """Stop when one run (or one existing map) is present in several versions (spaces, resolutions,
    echoes...) that the model and options do not select between, or two files would write the same
    outputs (or enter a group as the same input).

    Raises
    ------
    InputDataError
        Naming the run, the files and how to select one.
    """
    seen: dict = {}
    for _, row in bold.sort_values("path").iterrows():
        ents = output_entities(row)
        identity = tuple(sorted((k, v) for k, v in ents.items() if k not in VARIANT_ENTITIES))
        seen.setdefault(identity, []).append((ents, Path(row["path"])))
    for identity, members in seen.items():
        if len(members) < 2:
            continue
        names = ", ".join(p.name for _, p in members)
        differ = sorted({k for ents, _ in members for k in VARIANT_ENTITIES
                         if len({str(e.get(k)) for e, _ in members}) > 1})
        label = " ".join(f"{LONG_TO_SHORT[k]}-{v}" for k, v in members[0][0].items() if k not in VARIANT_ENTITIES)
        if not differ:
            raise InputDataError(f"{label}: {names} would write the same outputs (their names differ only in "
                                 "desc or entities outside BIDS); select one with the model's Input or --desc-label")
        options = {k: sorted({str(e.get(k)) for e, _ in members}, key=str) for k in differ}
        example = ", ".join(f'"{k}": ["{v[0]}"]' for k, v in options.items())
        raise InputDataError(
            f"{label} is present in {len(members)} versions that differ in {', '.join(differ)} ({names}); "
            "fitting them all would count one run several times. Select one with the model's Input, "
            f"e.g. \"Input\": {{{example}}}" + (", or with --space" if "space" in differ else ""))


#: why a run's event columns are missing when it has no events file
NO_EVENTS = "this run has no events file (no *_events.tsv with its entities in BIDS_DIR)"


def run_label(run: RunInputs) -> str:
    """``sub-01 ses-2 task-x run-1``: the run as messages name it, with its file."""
    short = {"subject": "sub", "session": "ses", "task": "task", "acquisition": "acq", "run": "run"}
    return " ".join(f"{k}-{run.entities[e]}" for e, k in short.items() if run.entities.get(e))


def check_volumes(run: RunInputs) -> None:
    """Raise :class:`InputDataError` if a volume of the run's BOLD is unusable (all NaN, all zero...)."""
    bad = run.scan.bad_volumes
    if bad:
        listed = "; ".join(f"volume {t} (0-based): {why}" for t, why in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise InputDataError(
            f"{run.bold} ({run_label(run)}): {len(bad)} of {run.scan.shape[3]} volumes are unusable: {listed}. "
            "No model fits a volume without data: check the preprocessing, or remove the volume(s) from the "
            "BOLD, its events timing and confounds")


def binary_mask(img: nb.Nifti1Image) -> tuple[np.ndarray, str | None]:
    """A mask image as booleans, and the rule applied when it is not binary.

    A probabilistic mask (values between 0 and 1, e.g. a tissue probability
    map) keeps the voxels >= 0.5: the voxels more likely inside than outside.
    Any other non-binary image keeps its non-zero voxels.
    """
    data = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float64))
    values = np.unique(data)
    if np.isin(values, (0.0, 1.0)).all():
        return data > 0, None
    if values.min() >= 0 and values.max() <= 1:
        return data >= 0.5, "probabilistic mask (values in [0, 1]) thresholded at >= 0.5"
    return data != 0, "non-binary mask: every non-zero voxel is in the mask"


def exclude_bad_voxels(runs: list[RunInputs], masks: dict, policy: str) -> tuple[dict, list[RunChecks]]:
    """Drop each run's unusable voxels (NaN/inf in a volume, constant over time) from its mask.

    Returns
    -------
    dict
        ``masks`` (position in ``runs`` -> image, None for surface series)
        as binary masks of the usable voxels, on each BOLD's grid.
    list of RunChecks
        One per run: the mask rule applied, the voxels excluded (their count
        is a warning: it reaches provenance and the report) and provenance's
        exclusion record.

    Raises
    ------
    InputDataError
        ``policy == "fail"`` and a run has unusable voxels in its mask, or a
        run has no usable voxel at all.
    """
    usable_masks, checks = dict(masks), []
    for i, run in enumerate(runs):
        if run.scan is None:  # surface series: vertices are chosen from the data (io.surface.load_series)
            checks.append(RunChecks())
            continue
        scan = run.scan
        grid = nb.Nifti1Image(np.zeros(scan.shape[:3], dtype=np.uint8), scan.affine)
        mask, rule = binary_mask(on_grid(masks[i], grid))
        check = RunChecks(mask_rule=rule)
        if not mask.any():
            raise InputDataError(f"{run.bold} ({run_label(run)}): its mask {run.mask or '(computed)'} has no voxel on "
                                 "the BOLD's grid; are the mask and the BOLD in the same space?")
        nonfinite, constant = int((mask & scan.nonfinite).sum()), int((mask & scan.constant).sum())
        usable = mask & ~scan.nonfinite & ~scan.constant
        what = (f"{nonfinite + constant} of the {int(mask.sum())} mask voxels are unusable "
                f"({nonfinite} with NaN/inf values, {constant} constant over time, e.g. all zero)")
        if not usable.any():
            raise InputDataError(f"{run.bold} ({run_label(run)}): no usable voxel: {what}; check the preprocessing "
                                 "and that the mask and the BOLD are in the same space")
        if nonfinite or constant:
            if policy == "fail":
                raise InputDataError(f"{run.bold} ({run_label(run)}): {what}; --qc-policy fail stops here "
                                     "(use --qc-policy exclude to fit the other voxels, or fix the preprocessing)")
            check.warnings.append(f"{what}: excluded from the fit (their maps are n/a); --qc-policy fail stops instead")
            check.bold_qc = {"mask_voxels": int(mask.sum()), "excluded_nonfinite": nonfinite,
                             "excluded_constant": constant}
            check.exclusion = {"node": None, "file": str(run.bold), "run": run_label(run),
                               "reasons": [what], "voxels": nonfinite + constant}
        usable_masks[i] = nb.Nifti1Image(usable.astype(np.uint8), scan.affine)
        checks.append(check)
    return usable_masks, checks


#: entities a run's companion files (events, confounds, masks) may name; each must then equal the run's
_COMPANION_SCOPE = (*_RUN_KEYS, "ceagent", "direction", "reconstruction", "echo", "part", "resolution", "density")


def companion(frame: pd.DataFrame, row, space: bool = False, exempt=frozenset()) -> Path | None:
    """The file of ``frame`` that belongs to the run ``row``, most specific first.

    A file qualifies when each entity of :data:`_COMPANION_SCOPE` it names
    equals the run's (BIDS inheritance: ``sub-01_task-x_events.tsv`` serves
    every run of sub-01; an anatomical ``sub-01_space-X_desc-brain_mask``
    every run in space X; a template mask with no subject every subject).
    With ``space``, the file's space (or ``tpl-`` template) must equal the
    run's. Of the qualifying files, the one naming the most entities wins.
    Entities in ``exempt`` (those an ``Options.Mask`` filter names itself,
    e.g. ``{"ses": ["test"]}`` for one session's mask used by every
    session's runs) need not be the run's.
    """
    if "subject" in frame:  # cheap first cut: large datasets have thousands of candidates
        frame = frame[frame["subject"].isna() | (frame["subject"] == row.get("subject"))]
    ranked = []
    for hit in frame.to_dict("records"):  # plain dicts: a Series per row (iterrows) costs ~10x more
        named = [k for k in _COMPANION_SCOPE if hit.get(k) is not None]
        if not all(row.get(k) is not None and value_matches(hit[k], [row[k]]) for k in named if k not in exempt):
            continue
        if space and "space" not in exempt and (hit.get("space") or hit.get("tpl")) != row.get("space"):
            continue
        ranked.append((-len(named), str(hit["path"])))
    return Path(min(ranked)[1]) if ranked else None


def _run_inputs(index: FileIndex, node: Node, row: pd.Series) -> RunInputs:
    row = row.to_dict()  # read many times below: a dict's get is ~10x cheaper than a Series'
    ents = output_entities(row)
    same_run = {k: row.get(k) for k in _RUN_KEYS}
    events = companion(index.select(suffix="events", extension=".tsv"), row)
    confounds = companion(index.select(is_raw=False, desc="confounds", suffix=["timeseries", "regressors"],
                                       extension=".tsv"), row)
    mask_filter = node.model.options.get("Mask")
    if is_surface_file(row["path"]) and (mask_filter or aggregate_method(node.model.options)):
        raise DesignError(f"node {node.name!r}: Options.Mask and Options.Aggregate select voxels of volumes; "
                          f"{Path(row['path']).name} is surface data (its vertices are fitted as they are)")
    images = index.select(is_raw=False, extension=[".nii.gz", ".nii"])
    regions = _label_images(index, node, row) if aggregate_method(node.model.options) else ()
    if mask_filter and not regions:
        mask = companion(match_frame(images, {k: v if isinstance(v, list) else [v] for k, v in mask_filter.items()}),
                         row, space=True, exempt={ENTITY_ALIASES.get(k, k) for k in mask_filter})
        if mask is None:
            raise NoInputsError(f"Options.Mask {mask_filter} matched no file for {Path(row['path']).name} "
                                "(searched the derivatives for files in the run's space whose subject, session, "
                                "task, run... are the run's or absent)")
    else:
        mask = companion(images[(images.get("desc") == "brain") & (images.get("suffix") == "mask")]
                         if "desc" in images else images.iloc[0:0], row, space=True)
    meta = index.metadata(row["path"])
    tr = _seconds(meta, "RepetitionTime", row["path"], positive=True)
    if tr is None:
        raise InputDataError(f"{row['path']}: RepetitionTime missing from its JSON sidecar(s); add it "
                             "(seconds) to the BOLD's JSON sidecar")
    slice_ref = 0.0
    start = _seconds(meta, "StartTime", row["path"])
    if meta.get("SliceTimingCorrected") and start is not None:
        slice_ref = start / tr
    # any recording- label, raw or derivatives; the sidecar (with inheritance) says which columns each has
    recordings = tuple(RecordingFile(Path(p), index.metadata(p)) for p in sorted(
        index.select(suffix=["physio", "stim"], extension=".tsv.gz", **same_run)["path"]))
    return RunInputs(ents, Path(row["path"]), events, confounds, mask, tr, slice_ref, regions,
                     recordings)


def _seconds(meta: dict, key: str, path, positive: bool = False) -> float | None:
    """A time in seconds from sidecar metadata; None when absent, an error naming the file when malformed."""
    value = meta.get(key)
    if value is None:
        return None
    try:
        seconds = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        seconds = float("nan")
    if not np.isfinite(seconds) or (positive and seconds <= 0):
        raise InputDataError(f"{path}: {key} {value!r} in its JSON sidecar(s) is not a "
                             f"{'positive ' if positive else ''}number of seconds; write a JSON number "
                             f"without unit, e.g. \"{key}\": 2.0")
    return seconds


def _label_images(index: FileIndex, node: Node, row: dict) -> tuple[Path, ...]:
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


def prepare_design(run: RunInputs, node: Node, settings: Settings) -> tuple[RunDesign, list[str]]:
    """Build (cheaply, before any fitting) the design of one run; raises on bad inputs.

    Returns the design and warnings about the run's events (events after its end).
    """
    if is_surface_file(run.bold):
        if settings.smoothing_at("Run"):
            raise DesignError(f"{run.bold.name}: --smoothing applies to volumes; surface data are fitted unsmoothed "
                              "(smooth on the surface beforehand)")
        n_vols = n_samples(run.bold)
    else:
        n_vols = n_volumes(run.bold)
    events = read_events(run.events) if run.events else pd.DataFrame(columns=["onset", "duration"])
    confounds = read_confounds(run.confounds) if run.confounds else None
    source = str(run.events or run.bold)
    duration = n_vols * run.tr
    n_late, lost = events_after_end(events, duration) if len(events) else (0, [])
    if lost:
        raise InputDataError(
            f"{run.events} ({run_label(run)}): every event of {', '.join(map(repr, lost))} starts after the run "
            f"ends ({n_vols} volumes x {run.tr:g} s = {duration:g} s), so its regressor would be zero. Is this "
            "the events file of another run, or is the BOLD incomplete? Onsets are seconds from the first volume")
    try:
        design = build_run_design(node, events, tr=run.tr, n_vols=n_vols, confounds=confounds,
                                slice_time_ref=run.slice_time_ref, source=source,
                                missing_confounds=settings.missing_confounds,
                                recordings=read_used(run.recordings, functools.partial(uses_recording, node)))
    except (DesignError, InputDataError) as exc:
        # a column that "is not in this run" is most often an events file that is not there
        cause = f"; {NO_EVENTS}" if run.events is None else ""
        # some design errors (transformations, HRF, X) name the column but not the run
        named = (run.bold, run.events, run.confounds, *(r.path for r in run.recordings))
        prefix = "" if any(p.name in str(exc) for p in named if p) else f"{source}: "
        if not (prefix or cause):
            raise
        raise type(exc)(f"{prefix}{exc}{cause}") from exc
    notes = [f"{n_late} event(s) start after the run ends ({duration:g} s): they do not enter the design"
             ] if n_late else []
    absent = [d["entry"] for d in design.info.dropped if d["kind"] == "event"]
    if run.events is None and absent:
        notes.append(f"{NO_EVENTS}, so its event conditions ({', '.join(map(repr, absent))}) are absent from "
                     "its design")
    n_columns = design.matrix.shape[1]
    if n_vols <= n_columns:
        raise DesignError(
            f"{run.bold} ({run_label(run)}): {n_vols} volumes for {n_columns} design columns leave no degrees "
            "of freedom for the noise. Is the BOLD complete? Otherwise use fewer regressors (Model.X, "
            "confounds, HighPassFilterCutoffHz)")
    return design, notes


def note_missing_columns(runs: list[RunInputs], designs: list[RunDesign], policy: str = "drop") -> list[list[str]]:
    """Warnings, one list per run, about columns other runs of the task have.

    A ``Model.X`` pattern (``trans_*``, ``trial_type.*``) that matches fewer
    columns in one run than in the others is not an error for
    :func:`build_run_design`, which sees one run; across runs it is the same
    silent omission as a missing named column, so it follows the same
    ``--missing-confounds`` policy: a warning (``"drop"``) or a
    :class:`DesignError` (``"error"``). Columns already reported as dropped
    are not repeated.
    """
    by_task: dict = {}
    for i, (run, design) in enumerate(zip(runs, designs)):
        by_task.setdefault(run.entities.get("task"), []).append((i, design.info))
    notes: list[list[str]] = [[] for _ in runs]
    for group in by_task.values():
        union = list(dict.fromkeys(c for _, info in group for c in info.x_columns))
        for i, info in group:
            dropped = {d["entry"] for d in info.dropped}
            absent = [c for c in union if c not in info.x_columns and c not in dropped]
            if not absent:
                continue
            message = (f"{info.source}: column(s) {', '.join(map(repr, absent))} of other runs' "
                       "designs are absent from this run (a Model.X pattern matched fewer columns here)")
            if policy == "error":
                raise DesignError(message + "; use --missing-confounds drop to fit the run without them")
            notes[i].append(message)
    return notes


@dataclass
class RunPlan(UnitPlan):
    """A run unit as planned (:class:`~bids_app.graph.units.UnitPlan`), and what only runs have.

    Attributes
    ----------
    run : RunInputs
    fwhm : float or None
        Smoothing (mm) of the BOLD before the fit.
    low_pass : float or None
        Cutoff (Hz) of the low-pass filter the design had: the data are filtered alike.
    contrast_sidecar : dict
        Entries of every contrast's sidecar (sources, region aggregation).
    timeseries_sidecar : dict or None
        The region time series' sidecar (nodes aggregating to regions).
    """

    run: RunInputs = None
    fwhm: float | None = None
    low_pass: float | None = None
    contrast_sidecar: dict = field(default_factory=dict)
    timeseries_sidecar: dict | None = None


def plan_run(ctx: Context, node: Node, checked: CheckedRun) -> RunPlan | list[StatMap]:
    """One run's unit from what :func:`~bids_app.graph.executor.plan_inputs` checked: its space,
    estimator, contrasts, sidecars and fingerprint.

    Returns
    -------
    RunPlan, or list of StatMap
        The plan; or the unit's maps when its record says it is finished
        with these inputs and settings.
    """
    run, design, mask_img, regions = checked.run, checked.design, checked.mask, checked.regions
    rel = functools.partial(ref, ctx)
    inputs = [p for p in (run.bold, run.events, run.confounds, run.mask, *label_inputs(run.regions),
                          *(Path(r["path"]) for r in design.info.recordings)) if p]
    inputs = [f for p in inputs for f in (map_files(p) if p == run.bold else [p])]
    entities = dict(run.entities)
    record = record_path(ctx, node, entities)
    mask_hash = None if mask_img is None else hashlib.sha256(np.asarray(mask_img.dataobj).tobytes()).hexdigest()
    fp = fingerprint(ctx, node, inputs, {"design": design.matrix.to_json(), "mask": mask_hash})
    reused = reuse(ctx, record, fp)
    if reused is not None:
        return reused
    space = _run_space(run, mask_img, regions, aggregate_method(node.model.options), rel)
    noise = str(node.model.ours.get("NoiseModel", ctx.settings.noise_model)).lower()
    estimator = FirstLevelEstimator(noise_model=noise, random_state=ctx.settings.seed)
    columns = list(design.matrix.columns)
    contrasts, warnings = plan_contrasts(node, columns, design.info.x_columns or expand_x(node.model.x, columns),
                                         incoming=None)
    info = checked.checks.sidecar(design.info)
    fwhm = ctx.settings.smoothing_at("Run")
    sidecar = {"Node": node.name, "Level": node.level, "Sources": [rel(p) for p in inputs], **space.sidecar,
               "RepetitionTime": run.tr, "SliceTimeRef": run.slice_time_ref, "NoiseModel": noise,
               "NoiseModelDetails": estimator.describe(), "SmoothingFWHM": fwhm, **info}
    # contrast sidecars name the method and label images as the model's Options do
    aggregation, series_sidecar = {}, None
    if regions is not None:
        sidecar.update({"Aggregate": space.method, "Regions": roi.region_list(regions, rel)})
        aggregation = {"Aggregate": space.method, "Mask": [rel(p) for p in run.regions]}
        series_sidecar = {**roi.timeseries_sidecar(space.method, regions, run.tr, rel), **aggregation}
        warnings += [*regions.notes, *roi.empty_region_notes(regions)]
    return RunPlan(node, entities, record, fp, space, design.matrix, contrasts, estimator, f"first-level-{noise}",
                   sidecar, [*info["warnings"], *warnings], run=run, fwhm=fwhm,
                   low_pass=design.info.low_pass["cutoff_hz"] if design.info.low_pass else None,
                   contrast_sidecar={"Sources": [rel(run.bold)], **aggregation}, timeseries_sidecar=series_sidecar)


def _run_space(run: RunInputs, mask_img, regions, method: str | None, rel):
    """The units a run is fitted on: its usable voxels, its surface's vertices with a varying signal
    (read here, so a series without one stops the run while planning), or its regions."""
    if mask_img is None:
        _, mask, surface = load_series(run.bold, run.entities.get("space"))
        return SurfaceSpace(mask, {"Mask": f"vertices with a finite, non-constant signal: {int(mask.sum())} of "
                                           f"{mask.size} (medial wall and unsampled vertices excluded)",
                                   "Surface": surface.describe()}, surface=surface)
    source = rel(run.mask) if run.mask else "EPI mask computed over the subject's runs (nilearn)"
    brain = VoxelSpace(np.asarray(mask_img.dataobj).astype(bool), {"Mask": source}, affine=mask_img.affine)
    if regions is None:
        return brain
    return RegionSpace(regions.names, regions.fitted, brain.sidecar, brain=brain, regions=regions, method=method)


def load_run(plan: RunPlan) -> UnitData:
    """The run's data over the plan's units; region runs: every region's series (n_vols, n_regions),
    ``Y`` the fitted ones'."""
    Y = plan.space.load_run(plan.run, plan.fwhm)
    if isinstance(plan.space, RegionSpace):
        # each region series is one column of Y: the GLM is the voxels' one
        return UnitData(Y[:, plan.space.fitted], timeseries=Y)
    return UnitData(Y)


def fit_run(plan: RunPlan, data: UnitData) -> UnitResult:
    """Scale (percent signal change) and filter the data as the design was, fit the GLM, evaluate every contrast."""
    Y, _ = scale_timeseries(data.Y)
    if plan.low_pass:
        Y = low_pass_filter(Y, plan.run.tr, plan.low_pass)
    fit = plan.estimator.fit(Y, plan.design.to_numpy(dtype=np.float64))
    contrasts = [ContrastFit(c, fit.contrast(c.weights, c.test)) for c in plan.contrasts]
    details = {"NoiseModelDetails": {**plan.sidecar["NoiseModelDetails"], "NFilters": len(fit.group_covariance)}}
    return UnitResult(fit.model_maps() if plan.space.map_inference else {}, contrasts, details=details,
                      timeseries=data.timeseries)


def write_run(ctx: Context, plan: RunPlan, result: UnitResult) -> list[StatMap]:
    """Write the run's design, mask, maps (or region time series and tables), then its resume record."""
    node, entities, space = plan.node, plan.entities, plan.space
    folder = output_dir(ctx.out, node.name, entities)
    files = [write_tsv(folder / build_name(entities, "design", ".tsv"), plan.design)]
    files += space.write_mask(folder, entities)
    files.append(write_json(folder / build_name(entities, "design", ".json"),
                            camel_keys({**plan.sidecar, **result.details})))
    files += space.write_maps(folder, entities, result.model_maps)
    if result.timeseries is not None:
        files += write_region_timeseries(folder, entities, space.method, result.timeseries, space.names,
                                         plan.timeseries_sidecar)
    maps = []
    for fitted in result.contrasts:
        c, res = fitted.contrast, fitted.result
        ents = {**entities, "contrast": c.name}
        written, effect, variance = space.write_contrast(
            ctx.out, node.name, ents, res, contrast_sidecar(node, c, plan.estimator_name, plan.contrast_sidecar))
        files += written
        if c.flows:
            maps.append(StatMap(ents, effect, variance, float(res.dof), node.name))
    for w in plan.warnings:
        ctx.log.warn(f"{plan.run.bold.name}: {w}")
    summary = {"node": node.name, "entities": entities, "n_inputs": 1, "contrasts": [c.name for c in plan.contrasts],
               "warnings": plan.warnings, "design": ref(ctx, files[0]), "estimator": plan.estimator_name,
               space.count_key: space.n_units}
    save(ctx, plan.record, plan.fingerprint, maps, files, summary)
    return maps


def run_unit(ctx: Context, plan: RunPlan) -> list[StatMap]:
    """Load, fit and write one planned run."""
    return write_run(ctx, plan, fit_run(plan, load_run(plan)))
