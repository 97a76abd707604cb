"""``bids-stats design``: one run's design matrix from files, without images.

Writes ``<output>.tsv`` (one row per volume, one column per regressor), a
JSON sidecar with the build record (:meth:`DesignRecord.to_dict`, including every
warning) and a PNG picture of the matrix, each replaced atomically so a
reader never sees a half-written file.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

from matplotlib.figure import Figure
from nilearn.plotting import plot_design_matrix

from bids_app.derivatives.atomic import atomic_path, write_text, write_tsv
from bids_app.design.first_level import RunDesign, build_run_design, uses_recording
from bids_app.errors import DesignError
from bids_app.io.confounds import read_confounds
from bids_app.io.events import read_events
from bids_app.io.recordings import read_used, recording_file
from bids_app.spec import load_model
from bids_app.spec.model import Node, StatsModel


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
                              recordings=read_used(map(recording_file, physio),
                                                   functools.partial(uses_recording, node)))
    output = Path(output_tsv)
    write_tsv(output, design.matrix)
    record = {"model": str(model_path), "node": node.name, **design.info.to_dict()}
    write_text(output.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    if png:
        with atomic_path(output.with_suffix(".png")) as tmp:
            save_design_png(design, tmp)
    return output
