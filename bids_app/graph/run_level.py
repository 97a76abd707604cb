"""Run level: find each run's inputs, build its design, fit, write maps."""
from __future__ import annotations

import gzip
import logging
import os
import struct
import warnings
import zlib
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from bids_app.design.confounds import read_confounds
from bids_app.design.events import read_events
from bids_app.design.first_level import RunDesign, build_run_design
from bids_app.design.recordings import RecordingFile
from bids_app.design.regions import aggregate_method
from bids_app.errors import DesignError, InputDataError, NoInputsError
from bids_app.graph.filters import ENTITY_ALIASES, match_frame, value_matches
from bids_app.graph.index import FileIndex
from bids_app.graph.units import RunInputs, Settings
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


def check_bold(path: Path) -> None:
    """Raise :class:`InputDataError` naming ``path`` if the BOLD image cannot be read in full.

    Done while planning, before anything is written: a header-only load
    misses a truncated file, which otherwise fails only when its run is
    fitted, after other runs' outputs exist. Reading every image twice would
    double the I/O, so a gzip file is decompressed here only when the size
    recorded in its trailer (ISIZE, the uncompressed size modulo 2**32)
    disagrees with the size the header implies; an uncompressed file is
    checked by its size on disk.
    """
    try:
        img = nb.load(path)
        expected = int(img.dataobj.offset) + int(np.prod(img.shape)) * img.get_data_dtype().itemsize
    except Exception as exc:  # nibabel raises several types for broken files
        raise InputDataError(f"cannot read BOLD image {path}: {exc}") from exc
    if len(img.shape) != 4:
        raise InputDataError(f"BOLD image {path} is not 4D (shape {img.shape})")
    if not str(path).endswith(".gz"):
        if os.path.getsize(path) < expected:
            raise InputDataError(f"cannot read BOLD image {path}: file is truncated "
                                 f"({os.path.getsize(path)} bytes, the header implies {expected})")
        return
    with open(path, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        isize = struct.unpack("<I", fh.read(4))[0]
    if isize == expected % 2**32:
        return
    # multi-member gzip files or trailing bytes also get here: decompress to be sure
    size = 0
    try:
        with gzip.open(path, "rb") as fh:
            while block := fh.read(1 << 24):
                size += len(block)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputDataError(f"cannot read BOLD image {path}: {exc}") from exc
    if size < expected:
        raise InputDataError(f"cannot read BOLD image {path}: file is truncated "
                             f"({size} bytes uncompressed, the header implies {expected})")


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
        images = _run_images(index, mask_filter, row)
        mask = images[0] if images else None
        if mask is None:
            raise NoInputsError(f"Options.Mask {mask_filter} matched no file for {Path(row['path']).name} "
                                "(searched the derivatives for files whose subject, session, task, acquisition, "
                                "run and space are the run's or absent, unless the filter names them)")
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


def _run_images(index: FileIndex, filt: dict, row: pd.Series) -> list[Path]:
    """Derivative images matching ``filt`` that belong to the run of ``row``, most specific first.

    A file qualifies when each of its subject, session, task, acquisition,
    run and space entities equals the run's or is absent, except the
    entities the filter itself names (``{"ses": ["test"]}`` picks the
    session-test mask for every session's runs). Of those, the most specific
    (naming the most of these entities) are kept, so a run-specific or
    same-space image wins over a general one.
    """
    hits = match_frame(index.select(is_raw=False, extension=[".nii.gz", ".nii"]),
                       {k: v if isinstance(v, list) else [v] for k, v in filt.items()})
    chosen = {ENTITY_ALIASES.get(k, k) for k in filt}
    scope = [k for k in (*_RUN_KEYS, "space") if k not in chosen]
    ranked = []
    for _, hit in hits.iterrows():
        named = [k for k in scope if hit.get(k) is not None and not (isinstance(hit[k], float) and pd.isna(hit[k]))]
        if all(row.get(k) is not None and value_matches(hit[k], [row[k]]) for k in named):
            ranked.append((len(named), Path(hit["path"])))
    if not ranked:
        return []
    best = max(n for n, _ in ranked)
    return sorted(path for n, path in ranked if n == best)


def _label_images(index: FileIndex, node: Node, row: pd.Series) -> tuple[Path, ...]:
    """The label images ``Options.Mask`` selects for one run of an aggregating node.

    Searched in the derivatives, like masks, but a label image usually
    covers more than one run (an anatomical ``dseg``, an atlas): see
    :func:`_run_images`.

    Raises
    ------
    NoInputsError
        No file qualifies.
    """
    filt = node.model.options["Mask"]
    images = _run_images(index, filt, row)
    if not images:
        raise NoInputsError(f"node {node.name!r}: Options.Mask {filt} matched no label image for "
                            f"{Path(row['path']).name} (searched the derivatives for files whose subject, "
                            "session, task, acquisition, run and space are the run's or absent)")
    return tuple(images)


def prepare_design(run: RunInputs, node: Node, settings: Settings) -> RunDesign:
    """Build (cheaply, before any fitting) the design of one run; raises on bad inputs."""
    try:
        n_vols = nb.load(run.bold).shape[3]
    except Exception as exc:  # nibabel raises several types for broken files
        raise InputDataError(f"cannot read BOLD image {run.bold}: {exc}") from exc
    events = read_events(run.events) if run.events else pd.DataFrame(columns=["onset", "duration"])
    confounds = read_confounds(run.confounds) if run.confounds else None
    source = str(run.events or run.bold)
    try:
        return build_run_design(node, events, tr=run.tr, n_vols=n_vols, confounds=confounds,
                                slice_time_ref=run.slice_time_ref, source=source,
                                missing_confounds=settings.missing_confounds,
                                recordings=run.recordings)
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


def run_masks(runs: list[RunInputs]) -> dict[int, nb.Nifti1Image]:
    """The analysis mask of each run (keyed by position in ``runs``).

    A mask file (fMRIPrep ``desc-brain_mask`` or ``Options.Mask``) is used as
    given. Without one, a single EPI mask is computed from all runs of the
    same subject and session (nilearn ``compute_multi_epi_mask``), so the
    runs that a fixed-effects node later combines cover the same voxels.
    """
    from nilearn.masking import compute_multi_epi_mask

    masks, pending = {}, {}
    for i, run in enumerate(runs):
        if run.mask:
            masks[i] = nb.load(run.mask)
        else:
            key = (run.entities.get("subject"), run.entities.get("session"))
            pending.setdefault(key, []).append(i)
    for key, idx in pending.items():
        bolds = [str(runs[i].bold) for i in idx]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mask = compute_multi_epi_mask(bolds)
                if not np.asarray(mask.dataobj).any():
                    # morphological opening erases coarse (e.g. 25 mm) brains entirely
                    log.warning("sub-%s: EPI mask empty after morphological opening; retrying without", key[0])
                    mask = compute_multi_epi_mask(bolds, opening=0)
        except Exception as exc:
            raise InputDataError(f"cannot compute an EPI mask for sub-{key[0]}: {exc}") from exc
        if not np.asarray(mask.dataobj).any():
            raise InputDataError(f"the EPI mask computed for sub-{key[0]} is empty: give a brain mask "
                                 "in the derivatives or with Options.Mask")
        for i in idx:
            masks[i] = mask
    return masks


def load_run_data(run: RunInputs, mask_img: nb.Nifti1Image, smoothing_fwhm: float | None):
    """BOLD inside the mask as (n_vols, n_voxels) float64, plus the mask on the BOLD grid."""
    from nilearn.image import smooth_img
    from nilearn.masking import apply_mask

    try:
        img = nb.load(run.bold)
        if smoothing_fwhm:
            img = smooth_img(img, smoothing_fwhm)
        mask_img = on_grid(mask_img, img)
        data = apply_mask(img, mask_img).astype(np.float64)
    except Exception as exc:
        raise InputDataError(f"cannot read BOLD image {run.bold}: {exc}") from exc
    return data, mask_img


def on_grid(img: nb.Nifti1Image, reference: nb.Nifti1Image) -> nb.Nifti1Image:
    """``img`` resampled nearest-neighbour onto ``reference``'s voxel grid, unless already on it.

    Nearest neighbour keeps mask and label values as they are.
    """
    from nilearn.image import resample_to_img

    if img.shape[:3] == reference.shape[:3] and np.allclose(img.affine, reference.affine, atol=1e-3):
        return img
    return resample_to_img(img, reference, interpolation="nearest")
