"""Region (ROI) models, ``Model.Options.Aggregate`` "mean" or "pca": label
images as regions of each run, the checks made while planning, and the
region tables that higher levels combine. The maths is in
:mod:`bids_app.design.regions`.

Regions (README, "How models are executed"):

* one label image: every distinct non-zero integer value is one region.
  Names come from its sibling ``_dseg.tsv`` (same name ending ``.tsv``,
  columns ``index`` and ``name``) when there is one; else a binary image is
  named by its ``label-`` (or ``desc-``) entity; else ``region-<value>``.
* several label images (see :func:`bids_app.graph.runs._label_images`
  for which files qualify): each must be binary and is one region named by
  its ``label-`` entity, else its ``desc-`` entity; regions may overlap.
* a region's voxels are its label voxels inside the run's brain mask
  (fMRIPrep ``desc-brain_mask``, or the EPI mask computed over the
  subject's runs); label images are resampled nearest-neighbour to the BOLD
  grid. A region without such voxels is kept with ``n/a`` results and a
  warning; a run with no region in its brain mask is an error.

Higher levels align the incoming ``_roistats.tsv`` tables on region names
and fit the regions valid (finite effect, positive variance) in every input,
as the group mask keeps the voxels valid in every input.
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nb
import numpy as np

from bids_app.design.regions import METHOD_NOTES, Regions, aggregate_method
from bids_app.errors import DesignError, InputDataError
from bids_app.graph.inference_step import inference_settings
from bids_app.io.images import load_image, on_grid
from bids_app.io.regions import load_regions
from bids_app.graph.units import RunInputs, Settings
from bids_app.spec.model import Node, StatsModel



# ---------------------------------------------------------------- run level

def plan_regions(runs: list[RunInputs], masks: dict[int, nb.Nifti1Image]) -> list[Regions | None]:
    """Every run's regions, built while planning so a bad label image stops the
    run before anything is written; the fits then use them as they are.

    Returns
    -------
    list
        One :class:`Regions` per run of an aggregating node, None for voxelwise runs.

    Raises
    ------
    InputDataError
        As :func:`load_regions`, or no region has a voxel in a run's brain mask.
    """
    planned = []
    for i, run in enumerate(runs):
        if not run.regions:
            planned.append(None)
            continue
        regions = load_regions(run.regions, on_grid(masks[i], load_image(run.bold)))
        if not regions.fitted.any():
            raise InputDataError(f"no region of {', '.join(map(str, run.regions))} has a voxel inside the brain "
                                 f"mask of {run.bold.name}: are the label image and the BOLD in the same space?")
        planned.append(regions)
    return planned


def empty_region_notes(regions: Regions) -> list[str]:
    return [f"region {name!r} of {Path(source).name} has no voxel in the brain mask: its results are n/a"
            for name, source, fitted in zip(regions.names, regions.sources, regions.fitted) if not fitted]


def region_list(regions: Regions, ref) -> list[dict]:
    """Each region's name, label value, in-brain voxel count and image (``ref`` names files), for sidecars."""
    return [{"Name": n, "Value": v, "Voxels": int(k), "Source": ref(s)}
            for n, v, k, s in zip(regions.names, regions.values, regions.n_voxels, regions.sources)]


def timeseries_sidecar(method: str, regions: Regions, tr: float, ref) -> dict:
    """What the region time series are: method, sampling (Hz), units, regions."""
    return {"Method": METHOD_NOTES[method], "SamplingFrequency": 1.0 / tr,
            "Units": "BOLD in scanner units, before percent signal change scaling",
            "Regions": region_list(regions, ref)}


# ---------------------------------------------------------------- higher levels

def check_region_nodes(model: StatsModel, nodes: list[Node], settings: Settings) -> None:
    """Stop before anything is written when a node above an aggregating Run node
    asks for something that works on voxel maps only.

    Raises
    ------
    DesignError
        ``--smoothing`` at its level, ``Options.Mask`` or permutation inference.
    """
    root = model.root
    if root.level != "Run" or not aggregate_method(root.model.options):
        return
    for node in nodes:
        if node.name == root.name:
            continue
        inference = inference_settings(node, settings.inference)
        asks = [what for what, asked in (
            (f"--smoothing at level {node.level}", settings.smoothing_at(node.level)),
            ("Options.Mask", node.model.options.get("Mask")),
            ("permutation inference (NPerm)", inference and inference["NPerm"])) if asked]
        if asks:
            raise DesignError(f"node {node.name!r} receives region (ROI) tables of node {root.name!r}, but "
                              f"{' and '.join(asks)} work(s) on voxel maps only: remove it for this model")


def fitted_regions(names: tuple[str, ...], fitted: np.ndarray) -> tuple[dict, list[str]]:
    """The design sidecar's ``Regions`` entry of a higher-level unit, and a warning
    naming the regions not fitted (``fitted``: (n_regions,) bool)."""
    left_out = [name for name, ok in zip(names, fitted) if not ok]
    info = {"Regions": {"Rule": "regions with a finite effect and a positive variance in every input",
                        "Fitted": int(np.count_nonzero(fitted)), "NotFitted": left_out}}
    notes = [f"region(s) {left_out} are not valid in every input (n/a or a non-positive variance in "
             "some table): their results are n/a"] if left_out else []
    return info, notes
