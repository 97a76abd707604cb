"""Read regions: label images (with their ``_dseg.tsv`` names) of a run, and
the ``_roistats.tsv`` region tables that higher levels combine.

The rules (which voxels make a region, how regions are named) are described
in :mod:`bids_app.graph.roi`; the maths is in :mod:`bids_app.design.regions`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

from bids_app.design.regions import Regions, label_values
from bids_app.errors import InputDataError
from bids_app.io.entities import parse_entities
from bids_app.io.images import on_grid


def names_table(image: Path) -> Path:
    """The ``_dseg.tsv`` naming the values of a label image (it may not exist)."""
    return image.with_name(image.name.split(".")[0] + ".tsv")


def label_inputs(images: tuple[Path, ...]) -> list[Path]:
    """Label images and their existing names tables: the files a region fit depends on."""
    return [*images, *(t for t in map(names_table, images) if t.exists())]


def load_regions(images: tuple[Path, ...], mask_img: nb.Nifti1Image) -> Regions:
    """The regions of one run.

    Parameters
    ----------
    images : tuple of Path
        The run's label images (:attr:`RunInputs.regions`).
    mask_img : nibabel image
        The run's brain mask on the BOLD grid; its non-zero voxels, in C
        order, are the columns of the run's masked data.

    Raises
    ------
    InputDataError
        An image is unreadable, not 3-D or not integer-valued; several images
        and one is not binary or has no label-/desc- entity; a names table is
        malformed; two regions share a name.
    """
    inside = np.asarray(mask_img.dataobj).astype(bool)
    labelled = [_labels_in_mask(path, mask_img, inside) for path in images]
    if len(images) == 1:
        values, labels = labelled[0]
        names, notes = _value_names(images[0], values)
        voxels = tuple(np.flatnonzero(labels == v) for v in values)
        sources = (str(images[0]),) * len(values)
    else:
        for path, (values, _) in zip(images, labelled):
            if len(values) != 1:
                raise InputDataError(f"Options.Mask matched {len(images)} label images, so each must be a binary "
                                     f"mask (one region), but {path} has {len(values)} values; narrow the filter "
                                     "to one label image or to binary masks")
        names, notes = tuple(_entity_name(path) for path in images), ()
        values = tuple(int(v[0]) for v, _ in labelled)
        voxels = tuple(np.flatnonzero(labels != 0) for _, labels in labelled)
        sources = tuple(map(str, images))
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputDataError(f"region name(s) {repeated} given to several regions of "
                             f"{', '.join(map(str, images))}: region names must be unique")
    return Regions(tuple(names), voxels, sources, tuple(int(v) for v in values), tuple(notes))


def _labels_in_mask(path: Path, mask_img, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A label image's region values (over the whole image) and its labels at the in-mask voxels."""
    try:
        img = nb.load(path)
        data = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel raises several types for broken files
        raise InputDataError(f"cannot read label image {path}: {exc}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputDataError(f"label image {path} is {data.ndim}-D (shape {data.shape}); a label image is 3-D, "
                             "one integer per voxel")
    try:
        # values are read from the image itself, so a region lost by resampling is still reported
        values = label_values(data)
    except ValueError as exc:
        raise InputDataError(f"label image {path}: {exc}") from exc
    if not values.size:
        raise InputDataError(f"label image {path} has no non-zero voxel: it defines no region")
    grid = on_grid(nb.Nifti1Image(np.nan_to_num(data.astype(np.float64)), img.affine), mask_img)
    return values, np.asarray(grid.dataobj)[inside]


def _value_names(image: Path, values: np.ndarray) -> tuple[list[str], list[str]]:
    table_path = names_table(image)
    if not table_path.exists():
        entity = _entity_name(image, required=False) if len(values) == 1 else None
        return [entity] if entity else [f"region-{v}" for v in values], []
    try:
        table = pd.read_csv(table_path, sep="\t", dtype={"name": str}, keep_default_na=False)
        lookup = dict(zip(pd.to_numeric(table["index"]).astype(np.int64), table["name"]))
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as exc:
        raise InputDataError(f"cannot read region names from {table_path} (a BIDS dseg.tsv with columns "
                             f"'index' and 'name'): {exc}") from exc
    unnamed = [int(v) for v in values if v not in lookup]
    notes = [f"{table_path.name} names no region for value(s) {unnamed} of {image.name}: named "
             "region-<value>"] if unnamed else []
    return [lookup.get(int(v), f"region-{v}") for v in values], notes


def _entity_name(image: Path, required: bool = True) -> str | None:
    entities = parse_entities(image)
    name = entities.get("label") or entities.get("desc")
    if name is None and required:
        raise InputDataError(f"{image} has neither a label- nor a desc- entity to name its region; "
                             "with several label images each is named by one of them")
    return name


@dataclass(frozen=True)
class RegionTables:
    """Incoming region tables aligned on region names.

    Attributes
    ----------
    names : tuple of str, (n_regions,)
        Every region of any input, in first-seen order.
    effects, variances : ndarray, (n_inputs, n_regions)
        NaN where an input lacks the region or did not fit it.
    sidecars : list of dict
        Each table's JSON sidecar.
    """

    names: tuple[str, ...]
    effects: np.ndarray
    variances: np.ndarray
    sidecars: list[dict]

    def inherited(self) -> dict:
        """``Aggregate`` and ``Mask`` of the inputs, for the sidecars of what is fitted from them."""
        methods = sorted({s["Aggregate"] for s in self.sidecars if s.get("Aggregate")})
        return {"Aggregate": methods[0] if len(methods) == 1 else methods,
                "Mask": sorted({m for s in self.sidecars for m in s.get("Mask", [])})}


def read_tables(paths) -> RegionTables:
    """The ``region``, ``effect`` and ``variance`` columns of incoming ``_roistats.tsv`` tables (paths).

    Raises
    ------
    InputDataError
        A table is unreadable, lacks a column or repeats a region.
    """
    frames, sidecars = [], []
    for path in paths:
        try:
            frame = pd.read_csv(path, sep="\t", dtype={"region": str}, keep_default_na=False,
                                na_values=["n/a"]).set_index("region")
            frames.append(frame[["effect", "variance"]].astype(np.float64))
        except (OSError, ValueError, KeyError, pd.errors.ParserError) as exc:
            raise InputDataError(f"cannot read region table {path}: {exc}") from exc
        if not frame.index.is_unique:
            raise InputDataError(f"region table {path} lists a region more than once")
        sidecar = Path(path).with_name(Path(path).name.replace(".tsv", ".json"))
        sidecars.append(json.loads(sidecar.read_text()) if sidecar.exists() else {})
    names = tuple(dict.fromkeys(name for frame in frames for name in frame.index))
    aligned = [frame.reindex(list(names)) for frame in frames]
    return RegionTables(names, np.stack([f["effect"].to_numpy() for f in aligned]),
                        np.stack([f["variance"].to_numpy() for f in aligned]), sidecars)
