"""Plain data objects for a parsed BIDS Stats Model.

These are built from a dict that already passed
:func:`bids_app.spec.validate.validate_model`; they do not re-check it.
Every later stage (graph, design, estimation) consumes these objects instead
of the raw JSON.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any



def parse_weight(value) -> float:
    """Return a weight as float; strings such as ``"-1/3"`` or ``"0.5"`` are exact fractions.

    Raises
    ------
    ValueError
        A string that is not a number or fraction.
    ZeroDivisionError
        A fraction such as ``"1/0"``.
    TypeError
        Neither a number nor a string (booleans included).
    """
    if isinstance(value, bool):
        raise TypeError(f"a weight cannot be a boolean: {value!r}")
    if isinstance(value, str):
        return float(Fraction(value.strip()))
    if not isinstance(value, (int, float)):
        raise TypeError(f"a weight must be a number or a string, got {value!r}")
    return float(value)


def parse_weights(weights) -> np.ndarray:
    """Weights as a float64 array: shape (n_conditions,) or (n_rows, n_conditions)."""
    import numpy as np  # here, not at the top: `bids-stats validate` never builds arrays

    if weights and isinstance(weights[0], list):
        return np.array([[parse_weight(w) for w in row] for row in weights], dtype=np.float64)
    return np.array([parse_weight(w) for w in weights], dtype=np.float64)


@dataclass(frozen=True)
class Contrast:
    """One contrast of a node.

    Attributes
    ----------
    name : str
    conditions : tuple of str
        The ConditionList: design-matrix column names, as written. The
        intercept may appear as the integer ``1`` or an alias such as
        ``"intercept"`` (see :func:`bids_app.spec.validate.resolve_condition`).
    weights : ndarray, float64
        Shape (n_conditions,) for ``t``/``pass``, (n_rows, n_conditions) for
        ``F``; a flat F list in the JSON (allowed by the spec) is one row.
    test : {"t", "F", "pass"}
    """

    name: str
    conditions: tuple[str, ...]
    weights: np.ndarray = field(compare=False)
    test: str

    @property
    def flows(self) -> bool:
        """Whether the contrast is passed to child nodes (F tests are terminal)."""
        return self.test != "F"


@dataclass(frozen=True)
class HRF:
    """Model.HRF: which variables to convolve and with which kernel."""

    variables: tuple[str, ...]
    model: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """The ``Model`` block of a node.

    ``x`` holds ``1`` for the intercept and column names or glob patterns.
    ``software`` is ``Model.Software`` keyed by software name.
    """

    type: str
    x: tuple[Any, ...]
    formula: str | None = None
    hrf: HRF | None = None
    options: dict[str, Any] = field(default_factory=dict)
    software: dict[str, Any] = field(default_factory=dict)

    @property
    def ours(self) -> dict[str, Any]:
        """Settings addressed to us in ``Model.Software["bids-stats"]``."""
        return dict(self.software.get("bids-stats") or {})


@dataclass(frozen=True)
class Node:
    """One node of the model graph.

    Attributes
    ----------
    name, level : str
    group_by : tuple of str
    model : ModelSpec
    contrasts : tuple of Contrast
        ``Contrasts`` in file order.
    dummy_contrasts : tuple or None
        ``DummyContrasts`` in three states:

        * ``None``: no dummy contrasts (key absent, or its ``Contrasts`` is ``[]``);
        * ``()``: ``DummyContrasts`` without ``Contrasts``, which the spec
          defines as one dummy contrast per design column of ``X``
          (:attr:`dummy_all_columns`);
        * a non-empty tuple: one dummy contrast per listed condition.
    dummy_test : {"t", "F", "pass"}
    transformations : dict or None
        ``Transformations`` as written (``Transformer`` and ``Instructions``).
    """

    name: str
    level: str
    group_by: tuple[str, ...]
    model: ModelSpec
    contrasts: tuple[Contrast, ...] = ()
    dummy_contrasts: tuple[str, ...] | None = None
    dummy_test: str = "t"
    transformations: dict[str, Any] | None = None

    @property
    def has_dummy_contrasts(self) -> bool:
        return self.dummy_contrasts is not None

    @property
    def dummy_all_columns(self) -> bool:
        """Whether DummyContrasts covers every X column (no ``Contrasts`` list)."""
        return self.dummy_contrasts == ()


@dataclass(frozen=True)
class Edge:
    """A directed edge; ``filter`` maps an entity or metadata key to allowed values."""

    source: str
    destination: str
    filter: dict[str, tuple] = field(default_factory=dict)


@dataclass(frozen=True)
class StatsModel:
    """A whole BIDS Stats Model: nodes in file order plus explicit edges.

    When the JSON has no ``Edges``, nodes are chained in list order, as the
    specification says.
    """

    name: str
    description: str
    input: dict[str, tuple]
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    raw: dict = field(compare=False, repr=False)
    #: warnings found while reading the file (e.g. a key repeated with the same value)
    notes: tuple[str, ...] = field(default=(), compare=False)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def root(self) -> Node:
        targets = {e.destination for e in self.edges}
        roots = [n for n in self.nodes if n.name not in targets]
        return roots[0]

    def incoming(self, name: str) -> list[Edge]:
        return [e for e in self.edges if e.destination == name]

    def outgoing(self, name: str) -> list[Edge]:
        return [e for e in self.edges if e.source == name]

    def topological_order(self) -> list[Node]:
        """Nodes so that every parent precedes its children (stable by file order)."""
        done: list[str] = []
        pending = [n.name for n in self.nodes]
        while pending:
            for name in pending:
                if all(e.source in done for e in self.incoming(name)):
                    done.append(name)
                    pending.remove(name)
                    break
            else:  # pragma: no cover - validation rejects cycles
                raise ValueError("cycle in model graph")
        return [self.node(n) for n in done]


def strip_formula(formula: str) -> str:
    """A right-hand-side formula written with a leading ``~`` (``"~ 0 + a:b"``) without it."""
    text = formula.strip()
    return text[1:].strip() if text.startswith("~") else formula


def _as_tuple_filter(filt: dict | None) -> dict[str, tuple]:
    return {k: tuple(v) if isinstance(v, list) else (v,) for k, v in (filt or {}).items()}


def _parse_contrast(c: dict) -> Contrast:
    weights = parse_weights(c["Weights"])
    if c["Test"] == "F" and weights.ndim == 1:
        weights = weights[None, :]
    return Contrast(c["Name"], tuple(c["ConditionList"]), weights, c["Test"])


def _parse_node(d: dict) -> Node:
    m = d["Model"]
    hrf = m.get("HRF")
    model = ModelSpec(
        type=m["Type"],
        x=tuple(m["X"]),
        formula=strip_formula(m["Formula"]) if isinstance(m.get("Formula"), str) else None,
        hrf=HRF(tuple(hrf["Variables"]), hrf["Model"], dict(hrf.get("Parameters") or {}))
        if hrf else None,
        options=dict(m.get("Options") or {}),
        software=dict(m.get("Software") or {}),
    )
    contrasts = tuple(_parse_contrast(c) for c in d.get("Contrasts") or [])
    dummy = d.get("DummyContrasts")
    dummy_conditions = None
    dummy_test = "t"
    if dummy:
        dummy_test = dummy.get("Test", "t")
        listed = dummy.get("Contrasts")
        # Absent (or null) means every X column; an explicit [] means none.
        dummy_conditions = () if listed is None else (tuple(listed) or None)
    return Node(
        name=d["Name"],
        level=d["Level"],
        group_by=tuple(d["GroupBy"]),
        model=model,
        contrasts=contrasts,
        dummy_contrasts=dummy_conditions,
        dummy_test=dummy_test,
        transformations=d.get("Transformations"),
    )


def model_from_dict(d: dict) -> StatsModel:
    """Build a :class:`StatsModel` from a validated model dict.

    Filter values (``Input``, ``Edge.Filter``) become tuples; a scalar value
    is a one-element tuple. Without ``Edges`` the nodes are chained in list
    order.
    """
    nodes = tuple(_parse_node(n) for n in d["Nodes"])
    if d.get("Edges") is not None:
        edges = tuple(
            Edge(e["Source"], e["Destination"], _as_tuple_filter(e.get("Filter")))
            for e in d["Edges"]
        )
    else:
        edges = tuple(Edge(a.name, b.name) for a, b in zip(nodes, nodes[1:]))
    return StatsModel(
        name=d["Name"],
        description=d.get("Description", ""),
        input=_as_tuple_filter(d.get("Input")),
        nodes=nodes,
        edges=edges,
        raw=d,
    )


def ar_order(noise_model: str) -> int:
    """AR order of a noise model name: ``"ols"`` -> 0, ``"ar1"`` -> 1, ``"ar3"`` -> 3.

    Raises
    ------
    ValueError
        For any other name, with the accepted forms.
    """
    name = str(noise_model).strip().lower()
    if name == "ols":
        return 0
    if name.startswith("ar") and name[2:].isdigit() and int(name[2:]) >= 1:
        return int(name[2:])
    raise ValueError(f"noise model {noise_model!r} is not one of 'ols', 'ar1', 'ar2', ... ('ar' + order)")


def sanitize_label(label: str) -> str:
    """Make a BIDS label from a model name (model, node, contrast): alphanumerics only, camelCase joins.

    The one place where a name from the model becomes part of a path: output
    folders, file names and resume records all use it, so no name can reach
    outside OUTPUT_DIR (``"x/../../tmp"`` -> ``"xTmp"``). The model validator
    rejects names that sanitise to nothing or to another name's label.

    ``"face vs house"`` -> ``"faceVsHouse"``; ``"trial_type.face"`` -> ``"trialTypeFace"``.

    Raises
    ------
    ValueError
        No letter or digit in ``label``.
    """
    words = [w for w in re.split(r"[^0-9A-Za-z]+", str(label)) if w]
    if not words:
        raise ValueError(f"cannot make a BIDS label from {label!r}")
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])
