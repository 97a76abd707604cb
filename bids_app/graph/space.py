"""Unit spaces: what the columns of a unit's data matrix ``Y`` are, and how values go back to files.

A unit fits ``Y`` of shape (n_inputs or n_volumes, n_units); its space says
what a unit is:

* :class:`VoxelSpace`: voxels inside a mask of a volume grid (affine);
* :class:`SurfaceSpace`: the vertices (and CIFTI voxels) of a surface, with
  the mesh geometry when one is known;
* :class:`RegionSpace`: named regions (ROI tables).

Each space writes its mask and a vector of unit values back (a map file,
or a region table), and says which inference it supports: voxel and
vertex maps get thresholded maps, cluster tables and permutations; region
tables keep their uncorrected p column. Spaces are built while planning
(:mod:`bids_app.graph.groups`, :mod:`bids_app.graph.runs`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

import nibabel as nb

from bids_app.derivatives.naming import build_name
from bids_app.derivatives.roistats import write_roi_contrast
from bids_app.derivatives.statmaps import unmask, write_contrast
from bids_app.design.regions import region_timeseries
from bids_app.errors import InputDataError
from bids_app.io.images import load_run_data
from bids_app.io.maps import write_map
from bids_app.io.surface import load_series


@dataclass(frozen=True, eq=False)
class _MapSpace:
    """Units written as a map file over a grid (:mod:`bids_app.io.maps`): the base of voxels and vertices."""

    #: bool, the grid's shape ((x, y, z) or (n_vertices,)): the fitted units
    mask: np.ndarray
    #: entries of the design sidecar describing the units (``Mask``, ``Surface``)
    sidecar: dict = field(default_factory=dict)

    count_key: ClassVar[str] = "n_voxels"
    #: thresholded maps, cluster tables and permutations apply
    map_inference: ClassVar[bool] = True

    @property
    def grid(self):
        raise NotImplementedError

    @property
    def n_units(self) -> int:
        return int(self.mask.sum())

    @property
    def inherited(self) -> dict:
        """Entries the contrasts' sidecars take from the inputs' (none for maps)."""
        return {}

    def write_mask(self, folder: Path, entities: dict) -> list[Path]:
        """The fitted units as a 0/1 map."""
        return write_map(folder / build_name(entities, "mask", ".nii.gz"), self.mask.astype(np.float32), self.grid)

    def write_maps(self, folder: Path, entities: dict, maps: dict[str, np.ndarray]) -> list[Path]:
        """One ``stat-<key>_statmap`` per entry of ``maps`` (values of shape (n_units,))."""
        files = []
        for key, values in maps.items():
            files += write_map(folder / build_name({**entities, "stat": key}, "statmap", ".nii.gz"),
                               unmask(values, self.mask), self.grid)
        return files

    def write_contrast(self, out: Path, node_name: str, entities: dict, result,
                       sidecar: dict) -> tuple[list[Path], Path, Path]:
        """One contrast's maps under ``out``; returns the files written and the effect and variance
        files that flow on."""
        paths, files = write_contrast(out, node_name, entities, result, self.mask, self.grid, sidecar)
        return files, paths["effect"], paths["variance"]


@dataclass(frozen=True, eq=False)
class VoxelSpace(_MapSpace):
    """Voxels inside ``mask`` (x, y, z) of a volume with ``affine`` (4, 4), mm.

    ``in_mni``: the grid is in an MNI space, so cluster tables get atlas
    labels and thresholded maps an outside-the-brain check.
    """

    affine: np.ndarray = None
    in_mni: bool = False
    geometry: ClassVar[None] = None

    @property
    def grid(self) -> np.ndarray:
        return self.affine

    def load_run(self, run, fwhm: float | None = None) -> np.ndarray:
        """A run's BOLD (:class:`~bids_app.graph.units.RunInputs`), smoothed to ``fwhm`` mm first
        if given, over the fitted voxels: (n_vols, n_units)."""
        return load_run_data(run.bold, nb.Nifti1Image(self.mask.astype(np.uint8), self.affine), fwhm)[0]


@dataclass(frozen=True, eq=False)
class SurfaceSpace(_MapSpace):
    """Units (vertices, CIFTI voxels) of ``surface`` (:class:`~bids_app.io.surface.Surface`) inside
    ``mask`` (n_units,); ``geometry`` (:class:`~bids_app.graph.surfaces.SurfaceGeometry`) gives
    clusters and TFCE their mesh graph, and is None when no mesh is known."""

    surface: object = None
    geometry: object = None
    in_mni: ClassVar[bool] = False

    @property
    def grid(self):
        return self.surface

    def load_run(self, run, fwhm: float | None = None) -> np.ndarray:
        """A run's surface series over the fitted units: (n_samples, n_units). Surface data are
        not smoothed (planning refuses ``fwhm``)."""
        Y, mask, _ = load_series(run.bold, run.entities.get("space"))
        if not np.array_equal(mask, self.mask):
            raise InputDataError(f"{run.bold}: its vertices with a varying signal changed since the run was planned")
        return Y


@dataclass(frozen=True, eq=False)
class RegionSpace:
    """Named regions: the columns of region (ROI) tables.

    Attributes
    ----------
    names : tuple of str, (n_regions,)
    fitted : ndarray of bool, (n_regions,)
        Regions with data in every input; the others' results are n/a.
    sidecar : dict
        Entries of the design sidecar (``Regions``).
    inherited : dict
        Entries of the incoming tables' sidecars that the contrasts' tables keep.
    inference_notes : list of str
        What asked-for map inference (thresholds, clusters) does not give
        region tables, for the contrasts' sidecars.
    brain : VoxelSpace or None
        Run level: the brain mask whose voxels the regions aggregate.
    regions : Regions or None
        Run level: each region's voxels (columns of the brain's data),
        aggregated by ``method`` (:mod:`bids_app.design.regions`).
    method : str or None
    """

    names: tuple
    fitted: np.ndarray
    sidecar: dict = field(default_factory=dict)
    inherited: dict = field(default_factory=dict)
    inference_notes: list = field(default_factory=list)
    brain: VoxelSpace | None = None
    regions: object = None
    method: str | None = None

    count_key: ClassVar[str] = "n_regions"
    map_inference: ClassVar[bool] = False
    geometry: ClassVar[None] = None

    @property
    def mask(self) -> np.ndarray:
        return self.fitted

    @property
    def n_units(self) -> int:
        return int(self.fitted.sum())

    def load_run(self, run, fwhm: float | None = None) -> np.ndarray:
        """A run's region time series: (n_vols, n_regions), n/a for regions without voxels."""
        return region_timeseries(self.brain.load_run(run, fwhm), self.regions.voxels, self.method)

    def write_mask(self, folder: Path, entities: dict) -> list[Path]:
        """The brain mask the regions aggregate (run level); nothing for tables combined above."""
        return self.brain.write_mask(folder, entities) if self.brain is not None else []

    def write_maps(self, folder: Path, entities: dict, maps: dict) -> list[Path]:
        return []

    def write_contrast(self, out: Path, node_name: str, entities: dict, result,
                       sidecar: dict) -> tuple[list[Path], Path, Path]:
        """One contrast's region table under ``out``: it holds both the effect and the variance that flow on."""
        written = write_roi_contrast(out, node_name, entities, result, self.names, self.fitted, sidecar)
        return written, written[0], written[0]


def smooth(data: np.ndarray, affine: np.ndarray, fwhm: float) -> np.ndarray:
    """Gaussian smoothing (FWHM in mm) of maps (n, x, y, z); NaN (outside the inputs) becomes 0 first."""
    from nilearn.image import smooth_img

    img = nb.Nifti1Image(np.moveaxis(np.nan_to_num(data), 0, -1), affine)
    smoothed = np.moveaxis(np.asarray(smooth_img(img, fwhm).dataobj, dtype=np.float64), -1, 0)
    return np.where(np.isfinite(data), smoothed, np.nan)
