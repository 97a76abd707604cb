"""Variables as users name them: ``<column>.<value>`` and bare values.

Models written for bidspm or copied from the model zoo name conditions
``trial_type.listening`` without a ``Factor`` transformation, and the
specification's own example names bare trial types (``congruent``). Both
are resolved here, after the node's Transformations, for every name the
node uses (``X``, ``HRF.Variables``, contrast conditions) that no variable
carries:

* ``<column>.<value>`` (``<column>.*`` patterns too), where ``<column>`` is
  a categorical variable: the column is split into one indicator per level,
  named ``<column>.<level>``, exactly as pybids' ``Factor`` would (at Run
  level by pybids' ``Factor`` itself; the column stays available under its
  own name). Integer-valued levels are written as users write them
  (``response.1``, not ``response.1.0``).
* a bare name equal to a value of exactly one categorical column: that
  level's indicator, named as written. A value of several columns is an
  error naming the candidates.

Every resolution is recorded (``name``, ``column``, ``how``) for the design
sidecar.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bids_app.design.columns import is_glob
from bids_app.errors import DesignError
from bids_app.spec.model import Node

if TYPE_CHECKING:  # pybids (~1 s to import) only for run-level designs, which import it anyway
    from bids.variables import BIDSRunVariableCollection, SparseRunVariable


def level_label(value) -> str:
    """A value as users write it in a name: ``1.0`` -> ``"1"``, ``"face"`` -> ``"face"``."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def node_names(node: Node) -> list[str]:
    """Every variable name a node uses: X, HRF.Variables and contrast conditions (no intercept)."""
    names = [e for e in node.model.x if isinstance(e, str)]
    if node.model.hrf is not None:
        names += list(node.model.hrf.variables)
    for contrast in node.contrasts:
        names += [c for c in contrast.conditions if isinstance(c, str)]
    names += [c for c in node.dummy_contrasts or () if isinstance(c, str)]
    return [n for n in dict.fromkeys(names) if n not in ("1", "intercept", "Intercept")]


def _present(name: str, columns: Iterable[str]) -> bool:
    columns = list(columns)
    if is_glob(name):
        return any(fnmatch.fnmatchcase(c, name) for c in columns)
    return name in columns


def _column_of(name: str, categorical: Iterable[str]) -> str | None:
    """The longest categorical column ``c`` with ``name`` starting ``c.``."""
    hits = [c for c in categorical if name.startswith(f"{c}.") and len(name) > len(c) + 1]
    return max(hits, key=len) if hits else None


def _ambiguous(name: str, candidates: list[str], where: str) -> DesignError:
    shown = ", ".join(f"{c}.{name}" for c in candidates)
    return DesignError(f"{where}: {name!r} is a value of several columns ({', '.join(candidates)}); "
                       f"write the one you mean: {shown}")


# --- Run level: pybids variables --------------------------------------------------------

def _run_levels(var: SparseRunVariable) -> list[str]:
    return sorted({level_label(v) for v in pd.Series(var.values).dropna()})


def _categorical_run(collection: BIDSRunVariableCollection) -> dict[str, SparseRunVariable]:
    """Event variables that can be split into levels (not the amplitude-only numeric ones)."""
    from bids.variables import SparseRunVariable

    out = {}
    for name, var in collection.variables.items():
        if isinstance(var, SparseRunVariable):
            values = pd.Series(var.values).dropna()
            if len(values):
                out[name] = var
    return out


def _factor_run(collection: BIDSRunVariableCollection, column: str) -> list[str]:
    """Add ``column.<level>`` indicators made by pybids' Factor; keep ``column``."""
    from bids.modeling import transformations as pbt
    from bids.variables import BIDSRunVariableCollection

    work = BIDSRunVariableCollection([collection.variables[column].clone()])
    pbt.Factor(work, column)
    made = []
    for name, var in work.variables.items():
        level = name[len(column) + 1:]
        try:
            level = level_label(float(level)) if not level.isdigit() else level
        except ValueError:
            pass
        out = f"{column}.{level}"
        if out not in collection.variables:
            var.name = out
            collection[out] = var
            made.append(out)
    return made


def resolve_run_names(collection: BIDSRunVariableCollection | None, names: Iterable[str],
                      where: str = "") -> list[dict]:
    """Make the variables ``names`` refer to, when no Transformation made them (in place).

    Parameters
    ----------
    collection : BIDSRunVariableCollection or None
        The run's variables after the node's Transformations.
    names : iterable of str
        X entries, HRF variables and conditions (:func:`node_names`).
    where : str
        Prefix of error messages (the run's file).

    Returns
    -------
    list of dict
        One record per resolved name: ``name``, ``column``, ``how``.

    Raises
    ------
    bids_app.errors.DesignError
        A bare name that is a value of several event columns.
    """
    if collection is None:
        return []
    records = []
    factored: dict[str, list[str]] = {}
    for name in names:
        column = _column_of(name, factored)
        if column is not None and _present(name, factored[column]):
            records.append({"name": name, "column": column,
                            "how": f"Factor({column}): one indicator per level of {column!r} "
                                   f"({', '.join(factored[column])})"})
            continue
        if _present(name, collection.variables):
            continue
        categorical = _categorical_run(collection)
        column = _column_of(name, categorical)
        if column is not None:
            factored[column] = _factor_run(collection, column)
            records.append({"name": name, "column": column,
                            "how": f"Factor({column}): one indicator per level of {column!r} "
                                   f"({', '.join(factored[column]) or 'no level'})"})
            continue
        if is_glob(name):
            continue
        candidates = [c for c, var in categorical.items() if name in _run_levels(var)]
        if len(candidates) > 1:
            raise _ambiguous(name, candidates, where or "events")
        if candidates:
            column = candidates[0]
            if f"{column}.{name}" not in collection.variables:
                _factor_run(collection, column)
            var = collection.variables[f"{column}.{name}"].clone()
            var.name = name
            collection[name] = var
            records.append({"name": name, "column": column,
                            "how": f"the {column!r} value {name!r}: its indicator, as "
                                   f"Factor({column}) makes {column}.{name}"})
    return records


# --- group level: a table of maps ----------------------------------------------------------

def _categorical_table(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns
            if not pd.api.types.is_numeric_dtype(table[c]) or table[c].dtype == bool]


def factor_table(table: pd.DataFrame, column: str) -> tuple[pd.DataFrame, list[str]]:
    """``table`` plus one float indicator per level of ``column`` (``column.<level>``), as Factor."""
    values = table[column]
    levels = sorted({level_label(v) for v in values.dropna()})
    labels = values.map(lambda v: None if pd.isna(v) else level_label(v))
    made = {f"{column}.{lev}": (labels == lev).astype(float).where(values.notna())
            for lev in levels if f"{column}.{lev}" not in table.columns}
    return table.assign(**made), list(made)


def resolve_table_names(table: pd.DataFrame, x, conditions: Iterable[str],
                        where: str = "") -> tuple[pd.DataFrame, list[dict]]:
    """Group-level counterpart of :func:`resolve_run_names` on a table of maps.

    ``x`` entries naming a categorical column (``group``) are split into
    its levels as well, so that ``group.patient`` conditions name design
    columns; bare names are resolved only for ``x`` entries (a bare
    condition names a design column, see :func:`condition_column`).

    Returns
    -------
    table : DataFrame
    records : list of dict
    """
    records = []
    x_names = [e for e in x if isinstance(e, str)]
    for name in dict.fromkeys([*x_names, *conditions]):
        if _present(name, table.columns):
            continue
        column = _column_of(name, _categorical_table(table))
        if column is not None:
            table, made = factor_table(table, column)
            records.append({"name": name, "column": column,
                            "how": f"Factor({column}): one indicator per level of {column!r} "
                                   f"({', '.join(made) or 'levels already present'})"})
            continue
        if is_glob(name) or name not in x_names or name == "contrast":
            continue
        candidates = [c for c in _categorical_table(table)
                      if name in {level_label(v) for v in table[c].dropna()}]
        if "contrast" in candidates:
            continue  # an incoming contrast's indicator, pybids' rule (made by the design)
        if len(candidates) > 1:
            raise _ambiguous(name, candidates, where or "group design")
        if candidates:
            column = candidates[0]
            labels = table[column].map(lambda v: None if pd.isna(v) else level_label(v))
            table = table.assign(**{name: (labels == name).astype(float)})
            records.append({"name": name, "column": column,
                            "how": f"the {column!r} value {name!r}: its indicator"})
    return table, records


def condition_column(cond: str, columns: list[str]) -> tuple[str | None, list[str]]:
    """The design column a bare condition names through a level: ``test`` -> ``session.test``.

    Returns
    -------
    column : str or None
        The one column ``<c>.<cond>``; None when there is none or several.
    candidates : list of str
        Every column ``<c>.<cond>`` (several: ambiguous).
    """
    candidates = [c for c in columns if c.endswith(f".{cond}") and ":" not in c]
    return (candidates[0] if len(candidates) == 1 else None), candidates
