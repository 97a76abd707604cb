"""Data objects passed between graph stages."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bids_app.derivatives.roistats import ROI_SUFFIX
from bids_app.design.recordings import RecordingFile
from bids_app.io.bold import BoldScan


@dataclass
class Settings:
    """Run-wide options (from the CLI; the model's ``Software`` block can override some)."""

    participant_label: list[str] | None = None
    space: str | None = None
    desc_label: str | None = None
    analysis_level: str = "dataset"
    work_dir: Path | None = None
    n_procs: int = 1
    dask_scheduler: str | None = None
    seed: int = 0
    estimator: str = "ols"
    noise_model: str = "ar1"
    smoothing_fwhm: float | None = None
    smoothing_level: str = "Run"
    missing_confounds: str = "drop"
    qc_policy: str = "exclude"
    #: GIFTI meshes (one per hemisphere) of surface data, for clusters, TFCE and cluster tables
    surface_mesh: tuple = ()
    inference: dict = field(default_factory=dict)

    def smoothing_at(self, level: str) -> float | None:
        """FWHM (mm) to apply to the data entering a node of ``level``, if any."""
        return self.smoothing_fwhm if self.smoothing_fwhm and level == self.smoothing_level else None


@dataclass
class StatMap:
    """One effect map (with its variance) that flows into a node.

    ``entities`` carry the group's entities plus ``contrast``; ``metadata``
    holds participants.tsv columns joined on ``subject``. A region (ROI)
    result is one ``_roistats.tsv`` table holding both the effect and the
    variance columns: ``effect`` and ``variance`` are that same file.
    """

    entities: dict
    effect: Path
    variance: Path | None = None
    dof: float | None = None
    source_node: str | None = None

    @property
    def is_region_table(self) -> bool:
        return Path(self.effect).name.endswith(f"_{ROI_SUFFIX}.tsv")


@dataclass
class RunInputs:
    """Everything one run-level model needs."""

    entities: dict
    bold: Path
    events: Path | None
    confounds: Path | None
    mask: Path | None
    tr: float
    slice_time_ref: float = 0.0
    #: label images of ``Options.Mask`` when the node aggregates to regions (``mask`` is then the brain mask)
    regions: tuple[Path, ...] = ()
    #: the run's physio/stim recordings with their sidecar metadata, read only if the node uses them
    recordings: tuple[RecordingFile, ...] = ()
    #: what one full read of the BOLD found (unusable voxels and volumes), set while planning
    scan: BoldScan | None = None


@dataclass
class RunChecks:
    """What planning found about a run besides its design.

    Attributes
    ----------
    warnings : list of str
        Events after the run's end, columns other runs of the task have,
        unusable voxels excluded from the mask.
    mask_rule : str or None
        How a non-binary mask image was read.
    bold_qc : dict or None
        Voxels of the mask and those excluded (NaN/inf values, constant).
    exclusion : dict or None
        Provenance's record of the excluded voxels.
    """

    warnings: list = field(default_factory=list)
    mask_rule: str | None = None
    bold_qc: dict | None = None
    exclusion: dict | None = None

    def sidecar(self, design) -> dict:
        """``design`` (a :class:`~bids_app.design.first_level.DesignRecord`) as the run's
        design sidecar holds it: with these warnings and findings, without the
        copies of RepetitionTime and SliceTimeRef the sidecar states once."""
        info = {k: v for k, v in design.to_dict().items() if k not in ("tr", "slice_time_ref")}
        info["warnings"] += self.warnings
        if self.mask_rule:
            info["mask_rule"] = self.mask_rule
        if self.bold_qc:
            info["bold_qc"] = self.bold_qc
        return info


@dataclass
class CheckedRun:
    """A run of the root node as planning checked it (:func:`~bids_app.graph.executor.plan_inputs`).

    Attributes
    ----------
    run : RunInputs
    design : RunDesign
    mask : Nifti1Image or None
        The usable voxels on the BOLD's grid; None for surface series.
    regions : Regions or None
        The run's regions when the node aggregates.
    checks : RunChecks
    """

    run: RunInputs
    design: object
    mask: object
    regions: object
    checks: RunChecks


@dataclass
class UnitPlan:
    """One unit of work, read and checked: all its fit and its files need but the data.

    Plans of every unit of a node exist before the first of them writes.

    Attributes
    ----------
    node : Node
    entities : dict
        The entities of the unit's outputs.
    record : Path
        Its resume record (:mod:`bids_app.graph.records`), written last.
    fingerprint : str
        Inputs and settings the record must match for a rerun to reuse the unit.
    space : VoxelSpace, SurfaceSpace or RegionSpace
        The units the data has as columns (:mod:`bids_app.graph.space`).
    design : DataFrame, (n_rows, n_columns)
        One row per input map (groups) or volume (runs).
    contrasts : list of PlannedContrast
    estimator : Estimator
        Not fitted yet (:mod:`bids_app.estimation`).
    estimator_name : str
        As sidecars and provenance name it.
    sidecar : dict
        The design sidecar (snake_case keys), all but what only the fit knows.
    warnings : list of str
        What planning found (contrasts, regions, the run's design).
    """

    node: object
    entities: dict
    record: Path
    fingerprint: str
    space: object
    design: object
    contrasts: list
    estimator: object
    estimator_name: str
    sidecar: dict
    warnings: list


@dataclass
class UnitData:
    """What a unit's fit reads from files.

    Attributes
    ----------
    Y : ndarray, (n_rows, n_units)
        One row per input map (groups) or volume (runs), one column per unit of the plan's space.
    V : ndarray, (n_rows, n_units), or None
        Sampling variances of ``Y`` (groups whose inputs have variance maps).
    reference : dict
        What inference reads besides the maps (the MNI brain mask on the
        grid, atlases: :func:`~bids_app.graph.inference_step.inference_reference`).
    timeseries : ndarray, (n_vols, n_regions), or None
        Runs aggregating to regions: every region's series (``Y`` holds the fitted ones').
    """

    Y: object
    V: object = None
    reference: dict = field(default_factory=dict)
    timeseries: object = None


@dataclass
class ContrastFit:
    """One contrast evaluated, with its inference.

    Attributes
    ----------
    contrast : PlannedContrast
    result : ContrastResult
        Effect, variance, statistic, z, p over the space's units.
    notes : list of str
        Asked-for inference that does not apply (the sidecars' ``InferenceNotes``).
    thresholded : Thresholded or None
    permuted : Permuted or None
    """

    contrast: object
    result: object
    notes: list = field(default_factory=list)
    thresholded: object = None
    permuted: object = None


@dataclass
class UnitResult:
    """A fitted unit, ready to write.

    Attributes
    ----------
    model_maps : dict of str to ndarray, (n_units,)
        Model-wide maps (R², residual variance...), by ``stat-`` label.
    contrasts : list of ContrastFit
    warnings : list of str
    details : dict
        Design sidecar entries only the fit knows (the noise model's filters).
    timeseries : ndarray, (n_vols, n_regions), or None
        Region time series to write beside the fit (runs aggregating to regions).
    """

    model_maps: dict
    contrasts: list
    warnings: list = field(default_factory=list)
    details: dict = field(default_factory=dict)
    timeseries: object = None
