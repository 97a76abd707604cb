"""Find what a run wrote, unit by unit: design files and each contrast's maps.

The run record (``provenance.json``'s ``Units``) says which units ran and
which contrasts each evaluated; file names follow
:mod:`bids_app.derivatives.naming`. The inference files beside a contrast
(thresholded ``stat-z_desc-<method>`` maps, ``desc-<method>_clusters.tsv``
tables, ``stat-logp_desc-<correction>`` permutation maps) are found by their
entities, whatever order those are written in. Region (ROI) models write one
``_roistats.tsv`` table per contrast instead of maps.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from bids_app.derivatives.naming import build_name, output_dir

from bids_app.io.entities import parse_entities
from bids_app.derivatives.roistats import ROI_SUFFIX
from bids_app.spec.model import Node, StatsModel

# entities that tell apart files of one contrast (not the contrast itself)
_FILE_KEYS = {"stat", "desc", "suffix", "extension"}


@dataclass(frozen=True)
class DerivedMap:
    """A map computed from a contrast's z map (thresholded, or permutation -log10 p) and its sidecar."""

    path: Path
    sidecar: dict


@dataclass(frozen=True)
class ContrastFiles:
    """One evaluated contrast of one unit.

    Attributes
    ----------
    name : str
        Contrast name as in the record (the file label is made BIDS-safe).
    entities : dict
        Output entities, ``contrast`` included.
    z : Path
        The unthresholded z map.
    sidecar : dict
        The z map's JSON sidecar (test, degrees of freedom, weights...).
    thresholded : tuple of DerivedMap
        ``stat-z_desc-<method>`` thresholded z maps.
    fwe : tuple of DerivedMap
        ``stat-logp_desc-<correction>`` family-wise corrected -log10 p maps.
    clusters : tuple of Path
        Cluster tables (``_clusters.tsv``) of the contrast.
    """

    name: str
    entities: dict
    z: Path
    sidecar: dict
    thresholded: tuple[DerivedMap, ...] = ()
    fwe: tuple[DerivedMap, ...] = ()
    clusters: tuple[Path, ...] = ()

    @property
    def in_mni(self) -> bool:
        return "MNI" in str(self.entities.get("space", "")).upper()


@dataclass(frozen=True)
class RegionTableFiles:
    """One evaluated contrast of a region (ROI) model: its ``_roistats.tsv`` and the table's sidecar."""

    name: str
    path: Path
    sidecar: dict


@dataclass(frozen=True)
class UnitOutputs:
    """One fitted unit: its record, design matrix (TSV and JSON sidecar), mask and contrasts
    (maps, or region tables for region models)."""

    record: dict
    design_tsv: Path
    design_json: dict
    mask: Path
    contrasts: list[ContrastFiles] = field(default_factory=list)
    region_tables: list[RegionTableFiles] = field(default_factory=list)

    @property
    def label(self) -> str:
        """Entities that identify the unit, e.g. ``subject-01 run-2``."""
        return " ".join(f"{k}-{v}" for k, v in self.record["Entities"].items()) or "all inputs"


@dataclass(frozen=True)
class NodeOutputs:
    node: Node
    units: list[UnitOutputs]
    exclusions: list[dict]


def collect(out_dir: Path, model: StatsModel, record: dict) -> list[NodeOutputs]:
    """Outputs of every node that ran, in the model's topological order."""
    out_dir = Path(out_dir)
    nodes = []
    listings: dict[Path, list] = {}   # runs of a subject share a folder: list and parse it once
    for node in model.topological_order():
        units = [_unit(out_dir, node, u, listings) for u in record["Units"] if u["Node"] == node.name]
        if units:
            nodes.append(NodeOutputs(node, units, [e for e in record["Exclusions"] if e["Node"] == node.name]))
    return nodes


def read_software(out_dir: Path) -> dict:
    """Software versions from ``provenance.json`` beside the report (empty when absent)."""
    path = Path(out_dir) / "provenance.json"
    return json.loads(path.read_text()).get("Software", {}) if path.exists() else {}


def _unit(out_dir: Path, node: Node, unit: dict, listings: dict) -> UnitOutputs:
    design = Path(unit["Design"])
    design = design if design.is_absolute() else out_dir / design
    folder = output_dir(out_dir, node.name, unit["Entities"])
    if folder not in listings:
        listings[folder] = [(p, parse_entities(p)) for p in sorted(folder.iterdir())] if folder.exists() else []
    neighbours = listings[folder]
    contrasts, tables = [], []
    for name in unit["Contrasts"]:
        entities = {**unit["Entities"], "contrast": name}
        table = folder / build_name(entities, ROI_SUFFIX, ".tsv")
        if table.exists():
            tables.append(RegionTableFiles(name, table, _sidecar(table)))
            continue
        # a volume, a GIFTI pair (named by its left file) or a CIFTI map
        z = next((p for p in (folder / build_name({**entities, "stat": "z"}, "statmap", ".nii.gz"),
                              folder / build_name({**entities, "stat": "z", "hemi": "L"}, "statmap", ".func.gii"),
                              folder / build_name({**entities, "stat": "z"}, "statmap", ".dscalar.nii"))
                  if p.exists()), None)
        if z is None:
            continue
        key = _identity(parse_entities(z))
        mine = [(p, e) for p, e in neighbours if e.get("desc") and _identity(e) == key]
        clusters = tuple(p for p, e in mine if e.get("suffix") == "clusters" and e["extension"] == ".tsv")
        contrasts.append(ContrastFiles(name, entities, z, _sidecar(z), _derived(mine, "z"), _derived(mine, "logp"),
                                       clusters))
    return UnitOutputs(unit, design, _sidecar(design), folder / build_name(unit["Entities"], "mask", ".nii.gz"),
                       contrasts, tables)


def _derived(files: list[tuple[Path, dict]], stat: str) -> tuple[DerivedMap, ...]:
    return tuple(DerivedMap(p, _sidecar(p)) for p, e in files
                 if e.get("stat") == stat and e.get("suffix") == "statmap" and e.get("hemi") in (None, "L")
                 and e["extension"] in (".nii.gz", ".nii", ".func.gii", ".dscalar.nii"))


def _sidecar(image: Path) -> dict:
    """The JSON beside a ``.nii.gz``/``.tsv`` file (empty when there is none)."""
    path = image.with_name(image.name.split(".")[0] + ".json")
    return json.loads(path.read_text()) if path.exists() else {}


def _identity(entities: dict) -> dict:
    return {k: v for k, v in entities.items() if k not in _FILE_KEYS}
