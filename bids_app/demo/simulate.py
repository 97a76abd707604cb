"""Simulate a small BIDS dataset with fMRIPrep-style derivatives.

The dataset is a face/house localizer: every subject sees short blocks of
face and house pictures, and one sphere in the right fusiform gyrus responds
to faces more than to houses. It exists so that the whole pipeline (run ->
subject -> dataset) can be demonstrated and tested offline, against a known
ground truth.

Layout written under ``root``::

    dataset_description.json, README.md, participants.tsv/.json,
    task-localizer_bold.json, task-localizer_events.json
    sub-XX/func/sub-XX_task-localizer_run-R_bold.nii.gz, ..._events.tsv
    code/simulation_truth.json
    derivatives/fmriprep/dataset_description.json
    derivatives/fmriprep/sub-XX/func/sub-XX_task-localizer_run-R_
        space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz (+ .json)
        space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz (+ .json)
        desc-confounds_timeseries.tsv (+ .json)

Simplifications, stated so nobody mistakes them for fMRIPrep behaviour:

* the data are generated directly on a 4 mm MNI152NLin2009cAsym grid, so the
  "raw" BOLD holds the same voxels as the preprocessed one (native = MNI);
* voxels outside the brain mask are 0 and images are stored as int16 (as a
  scanner would): a run is about 5 MB, and the raw BOLD is a hard link to
  (else a copy of) the preprocessed file;
* the BOLD is sampled at the start of each volume (nilearn's
  ``slice_time_ref=0``), with no slice-timing offsets.

Signal model, for in-mask voxel ``v`` with baseline ``b_v`` and volume ``t``::

    y = b_v * (1 + (activation + drift + global + noise) / 100) - grad(b)_v . d_v(t)

``activation`` is, inside the sphere only, ``sum_c beta_c x_c(t)`` with
``x_c`` the condition's events convolved by nilearn's Glover HRF (a sustained
block has plateau 1) and ``beta_c`` in percent of baseline; ``drift`` is a
per-voxel mix of a linear and a half-cosine trend; ``global`` is one slow
AR(1) fluctuation shared by all voxels; ``noise`` is AR(1) in time and
Gaussian-smoothed in space; the last term is the intensity
change a rigid displacement ``d_v(t)`` (the simulated head motion) causes, to
first order, so that motion leaves realistic edge artefacts.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn import datasets, image
from nilearn.glm.first_level import compute_regressor
from scipy import signal, sparse

from bids_app import __version__
from bids_app.blas import one_blas_thread

TASK = "localizer"
SPACE = "MNI152NLin2009cAsym"
REPETITION_TIME = 2.0  # s
N_VOLUMES = 100
VOXEL_SIZE = 4.0  # mm
CONDITIONS = ("faces", "houses")

# Ground truth of the planted activation (right fusiform face area).
ACTIVATION_CENTER = (40.0, -52.0, -20.0)  # mm, MNI; a voxel centre of the grid
ACTIVATION_RADIUS = 10.0  # mm
# Group mean and between-subject SD of each condition's effect inside the
# sphere, in percent of baseline per unit of the convolved regressor.
EFFECT_MEAN = {"faces": 2.0, "houses": 0.5}
EFFECT_SD = {"faces": 0.4, "houses": 0.2}
TRUE_CONTRAST = ("facesVsHouses", {"faces": 1.0, "houses": -1.0})

NOISE_SD = 1.0  # percent of baseline
NOISE_AR1 = 0.3  # lag-one autocorrelation at TR = 2 s
NOISE_FWHM = 6.0  # mm, spatial smoothing kernel of the noise
TISSUE_BASELINE = {"wm": 600.0, "gm": 800.0, "csf": 1000.0}  # T2*-weighted contrast

# Block design: each block shows BLOCK_TRIALS pictures of one category.
BLOCKS_PER_CONDITION = 5
BLOCK_TRIALS = 5
TRIAL_DURATION = 1.5  # s, picture on screen
TRIAL_SOA = 2.0  # s
REST_RANGE = (6.0, 10.0)  # s, jittered fixation between blocks
FIRST_ONSET_RANGE = (4.0, 6.0)  # s
MEDIAN_RESPONSE_TIME = {"faces": 0.62, "houses": 0.68}  # s

N_COMPCOR = 5


@dataclass(frozen=True)
class _Grid:
    """The 4 mm MNI grid, cropped to the brain, and its tissue maps.

    Per-voxel arrays are over in-mask voxels only, in ``np.nonzero(mask)`` order.
    """

    affine: np.ndarray  # (4, 4), mm
    mask: np.ndarray  # (nx, ny, nz) bool
    baseline: np.ndarray  # (n_voxels,) scanner units
    wm: np.ndarray  # (n_voxels,) partial-volume fraction
    csf: np.ndarray  # (n_voxels,) partial-volume fraction
    coords: np.ndarray  # (n_voxels, 3) mm
    motion_gain: np.ndarray  # (6, n_voxels) intensity change per mm or rad of motion
    noise_kernel: sparse.csr_matrix  # (n_voxels, n_voxels), rows of unit norm


@functools.lru_cache(maxsize=1)  # deterministic, and the slowest step of a small dataset
def _mni_grid() -> _Grid:
    """Resample nilearn's packaged MNI152 maps to 4 mm (no download)."""
    brain_1mm = datasets.load_mni152_brain_mask()
    # Voxel centres on multiples of 4 mm, so ACTIVATION_CENTER is a voxel centre.
    affine = np.diag([VOXEL_SIZE] * 3 + [1.0])
    affine[:3, 3] = (-96.0, -132.0, -72.0)
    brain = image.resample_img(
        brain_1mm, target_affine=affine, target_shape=(49, 58, 48), interpolation="nearest"
    )
    brain = image.crop_img(brain, pad=True)  # keep a one-voxel margin

    def fraction(img):
        resampled = image.resample_img(
            img, target_affine=brain.affine, target_shape=brain.shape, interpolation="linear"
        )
        return np.clip(resampled.get_fdata(), 0.0, 1.0)

    mask = brain.get_fdata() > 0
    gm = fraction(datasets.load_mni152_gm_template()) * mask
    wm = np.minimum(fraction(datasets.load_mni152_wm_template()), 1.0 - gm) * mask
    csf = (1.0 - gm - wm) * mask
    baseline = (
        TISSUE_BASELINE["gm"] * gm + TISSUE_BASELINE["wm"] * wm + TISSUE_BASELINE["csf"] * csf
    )

    ijk = np.argwhere(mask)
    coords = nib.affines.apply_affine(brain.affine, ijk)
    # First-order effect of a rigid displacement d on intensity: -grad(b) . d,
    # with d = translation + rotation x r (small angles); grad . (w x r) = w . (r x grad).
    gradient = np.stack(np.gradient(baseline, VOXEL_SIZE), axis=-1)[mask]  # per mm
    lever = coords - coords.mean(axis=0)
    motion_gain = -np.concatenate([gradient, np.cross(lever, gradient)], axis=1).T
    return _Grid(
        affine=brain.affine,
        mask=mask,
        baseline=baseline[mask],
        wm=wm[mask],
        csf=csf[mask],
        coords=coords,
        motion_gain=motion_gain,
        noise_kernel=_smoothing_kernel(ijk, mask.shape),
    )


def _smoothing_kernel(ijk: np.ndarray, shape: tuple) -> sparse.csr_matrix:
    """Gaussian kernel (FWHM ``NOISE_FWHM``) over the 26-neighbourhood, within the mask.

    Rows are scaled to unit L2 norm so smoothed white noise keeps unit variance
    everywhere, including at the mask edge.
    """
    sigma = NOISE_FWHM / VOXEL_SIZE / np.sqrt(8 * np.log(2))  # voxels
    index = np.full(shape, -1)
    index[tuple(ijk.T)] = np.arange(len(ijk))
    rows, cols, weights = [], [], []
    for offset in np.ndindex(3, 3, 3):
        step = np.array(offset) - 1
        neighbour = ijk + step
        inside = np.all((neighbour >= 0) & (neighbour < shape), axis=1)
        target = np.full(len(ijk), -1)
        target[inside] = index[tuple(neighbour[inside].T)]
        keep = target >= 0
        rows.append(np.flatnonzero(keep))
        cols.append(target[keep])
        weights.append(np.full(keep.sum(), np.exp(-step @ step / (2 * sigma**2))))
    kernel = sparse.csr_matrix(
        (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(ijk), len(ijk)),
    )
    norms = np.sqrt(np.asarray(kernel.multiply(kernel).sum(axis=1)).ravel())
    return sparse.diags(1.0 / norms) @ kernel


def _events(rng: np.random.Generator) -> pd.DataFrame:
    """One run's events: jittered blocks of 1.5 s pictures, one row per picture."""
    order = rng.permutation(np.repeat(CONDITIONS, BLOCKS_PER_CONDITION))
    rests = rng.uniform(*REST_RANGE, size=len(order))
    start = rng.uniform(*FIRST_ONSET_RANGE)
    rows = []
    for condition, rest in zip(order, rests):
        for trial in range(BLOCK_TRIALS):
            rows.append((start + trial * TRIAL_SOA, condition))
        start += BLOCK_TRIALS * TRIAL_SOA + rest
    onsets, trial_types = zip(*rows)
    median_rt = np.array([MEDIAN_RESPONSE_TIME[c] for c in trial_types])
    return pd.DataFrame(
        {
            "onset": np.round(onsets, 3),
            "duration": TRIAL_DURATION,
            "trial_type": trial_types,
            "response_time": np.round(median_rt * rng.lognormal(0.0, 0.2, len(rows)), 3),
        }
    )


def _regressors(events: pd.DataFrame) -> np.ndarray:
    """Glover-convolved regressors, shape (N_VOLUMES, len(CONDITIONS))."""
    frame_times = np.arange(N_VOLUMES) * REPETITION_TIME
    columns = []
    for condition in CONDITIONS:
        rows = events[events["trial_type"] == condition]
        triplet = np.vstack([rows["onset"], rows["duration"], np.ones(len(rows))])
        columns.append(compute_regressor(triplet, "glover", frame_times)[0][:, 0])
    return np.column_stack(columns)


def _motion(rng: np.random.Generator, scale: float) -> pd.DataFrame:
    """Head motion in fMRIPrep's units: translations in mm, rotations in rad.

    A random walk with a few abrupt jerks; ``scale`` makes some subjects movers.
    """
    steps = rng.normal(0.0, 1.0, (N_VOLUMES, 6)) * scale * np.array([0.02] * 3 + [3e-4] * 3)
    for volume in rng.choice(np.arange(1, N_VOLUMES), size=rng.integers(0, 3), replace=False):
        steps[volume] += rng.normal(0.0, 1.0, 6) * np.array([0.3] * 3 + [4e-3] * 3)
    walk = np.cumsum(steps, axis=0)
    walk -= walk[0]  # fMRIPrep reports motion relative to a reference volume
    return pd.DataFrame(walk, columns=["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"])


def _ar1_noise(rng: np.random.Generator, grid: _Grid) -> np.ndarray:
    """Unit-variance noise, AR(1) in time and smooth in space; shape (N_VOLUMES, n_voxels)."""
    # The sparse product is fastest on (voxel, time); the AR recursion on (time, voxel).
    white = rng.standard_normal((grid.baseline.size, N_VOLUMES))
    innovations = np.ascontiguousarray((grid.noise_kernel @ white).T)
    noise = np.empty_like(innovations)
    noise[0] = innovations[0]  # stationary start: unit variance from the first volume
    for t in range(1, N_VOLUMES):
        noise[t] = NOISE_AR1 * noise[t - 1] + np.sqrt(1 - NOISE_AR1**2) * innovations[t]
    return noise


def _simulate_bold(
    rng: np.random.Generator,
    grid: _Grid,
    regressors: np.ndarray,
    motion: pd.DataFrame,
    effects: dict[str, float],
) -> np.ndarray:
    """BOLD of one run over in-mask voxels, shape (N_VOLUMES, n_voxels), scanner units."""
    sphere = np.linalg.norm(grid.coords - ACTIVATION_CENTER, axis=1) <= ACTIVATION_RADIUS
    activation = np.outer(regressors @ [effects[c] for c in CONDITIONS], sphere)
    time = np.linspace(-1.0, 1.0, N_VOLUMES)
    slow = np.column_stack([time, np.cos(np.pi * (time + 1))])  # scanner drift shapes
    drift = slow @ rng.normal(0.0, 0.5, (2, grid.baseline.size))
    # Shared physiological fluctuation: what global_signal picks up.
    global_signal = signal.lfilter([1.0], [1.0, -0.8], rng.normal(0.0, 0.15, N_VOLUMES))
    percent = activation + drift + global_signal[:, None] + NOISE_SD * _ar1_noise(rng, grid)
    return grid.baseline * (1 + percent / 100) + motion.to_numpy() @ grid.motion_gain


def _confounds(bold: np.ndarray, grid: _Grid, motion: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """fMRIPrep-style confounds table and sidecar for one run.

    ``bold`` has shape (N_VOLUMES, n_voxels).
    """
    wm = grid.wm > 0.8
    csf = grid.csf > 0.6
    # aCompCor as fMRIPrep does it: principal components of detrended (here
    # linearly, fMRIPrep uses a cosine basis), variance-normalised time series
    # in the combined WM+CSF mask.
    noise_roi = signal.detrend(bold[:, wm | csf], axis=0)
    noise_roi /= noise_roi.std(axis=0)
    # Left singular vectors from the small (time x time) Gram matrix: same
    # result as an SVD of the wide ROI matrix, at a fraction of the cost.
    eigenvalues, eigenvectors = np.linalg.eigh(noise_roi @ noise_roi.T)
    order = np.argsort(eigenvalues)[::-1]
    u = eigenvectors[:, order]
    s = np.sqrt(np.clip(eigenvalues[order], 0.0, None))
    explained = s**2 / np.sum(s**2)
    names = [f"a_comp_cor_{i:02d}" for i in range(N_COMPCOR)]
    rotations = motion[["rot_x", "rot_y", "rot_z"]].diff().abs().sum(axis=1)
    translations = motion[["trans_x", "trans_y", "trans_z"]].diff().abs().sum(axis=1)
    # Power et al. (2012): rotations as arc length on a 50 mm sphere; NaN first row.
    framewise = (translations + 50.0 * rotations).where(motion.index > 0)
    table = pd.concat(
        [
            pd.DataFrame(
                {
                    "global_signal": bold.mean(axis=1),
                    "csf": bold[:, csf].mean(axis=1),
                    "white_matter": bold[:, wm].mean(axis=1),
                    "framewise_displacement": framewise,
                }
            ),
            pd.DataFrame(u[:, :N_COMPCOR], columns=names),
            motion,
        ],
        axis=1,
    )
    sidecar = {
        name: {
            "CumulativeVarianceExplained": float(np.cumsum(explained)[i]),
            "Mask": "combined",
            "Method": "aCompCor",
            "Retained": True,
            "SingularValue": float(s[i]),
            "VarianceExplained": float(explained[i]),
        }
        for i, name in enumerate(names)
    }
    return table, sidecar


def _participants(rng: np.random.Generator, n_subjects: int) -> pd.DataFrame:
    """Covariates with no simulated effect; group and sex are balanced."""
    return pd.DataFrame(
        {
            "participant_id": [f"sub-{i + 1:02d}" for i in range(n_subjects)],
            "age": rng.integers(19, 46, n_subjects),
            "group": rng.permutation(np.resize(["control", "patient"], n_subjects)),
            "sex": rng.permutation(np.resize(["F", "M"], n_subjects)),
        }
    )


def _volume(values: np.ndarray, grid: _Grid) -> nib.Nifti1Image:
    """Put per-voxel rows (time, voxel) or a (voxel,) vector back on the grid as int16."""
    # Fortran order is NIfTI's on-disk order: nibabel then writes without a copy.
    data = np.zeros(grid.mask.shape + values.shape[:-1], dtype=np.int16, order="F")
    data[grid.mask] = np.rint(values.T)
    img = nib.Nifti1Image(data, grid.affine)
    img.header.set_xyzt_units("mm", "sec")
    if data.ndim == 4:
        img.header.set_zooms((VOXEL_SIZE,) * 3 + (REPETITION_TIME,))
    img.set_sform(grid.affine, code="mni")
    img.set_qform(grid.affine, code="mni")
    return img


def _link(source: Path, target: Path) -> None:
    """Make ``target`` the same bytes as ``source``: a hard link, else a copy."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:  # file systems without hard links
        shutil.copyfile(source, target)


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _write_tsv(path: Path, table: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, sep="\t", index=False, na_rep="n/a", float_format="%.8g")


def _write_dataset_metadata(root: Path, fmriprep: Path, participants: pd.DataFrame) -> None:
    _write_json(
        root / "dataset_description.json",
        {
            "Name": "bids-stats demo: simulated face/house localizer",
            "BIDSVersion": "1.9.0",
            "DatasetType": "raw",
            "License": "CC0",
            "Authors": ["bids-stats"],
            "GeneratedBy": [
                {
                    "Name": "bids-stats",
                    "Version": __version__,
                    "Description": "bids_app.demo.simulate_dataset: simulated data, no real subjects",
                }
            ],
        },
    )
    (root / "README.md").write_text(
        "# Simulated face/house localizer\n\n"
        "Written by `bids_app.demo.simulate_dataset`. Every value is simulated; the\n"
        "ground truth of the planted activation is in `code/simulation_truth.json`.\n"
        "The raw BOLD is already on the MNI152NLin2009cAsym 4 mm grid and equals the\n"
        "`derivatives/fmriprep` preprocessed BOLD.\n"
    )
    _write_tsv(root / "participants.tsv", participants)
    _write_json(
        root / "participants.json",
        {
            "age": {"Description": "age at scan", "Units": "year"},
            "group": {
                "Description": "study group (no simulated effect)",
                "Levels": {"control": "control", "patient": "patient"},
            },
            "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}},
        },
    )
    _write_json(
        root / f"task-{TASK}_bold.json",
        {
            "TaskName": TASK,
            "TaskDescription": "Blocks of face or house pictures; press a button per picture.",
            "RepetitionTime": REPETITION_TIME,
            "EchoTime": 0.03,
        },
    )
    _write_json(
        root / f"task-{TASK}_events.json",
        {
            "trial_type": {
                "Description": "picture category",
                "Levels": {"faces": "a face picture", "houses": "a house picture"},
            },
            "response_time": {
                "Description": "button-press latency (no simulated BOLD effect)",
                "Units": "s",
            },
        },
    )
    _write_json(
        fmriprep / "dataset_description.json",
        {
            "Name": "fMRIPrep - simulated",
            "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "GeneratedBy": [
                {
                    "Name": "fMRIPrep",
                    "Version": "simulated",
                    "Description": "written by bids_app.demo.simulate_dataset, not by fMRIPrep",
                }
            ],
        },
    )


def simulate_dataset(root: Path, n_subjects: int = 6, n_runs: int = 2, seed: int = 0) -> dict:
    """Write the simulated localizer dataset and its fMRIPrep-style derivatives.

    Parameters
    ----------
    root : Path
        Directory of the raw BIDS dataset (created; existing files are overwritten).
        Derivatives go to ``root/derivatives/fmriprep``.
    n_subjects : int
        Number of subjects, labelled ``01``, ``02``...
    n_runs : int
        Runs per subject, each ``N_VOLUMES`` volumes at ``REPETITION_TIME`` s.
    seed : int
        Seed of every random draw. The same seed writes byte-identical files;
        a subject's data do not depend on ``n_subjects``.

    Returns
    -------
    dict
        The ground truth, also written to ``root/code/simulation_truth.json``:
        ``contrast`` (its name in models/demo.json), ``effect_percent`` (its
        group mean), ``center_mm``, ``center_voxel``, ``radius_mm`` of the
        activated sphere, per-condition effects for the group and each subject
        (percent of baseline per unit of the Glover-convolved regressor), and
        the acquisition and noise settings.
    """
    root = Path(root)
    fmriprep = root / "derivatives" / "fmriprep"
    grid = _mni_grid()
    participants = _participants(np.random.default_rng([seed, 0]), n_subjects)
    _write_dataset_metadata(root, fmriprep, participants)

    # Every product here is small (100 volumes x 30k voxels): threaded BLAS only
    # adds synchronisation cost, which explodes on a busy machine (3x measured).
    with one_blas_thread():
        subject_effects = _simulate_subjects(root, fmriprep, grid, participants, n_runs, seed)
    truth = _truth(grid, seed, subject_effects)
    _write_json(root / "code" / "simulation_truth.json", truth)
    return truth


def _simulate_subjects(
    root: Path, fmriprep: Path, grid: _Grid, participants: pd.DataFrame, n_runs: int, seed: int
) -> dict[str, dict[str, float]]:
    """Write every subject's runs; return each subject's true effects (percent)."""
    subject_effects = {}
    for s, subject in enumerate(participants["participant_id"], start=1):
        # Seeds keyed by (seed, subject, run): a subject's data do not depend on n_subjects.
        subject_rng = np.random.default_rng([seed, 1, s])
        effects = {c: float(subject_rng.normal(EFFECT_MEAN[c], EFFECT_SD[c])) for c in CONDITIONS}
        subject_effects[subject] = effects
        mover = subject_rng.lognormal(0.0, 0.5)
        for run in range(1, n_runs + 1):
            rng = np.random.default_rng([seed, 2, s, run])
            events = _events(rng)
            motion = _motion(rng, mover)
            bold = _simulate_bold(rng, grid, _regressors(events), motion, effects)
            _write_run(
                root / subject / "func",
                fmriprep / subject / "func",
                f"{subject}_task-{TASK}_run-{run}",
                grid,
                events,
                bold,
                _confounds(bold, grid, motion),
            )
    return subject_effects


def _write_run(
    raw_func: Path,
    deriv_func: Path,
    stem: str,
    grid: _Grid,
    events: pd.DataFrame,
    bold: np.ndarray,
    confounds: tuple[pd.DataFrame, dict],
) -> None:
    """Write one run's raw files and fMRIPrep-style derivatives."""
    raw_func.mkdir(parents=True, exist_ok=True)
    deriv_func.mkdir(parents=True, exist_ok=True)
    _write_tsv(raw_func / f"{stem}_events.tsv", events)
    preproc = f"{stem}_space-{SPACE}_desc-preproc_bold"
    nib.save(_volume(bold, grid), deriv_func / f"{preproc}.nii.gz")
    _link(deriv_func / f"{preproc}.nii.gz", raw_func / f"{stem}_bold.nii.gz")
    _write_json(
        deriv_func / f"{preproc}.json",
        {"RepetitionTime": REPETITION_TIME, "TaskName": TASK, "SkullStripped": True},
    )
    mask = f"{stem}_space-{SPACE}_desc-brain_mask"
    nib.save(_volume(np.ones(grid.baseline.size), grid), deriv_func / f"{mask}.nii.gz")
    _write_json(deriv_func / f"{mask}.json", {"Type": "Brain"})
    table, sidecar = confounds
    _write_tsv(deriv_func / f"{stem}_desc-confounds_timeseries.tsv", table)
    _write_json(deriv_func / f"{stem}_desc-confounds_timeseries.json", sidecar)


def _truth(grid: _Grid, seed: int, subject_effects: dict) -> dict:
    name, weights = TRUE_CONTRAST
    voxel = nib.affines.apply_affine(np.linalg.inv(grid.affine), ACTIVATION_CENTER)
    return {
        "contrast": name,
        "contrast_weights": weights,
        "effect_percent": sum(w * EFFECT_MEAN[c] for c, w in weights.items()),
        "center_mm": list(ACTIVATION_CENTER),
        "center_voxel": [int(v) for v in np.rint(voxel)],
        "radius_mm": ACTIVATION_RADIUS,
        "region": "right fusiform gyrus (face-selective)",
        "effect_units": "percent of voxel baseline per unit of the Glover-convolved regressor "
        "(nilearn compute_regressor: a sustained block has plateau 1)",
        "condition_effects_percent": dict(EFFECT_MEAN),
        "between_subject_sd_percent": dict(EFFECT_SD),
        "subject_effects_percent": subject_effects,
        "seed": seed,
        "task": TASK,
        "space": SPACE,
        "repetition_time_s": REPETITION_TIME,
        "n_volumes": N_VOLUMES,
        "voxel_size_mm": VOXEL_SIZE,
        "hrf": "glover",
        "noise": {"sd_percent": NOISE_SD, "ar1": NOISE_AR1, "fwhm_mm": NOISE_FWHM},
    }
