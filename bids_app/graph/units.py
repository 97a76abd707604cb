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
