"""``bids-stats design``: one run's design matrix from files, without images.

Writes ``<output>.tsv`` (one row per volume, one column per regressor), a
JSON sidecar with the build record (:attr:`RunDesign.info`, including every
warning) and a PNG picture of the matrix, each replaced atomically so a
reader never sees a half-written file.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from matplotlib.figure import Figure
from nilearn.plotting import plot_design_matrix

from bids_app.design.confounds import read_confounds
from bids_app.design.events import read_events
from bids_app.design.first_level import RunDesign, build_run_design
from bids_app.design.recordings import RecordingFile
from bids_app.errors import DesignError
from bids_app.spec import load_model
from bids_app.spec.model import Node, StatsModel


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run_node(model: StatsModel, node_name: str | None = None) -> Node:
    """The named node, or the first Run-level node in file order.

    Raises
    ------
    bids_app.errors.DesignError
        No such node, the named node is not at Run level, or none is.
    """
    if node_name is not None:
        try:
            node = model.node(node_name)
        except KeyError:
            names = ", ".join(n.name for n in model.nodes)
            raise DesignError(f"no node named {node_name!r} (nodes: {names})") from None
        if node.level != "Run":
            raise DesignError(f"node {node_name!r} is at level {node.level}, not Run")
        return node
    for node in model.nodes:
        if node.level == "Run":
            return node
    raise DesignError(f"model {model.name!r} has no Run-level node")


def save_design_png(design: RunDesign, path: Path) -> None:
    """Picture of the matrix (nilearn's ``plot_design_matrix``), PNG, no pyplot state."""
    n_columns = design.matrix.shape[1]
    figure = Figure(figsize=(min(max(6.0, 0.3 * n_columns + 2.0), 30.0), 8.0))
    plot_design_matrix(design.matrix, axes=figure.add_subplot())
    figure.savefig(path, format="png", dpi=100, bbox_inches="tight")


def synthesize(
    events_tsv,
    model_path,
    tr: float,
    n_vols: int,
    output_tsv,
    confounds_tsv=None,
    node_name: str | None = None,
    png: bool = True,
    physio=(),
) -> Path:
    """Build and write the design matrix of one run.

    Parameters
    ----------
    events_tsv : path-like
        The run's ``*_events.tsv``.
    model_path : path-like
        A BIDS Stats Model JSON file.
    tr : float
        Repetition time in seconds.
    n_vols : int
        Number of volumes of the run.
    output_tsv : path-like
        Where to write the matrix; the JSON record and the PNG go beside it
        (same name, ``.json``/``.png``).
    confounds_tsv : path-like, optional
        fMRIPrep confounds table of the run.
    node_name : str, optional
        Run-level node to use; default: the first Run-level node.
    png : bool
        Also write the PNG picture.
    physio : sequence of path-like
        The run's ``*_physio.tsv.gz``/``*_stim.tsv.gz`` recordings, each
        with its JSON sidecar beside it (same name, ``.json``).

    Returns
    -------
    Path
        ``output_tsv``.
    """
    model = load_model(model_path)
    node = run_node(model, node_name)
    events = read_events(events_tsv)
    confounds = read_confounds(confounds_tsv) if confounds_tsv is not None else None
    design = build_run_design(node, events, tr=tr, n_vols=n_vols, confounds=confounds,
                              source=str(events_tsv),
                              recordings=tuple(RecordingFile.beside(p) for p in physio))
    output = Path(output_tsv)
    output.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(output, lambda p: design.matrix.to_csv(p, sep="\t", index=False))
    record = {"model": str(model_path), "node": node.name, **design.info}
    _write_atomic(output.with_suffix(".json"),
                  lambda p: p.write_text(json.dumps(record, indent=2) + "\n"))
    if png:
        _write_atomic(output.with_suffix(".png"), lambda p: save_design_png(design, p))
    return output
