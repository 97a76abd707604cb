"""What both kinds of unit write the same way: paths in sidecars, contrast sidecars, one contrast's files."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bids_app.derivatives.dataset import bids_uri
from bids_app.derivatives.roistats import write_roi_contrast
from bids_app.derivatives.statmaps import write_contrast
from bids_app.graph.context import Context
from bids_app.spec.model import Node


def ref(ctx: Context, path: Path) -> str:
    """A file as sidecars name it: relative to the output folder when inside it
    (so outputs move together), else a BIDS URI (:func:`~bids_app.derivatives.dataset.bids_uri`)."""
    return bids_uri(path, ctx.links, ctx.out)


def contrast_sidecar(node: Node, contrast, estimator: str, extra: dict) -> dict:
    # DesignColumns says which column each condition named when it was not a column's own name
    resolved = any(str(c) != col and not (str(c) in ("1", "intercept", "Intercept") and col == "intercept")
                   for c, col in zip(contrast.conditions, contrast.columns))
    return {
        "Node": node.name, "Level": node.level, "Contrast": contrast.name,
        "ConditionList": list(contrast.conditions), "Weights": np.asarray(contrast.condition_weights).tolist(),
        **({"DesignColumns": list(contrast.columns)} if resolved and contrast.columns else {}),
        "Estimator": estimator, **extra,
    }


def write_result(ctx: Context, node: Node, entities: dict, result, sidecar: dict, grid, fitted,
                 regions) -> tuple[list[Path], Path, Path]:
    """Write one evaluated contrast: maps over the ``fitted`` units of a grid (affine
    or surface, :mod:`bids_app.io.maps`), or,
    when ``regions`` names the columns of the fit, a region table.

    Returns the files written and the effect and variance files that flow on
    (one table holds both for regions).
    """
    if regions is not None:
        written = write_roi_contrast(ctx.out, node.name, entities, result, regions, fitted, sidecar)
        return written, written[0], written[0]
    paths, files = write_contrast(ctx.out, node.name, entities, result, fitted, grid, sidecar)
    return files, paths["effect"], paths["variance"]
