"""What both kinds of unit write the same way: paths in sidecars, contrast sidecars."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bids_app.derivatives.dataset import bids_uri
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
