"""Run level: find each run's inputs, build its design, fit, write maps."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from bids_app.design.confounds import read_confounds
from bids_app.design.events import read_events
from bids_app.design.first_level import RunDesign, build_run_design
from bids_app.errors import InputDataError, NoInputsError
from bids_app.graph.index import FileIndex
from bids_app.graph.units import RunInputs, Settings
from bids_app.spec.model import Node, StatsModel

log = logging.getLogger(__name__)

_RUN_KEYS = ("subject", "session", "task", "acquisition", "run")


def _match(frame: pd.DataFrame, filters: dict) -> pd.DataFrame:
    for key, values in filters.items():
        col = frame[key] if key in frame else pd.Series(None, index=frame.index, dtype=object)
        frame = frame[col.isin([str(v) for v in values])]
    return frame


def collect_runs(index: FileIndex, model: StatsModel, node: Node, settings: Settings) -> list[RunInputs]:
    """One :class:`RunInputs` per BOLD series selected by ``Input``, labels and space.

    Preprocessed BOLD (``desc-preproc``, or ``--desc-label``) from derivatives
    is preferred; raw BOLD is used only when no derivatives provide any, with
    a warning.
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
    bold = _match(bold, {k: v for k, v in model.input.items() if k not in ("extension", "suffix")})
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
    if mask_filter:
        candidates = _match(index.select(is_raw=False, extension=[".nii.gz", ".nii"], **same_run, **space),
                            {k: v if isinstance(v, list) else [v] for k, v in mask_filter.items()})
        mask = _first(candidates)
        if mask is None:
            raise InputDataError(f"Options.Mask {mask_filter} matched no file for {Path(row['path']).name}")
    else:
        mask = _first(index.select(is_raw=False, desc="brain", suffix="mask",
                                   extension=[".nii.gz", ".nii"], **same_run, **space))
    meta = index.metadata(row["path"])
    tr = meta.get("RepetitionTime")
    if tr is None:
        raise InputDataError(f"{Path(row['path']).name}: RepetitionTime missing from its JSON sidecar")
    slice_ref = 0.0
    if meta.get("SliceTimingCorrected") and meta.get("StartTime") is not None:
        slice_ref = float(meta["StartTime"]) / float(tr)
    return RunInputs(ents, Path(row["path"]), events, confounds, mask, float(tr), slice_ref)


def prepare_design(run: RunInputs, node: Node, settings: Settings) -> RunDesign:
    """Build (cheaply, before any fitting) the design of one run; raises on bad inputs."""
    try:
        n_vols = nb.load(run.bold).shape[3]
    except Exception as exc:  # nibabel raises several types for broken files
        raise InputDataError(f"cannot read BOLD image {run.bold}: {exc}") from exc
    events = read_events(run.events) if run.events else pd.DataFrame(columns=["onset", "duration"])
    confounds = read_confounds(run.confounds) if run.confounds else None
    return build_run_design(node, events, tr=run.tr, n_vols=n_vols, confounds=confounds,
                            slice_time_ref=run.slice_time_ref, source=str(run.events or run.bold),
                            missing_confounds=settings.missing_confounds)


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
    from nilearn.image import resample_to_img, smooth_img
    from nilearn.masking import apply_mask

    try:
        img = nb.load(run.bold)
        if smoothing_fwhm:
            img = smooth_img(img, smoothing_fwhm)
        if mask_img.shape[:3] != img.shape[:3] or not np.allclose(mask_img.affine, img.affine, atol=1e-3):
            mask_img = resample_to_img(mask_img, img, interpolation="nearest")
        data = apply_mask(img, mask_img).astype(np.float64)
    except Exception as exc:
        raise InputDataError(f"cannot read BOLD image {run.bold}: {exc}") from exc
    return data, mask_img
