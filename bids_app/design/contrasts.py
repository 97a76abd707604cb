"""Which contrasts a node computes, their weight vectors and output names.

Naming rule (documented in README, "Contrast names"):

* Run level, and any group that receives several incoming contrasts: a
  contrast keeps the name written in the model; a DummyContrast is named
  after its column (``trial_type.face``).
* A group at Session/Subject/Dataset level that receives exactly one incoming
  contrast ``c`` (GroupBy contains ``contrast``): the intercept's
  DummyContrast is named ``c`` (the incoming effect carried upward) and every
  other contrast ``c_<name>`` (e.g. ``facesVsHouses_age``), so outputs of
  different incoming contrasts never collide. This is pybids' rule.

A condition names a design column (intercept aliases: ``1``,
``"intercept"``), or, when no column has its name:

* at a higher level, the group's single incoming contrast (or its level:
  ``faces`` for ``trial_type.faces``): that is the intercept (bidspm's
  ``"DummyContrasts": {"Contrasts": ["faces"]}`` on ``X: [1]`` with
  ``GroupBy: ["contrast"]``);
* a level of one categorical column: ``test`` names ``session.test``
  (several columns with that level: an error naming them).

A contrast whose conditions are absent from this group's design (a condition
without events in one run) is skipped for that group with a warning, never
silently zero-filled; the graph's planning (:mod:`bids_app.graph.plan`)
stops before any fit when a contrast is skipped in every unit of its node.

A ``pass`` contrast (the specification's "pass the estimate on, no test")
is evaluated as a t contrast: its effect and variance are what flows to the
child node; the t, z and p maps come with them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bids_app.design.names import condition_column
from bids_app.errors import DesignError
from bids_app.spec.model import Node
from bids_app.spec.validate import INTERCEPT_ALIASES as _INTERCEPT_ALIASES

INTERCEPT = "intercept"


@dataclass(frozen=True)
class PlannedContrast:
    """A contrast ready to evaluate on one design.

    ``test`` is what the estimator evaluates, ``"t"`` or ``"F"`` (a ``pass``
    contrast is planned as ``"t"``). ``weights`` spans all design columns:
    (n_columns,) for t, (n_rows, n_columns) for F.
    """

    name: str
    test: str
    conditions: tuple[str, ...]
    condition_weights: np.ndarray
    weights: np.ndarray
    #: the design column each condition resolved to
    columns: tuple[str, ...] = ()
    #: the name written in the model (``name`` may carry the incoming contrast)
    spec: str = ""

    @property
    def flows(self) -> bool:
        return self.test != "F"


def _column(cond: str, columns: list[str], incoming: str | None = None) -> str | None:
    if cond in columns:
        return cond
    if str(cond) in _INTERCEPT_ALIASES and INTERCEPT in columns:
        return INTERCEPT
    if incoming is not None and INTERCEPT in columns and cond in (incoming, incoming.split(".", 1)[-1]):
        return INTERCEPT
    if not isinstance(cond, str):
        return None
    column, candidates = condition_column(cond, columns)
    if len(candidates) > 1:
        raise DesignError(f"condition {cond!r} is a level of several design columns "
                          f"({', '.join(candidates)}): write the one you mean")
    return column


def plan_contrasts(node: Node, columns: list[str], x_columns: list[str],
                   incoming: str | None) -> tuple[list[PlannedContrast], list[str]]:
    """Contrasts for one design.

    Parameters
    ----------
    node : Node
    columns : list of str
        All design-matrix columns (including confounds, drifts).
    x_columns : list of str
        The columns X expanded to (DummyContrasts without a list use these).
    incoming : str or None
        The single incoming contrast name of this group, if there is one.

    Returns
    -------
    contrasts : list of PlannedContrast
    warnings : list of str
    """
    specs = []
    if node.has_dummy_contrasts:
        dummy_conds = node.dummy_contrasts or tuple(x_columns)
        for cond in dummy_conds:
            specs.append((cond, (cond,), np.array([1.0]), node.dummy_test, True))
    for c in node.contrasts:
        specs.append((c.name, c.conditions, c.weights, c.test, False))

    planned, warnings = [], []
    for name, conds, cweights, test, is_dummy in specs:
        spec = name
        cols = [_column(c, columns, incoming) for c in conds]
        missing = [c for c, col in zip(conds, cols) if col is None]
        if missing:
            warnings.append(f"contrast {name!r} skipped: condition(s) {missing} not in the design")
            continue
        cw = np.atleast_2d(cweights) if test == "F" else np.asarray(cweights, float)
        full = np.zeros((cw.shape[0], len(columns))) if test == "F" else np.zeros(len(columns))
        for j, col in enumerate(cols):
            full[..., columns.index(col)] += cw[..., j]
        if incoming is not None:
            is_intercept = is_dummy and cols == [INTERCEPT]
            name = incoming if is_intercept else f"{incoming}_{name}"
        planned.append(PlannedContrast(name, "t" if test == "pass" else test, tuple(conds), cw, full,
                                       tuple(cols), spec))
    return planned, warnings
