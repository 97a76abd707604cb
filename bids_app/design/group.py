"""Group-level design matrices (Session, Subject, Dataset nodes).

A group node models a table with one row per incoming map: the map's
entities (``subject``, ``session``, ``contrast``, ...) joined with
``participants.tsv`` (and sessions) columns. :func:`build_group_design` turns
that table into the design matrix in three steps:

1. ``Transformations`` (pybids-transforms-v1) run on the table's columns, by
   pybids itself, one :class:`~bids.variables.SimpleVariable` per column.
   Only the transformations that keep one value per map make sense here:
   ``Factor``, ``Scale``, ``Demean``, ``Rename``, ``Replace``, ``Copy``,
   ``Product``, ``Sum``, ``Threshold``, ``And``, ``Or``, ``Not``,
   ``Delete``, ``Select``. ``Factor`` names its columns ``<var>.<level>``.
   What we fix in pybids: a missing value in an instruction's input raises
   (pybids' ``Factor`` crashes on it, ``Product`` treats it as 1 and
   ``Threshold`` as 0), and ``Replace`` keys, always strings in JSON, also
   match numeric values (``{"1": "patient"}`` on a 0/1 column).
2. Names the node uses that no column carries are resolved
   (:mod:`bids_app.design.names`): ``group.patient`` splits ``group`` into
   its levels as ``Factor`` would; a bare ``X`` entry that is a value of
   one categorical column (``retest`` of ``session``) is that value's
   indicator. ``X`` entries that name a value of the ``contrast`` column
   get an indicator column of that name, as pybids builds them. A
   categorical ``X`` column whose levels the contrasts name (``X: [1,
   "group"]`` with conditions ``group.patient``, bidspm's way) stands for
   all its levels; the intercept then equals their sum and is left out
   unless a condition names it (the fitted space is the same), which is
   recorded in ``resolved``.
3. Without ``Formula``, ``X`` selects columns (``1`` is a column of ones
   named ``intercept``; fnmatch globs allowed). With ``Formula``
   (Wilkinson notation, evaluated by formulaic on the transformed table,
   with an explicit ``1`` or ``0`` term as the specification requires),
   formulaic's names are rewritten to the pybids style the model's
   contrasts use: ``Intercept`` -> ``intercept``, ``group[T.B]`` and
   ``C(group)[B]`` -> ``group.B``, so ``group[T.1]:sex[T.M]`` ->
   ``group.1:sex.M``. How ``X`` relates to the formula:

   * ``X`` lists the formula's variables (and ``1``): the design is every
     column the formula makes. The formula may use no variable outside
     ``X`` (the specification's namespace rule; pybids fails the same way).
   * ``X`` names (or globs) formula columns such as ``group.B:age``: the
     design is those columns, in ``X`` order; entries naming a formula
     variable then select the column of that name when the formula makes
     one (a continuous ``age``) and nothing otherwise (``group``).

A value missing in any design column raises :class:`DesignError` naming the
column and the subjects; nothing is filled with 0.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bids_app.design.columns import INTERCEPT, expand_x, is_glob, is_intercept
from bids_app.design.names import factor_table, level_label, node_names, resolve_table_names
from bids_app.errors import DesignError
from bids_app.spec.model import Node

TRANSFORMER = "pybids-transforms-v1"

#: pybids transformations that keep one value per map: spec name -> name in
#: ``bids.modeling.transformations`` (pybids and formulaic are imported only by
#: models that use them: ~2 s of start-up otherwise).
_TABLE_TRANSFORMS = {
    "Factor": "Factor", "Scale": "Scale", "Demean": "Demean",
    "Rename": "Rename", "Replace": "Replace", "Copy": "Copy",
    "Product": "Product", "Sum": "Sum", "Threshold": "Threshold",
    "And": "And_", "Or": "Or_", "Not": "Not",
    "Delete": "Delete", "Select": "Select",
}
#: Why the other pybids transformations cannot run on a table of maps.
_NOT_AT_GROUP_LEVEL = {
    **dict.fromkeys(("Convolve", "ToDense", "Resample", "Lag", "Assign"),
                    "it works on time series and exists at Run level only"),
    **dict.fromkeys(("DropNA", "Filter"),
                    "it would drop maps; select inputs with an Edge Filter instead"),
    **dict.fromkeys(("Split", "Orthogonalize", "Group"),
                    "it is not supported on group-level tables"),
}
#: Transformations that silently turn a missing value into a number.
_NA_SAFE = {"Rename", "Copy", "Delete", "Select"}
_ROW = "_bids_stats_row"  # pybids needs an entity to index variables by


@dataclass(frozen=True)
class GroupDesign:
    """A group-level design.

    Attributes
    ----------
    matrix : DataFrame, shape (n_maps, n_columns)
        float64, indexed like the ``inputs`` table, columns named as the
        model's contrasts refer to them.
    info : dict
        JSON-able provenance: ``x`` (the columns), ``formula``,
        ``formula_columns`` (our name -> formulaic's), ``x_mode``,
        ``transformations`` (one record per instruction, with ``centring``
        ``{column: {"mean", "sd"}}`` for Scale/Demean: what was subtracted
        and, when rescaling, divided by) and ``implicit_contrast_columns``.
    """

    matrix: pd.DataFrame
    info: dict = field(default_factory=dict)


def build_group_design(node: Node, inputs: pd.DataFrame) -> GroupDesign:
    """Build the design matrix of a group node for one group of maps.

    Parameters
    ----------
    node : Node
        A Session, Subject or Dataset node.
    inputs : DataFrame, shape (n_maps, n_variables)
        One row per incoming map: entity columns plus participants
        (and sessions) columns.

    Returns
    -------
    GroupDesign

    Raises
    ------
    bids_app.errors.DesignError
        Unknown or unsupported transformation (named), bad instruction
        arguments, an ``X`` entry or formula variable matching nothing, a
        non-numeric column selected without ``Factor``/``Formula``, or
        missing values in a used column (names the subjects).
    """
    if inputs.empty:
        raise DesignError(f"node {node.name!r}: no input maps to build a design from")
    table, log = apply_table_transformations(inputs, node.transformations)
    x_names = [e for e in node.model.x if isinstance(e, str)]
    conditions = [n for n in node_names(node) if n not in x_names]
    table, resolved = resolve_table_names(table, node.model.x, conditions,
                                          where=f"node {node.name!r}")
    table, implicit = _contrast_indicators(table, node.model.x)
    if node.model.formula:
        matrix, formula_info = _formula_design(node.model.formula, node.model.x, table)
    else:
        x, notes, table = _categorical_x(node, table, conditions)
        resolved += notes
        matrix, formula_info = _x_design(x, table), {}
    _check_missing(matrix, table, "design column")
    info = {
        "x": list(matrix.columns),
        "formula": node.model.formula,
        **formula_info,
        "transformations": log,
        "implicit_contrast_columns": implicit,
        "resolved": resolved,
        "n_maps": int(len(matrix)),
    }
    return GroupDesign(matrix.astype(np.float64), info)


# --- transformations -----------------------------------------------------------------

def apply_table_transformations(inputs: pd.DataFrame, transformations: dict | None
                                ) -> tuple[pd.DataFrame, list[dict]]:
    """Run a node's ``Transformations`` on a group-level table with pybids.

    Parameters
    ----------
    inputs : DataFrame, shape (n_maps, n_variables)
    transformations : dict or None
        ``{"Transformer": "pybids-transforms-v1", "Instructions": [...]}``;
        instruction keys as the specification writes them (``Name``,
        ``Input``, ``Output``, ``Demean``, ``RefLevel``...).

    Returns
    -------
    table : DataFrame, shape (n_maps, n_variables')
        Same index as ``inputs``.
    log : list of dict
        JSON-able record of each instruction applied.
    """
    instructions = _instructions(transformations)
    if not instructions:
        return inputs.copy(), []
    from bids.modeling import transformations as pbt
    from bids.utils import convert_JSON

    collection = _collection(inputs)
    log = []
    for i, instruction in enumerate(instructions):
        where = f"Transformations.Instructions[{i}]"
        name = str(instruction.get("Name", ""))
        if name in _NOT_AT_GROUP_LEVEL:
            raise DesignError(f"{where}: {name} cannot run on a group-level node: "
                              f"{_NOT_AT_GROUP_LEVEL[name]}")
        if name not in _TABLE_TRANSFORMS:
            raise DesignError(f"{where}: unknown transformation {name!r}; supported at group "
                              f"level: {', '.join(_TABLE_TRANSFORMS)}")
        kwargs = convert_JSON({k: v for k, v in instruction.items()
                               if k not in ("Name", "Description")})
        before = _table(collection, inputs.index)
        kwargs["input"] = _expand_inputs(kwargs.get("input"), list(before.columns),
                                         f"{where} ({name})")
        if name not in _NA_SAFE and kwargs.get("replace_na") is None:
            _check_missing(before[kwargs["input"]], before, f"{where} ({name}) input")
        if name == "Replace" and isinstance(kwargs.get("replace"), dict):
            kwargs["replace"] = _replace_keys(kwargs["replace"], before[kwargs["input"]])
        try:
            getattr(pbt, _TABLE_TRANSFORMS[name])(collection, kwargs.pop("input"), **kwargs)
        except (ValueError, KeyError, TypeError) as exc:
            raise DesignError(f"{where} ({name}): {type(exc).__name__}: {exc}") from exc
        log.append(_record(name, instruction, before, _table(collection, inputs.index)))
    return _table(collection, inputs.index), log


def _instructions(transformations: dict | None) -> list[dict]:
    if not transformations:
        return []
    transformer = transformations.get("Transformer", TRANSFORMER)
    if str(transformer).lower() != TRANSFORMER:
        raise DesignError(f"Transformations.Transformer {transformer!r} is not supported; "
                          f"use {TRANSFORMER!r}")
    return list(transformations.get("Instructions") or [])


def _collection(table: pd.DataFrame) -> BIDSVariableCollection:
    from bids.variables import BIDSVariableCollection, SimpleVariable

    rows = pd.DataFrame({_ROW: np.arange(len(table))})
    variables = [SimpleVariable(str(col), rows.assign(amplitude=table[col].to_numpy()), "group")
                 for col in table.columns]
    return BIDSVariableCollection(variables)


def _table(collection: BIDSVariableCollection, index: pd.Index) -> pd.DataFrame:
    """The collection as a table in the original row order (pybids may reorder rows)."""
    columns = {}
    for name, var in collection.variables.items():
        df = var.to_df(entities=True)
        columns[name] = pd.Series(df["amplitude"].to_numpy(), index=df[_ROW].to_numpy())
    table = pd.DataFrame(columns).reindex(np.arange(len(index)))
    table.index = index
    return table


def _expand_inputs(names, columns: list[str], where: str) -> list[str]:
    if names is None:
        raise DesignError(f"{where}: missing Input")
    from bids.utils import listify

    out: list[str] = []
    for name in listify(names):
        matched = ([c for c in columns if fnmatch.fnmatchcase(c, name)] if is_glob(name)
                   else [name] if name in columns else [])
        if not matched:
            raise DesignError(f"{where}: Input {name!r} matches no column; available: "
                              f"{', '.join(columns)}")
        out += [c for c in matched if c not in out]
    return out


def _replace_keys(mapping: dict, table: pd.DataFrame) -> dict:
    """Let JSON's string keys match the values they spell (``"1"`` matches 1)."""
    out = dict(mapping)
    for value in pd.unique(table.to_numpy().ravel()):
        label = _label(value)
        if label in mapping and value not in out:
            out[value] = mapping[label]
    return out


def _label(value) -> str:
    """A value as the string a user writes in JSON: 1.0 -> "1"."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _record(name: str, instruction: dict, before: pd.DataFrame, after: pd.DataFrame) -> dict:
    from bids.utils import listify

    record = {"name": name,
              **{k: v for k, v in instruction.items() if k not in ("Name", "Description")},
              "added": [c for c in after.columns if c not in before.columns],
              "removed": [c for c in before.columns if c not in after.columns]}
    if name in ("Scale", "Demean"):
        inputs = _expand_inputs(instruction.get("Input"), list(before.columns), name)
        outputs = listify(instruction.get("Output")) or inputs
        rescale = name == "Scale" and instruction.get("Rescale", True)
        demean = name == "Demean" or instruction.get("Demean", True)
        record["centring"] = {
            out: {"mean": float(before[src].mean()) if demean else 0.0,
                  "sd": float(before[src].std()) if rescale else None}
            for src, out in zip(inputs, outputs)
        }
    return record


# --- X and Formula -------------------------------------------------------------------

def _contrast_indicators(table: pd.DataFrame, x) -> tuple[pd.DataFrame, list[str]]:
    """Indicator columns for X entries naming an incoming contrast (pybids' rule)."""
    if "contrast" not in table.columns:
        return table, []
    values = set(table["contrast"].dropna().astype(str))
    wanted = [e for e in x if isinstance(e, str) and not is_glob(e)
              and e not in table.columns and e in values]
    if not wanted:
        return table, []
    indicators = {name: (table["contrast"].astype(str) == name).astype(float) for name in wanted}
    return table.assign(**indicators), wanted


def _categorical_x(node: Node, table: pd.DataFrame, conditions: list[str]
                   ) -> tuple[list, list[dict], pd.DataFrame]:
    """X with each categorical column whose levels the conditions name replaced by its levels."""
    x, notes = [], []
    for entry in node.model.x:
        categorical = (isinstance(entry, str) and not is_glob(entry) and entry in table.columns
                       and not pd.api.types.is_numeric_dtype(table[entry]))
        values = {level_label(v) for v in table[entry].dropna()} if categorical else set()
        if not any(c in values or c.startswith(f"{entry}.") for c in conditions):
            x.append(entry)
            continue
        table, _ = factor_table(table, entry)
        levels = [f"{entry}.{v}" for v in sorted(values)]
        x += levels
        notes.append({"name": entry, "column": entry,
                      "how": f"categorical X column {entry!r} stands for its levels "
                             f"({', '.join(levels)}), which the contrasts name"})
    named_intercept = any(_is_one_condition(c) for con in node.contrasts for c in con.conditions) or \
        any(_is_one_condition(c) for c in node.dummy_contrasts or ())
    if notes and any(is_intercept(e) for e in x) and not named_intercept:
        x = [e for e in x if not is_intercept(e)]
        notes.append({"name": 1, "column": INTERCEPT,
                      "how": "intercept left out: it equals the sum of the level columns of "
                             f"{', '.join(repr(n['name']) for n in notes)} (same fitted space; no "
                             "condition names it)"})
    return x, notes, table


def _is_one_condition(cond) -> bool:
    return is_intercept(cond) or str(cond) in ("1", "intercept", "Intercept")


def _x_design(x, table: pd.DataFrame) -> pd.DataFrame:
    names = expand_x(x, list(table.columns))
    columns = {}
    for name in names:
        if name == INTERCEPT:
            columns[name] = np.ones(len(table))
            continue
        col = table[name]
        if col.dtype == bool:
            col = col.astype(float)
        if not pd.api.types.is_numeric_dtype(col):
            levels = ", ".join(sorted(map(_label, col.dropna().unique()))[:5])
            raise DesignError(
                f"Model.X column {name!r} is not numeric (values: {levels}); add a Factor "
                f"transformation (columns {name}.<level>) or use Model.Formula")
        columns[name] = col.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.DataFrame(columns, index=table.index)


def _formula_design(formula: str, x, table: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    if "~" in formula:
        raise DesignError(f"Model.Formula {formula!r}: write the right-hand side only "
                          "(no '~'); the maps are the response")
    if not _has_intercept_term(formula):
        raise DesignError(f"Model.Formula {formula!r} must contain an explicit 1 (keep the "
                          "intercept) or 0 (drop it)")
    import formulaic
    from formulaic.errors import FormulaicError

    formula = _quote_dotted(formula, table.columns)
    try:
        # "ignore" keeps rows with missing values, so we can name their subjects
        mm = formulaic.model_matrix(formula, table, na_action="ignore")
    except (FormulaicError, NameError, SyntaxError, ValueError, KeyError) as exc:
        raise DesignError(f"Model.Formula {formula!r}: {type(exc).__name__}: {exc}") from exc
    variables = sorted(mm.model_spec.variables_by_source.get("data", set()))
    _check_missing(table[variables], table, "Formula variable")
    renamed = {col: spec_column_name(col) for col in mm.columns}
    if len(set(renamed.values())) != len(renamed):
        raise DesignError(f"Model.Formula {formula!r} makes columns whose names collide "
                          f"once renamed: {renamed}")
    full = pd.DataFrame(np.asarray(mm, dtype=np.float64), index=table.index,
                        columns=list(renamed.values()))
    columns, mode = _formula_columns(x, list(full.columns), variables, formula)
    info = {"formula_columns": {renamed[c]: c for c in mm.columns if renamed[c] in columns},
            "formula_variables": variables, "x_mode": mode}
    return full[columns], info


def _quote_dotted(formula: str, columns) -> str:
    """Backquote column names holding dots (``group.1``, Factor levels), which formulaic
    would otherwise read as attribute access."""
    dotted = sorted((str(c) for c in columns if "." in str(c)), key=len, reverse=True)
    if not dotted:
        return formula
    pattern = re.compile(r"(?<![\w.`])(" + "|".join(map(re.escape, dotted)) + r")(?![\w.`])")
    return pattern.sub(lambda m: f"`{m.group(1)}`", formula)


def _formula_columns(x, columns: list[str], variables: list[str], formula: str
                     ) -> tuple[list[str], str]:
    """Which formula columns X keeps; see the module docstring."""
    named = [e for e in x if not is_intercept(e) and e not in variables]
    for entry in named:
        if not (fnmatch.filter(columns, entry) if is_glob(entry) else entry in columns):
            raise DesignError(f"Model.X entry {entry!r} is neither a variable the Formula "
                              f"uses ({', '.join(variables)}) nor a column it makes "
                              f"({', '.join(columns)})")
    if any(is_intercept(e) for e in x) and INTERCEPT not in columns:
        raise DesignError(f"Model.X has 1 but Model.Formula {formula!r} removes the intercept")
    if not named:
        unlisted = [v for v in variables if v not in x]
        if unlisted:
            raise DesignError(f"Model.Formula uses {', '.join(map(repr, unlisted))}, not "
                              "listed in Model.X")
        return columns, "all"
    selected = [c for e in x for c in ([INTERCEPT] if is_intercept(e)
                                       else fnmatch.filter(columns, e) if is_glob(e)
                                       else [e] if e in columns else [])]
    return list(dict.fromkeys(selected)), "selected"


_LEVEL = re.compile(r"^(?:C\(\s*(?P<call>[A-Za-z_][\w.]*).*\)|(?P<var>[^\[\]()]+))"
                    r"\[(?:T\.)?(?P<level>[^\]]*)\]$")


def spec_column_name(name: str) -> str:
    """Rewrite a formulaic column name the way pybids and the model spec name it.

    ``Intercept`` -> ``intercept``; ``group[T.B]``, ``group[B]``,
    ``C(group)[T.B]`` -> ``group.B``; interaction parts are rewritten one by
    one (``group[T.1]:sex[T.M]`` -> ``group.1:sex.M``); anything else
    (``age``, ``center(age)``, sum-coded ``group[S.B]``) is kept.
    """
    if name == "Intercept":
        return INTERCEPT
    parts = []
    for part in name.split(":"):
        m = _LEVEL.match(part)
        if m and not m["level"].startswith(("S.", "D.", "H.", "P.")):
            parts.append(f"{(m['call'] or m['var']).strip('`')}.{m['level']}")
        else:
            parts.append(part)
    return ":".join(parts)


def _has_intercept_term(formula: str) -> bool:
    """Whether ``1`` or ``0`` is a term outside any bracket (``C(x, base=1)`` is not)."""
    top = formula
    while True:
        stripped = re.sub(r"\([^()]*\)|\[[^\[\]]*\]|`[^`]*`", " ", top)
        if stripped == top:
            break
        top = stripped
    return re.search(r"(?<![\w.])[01](?![\w.])", top) is not None


# --- missing values ------------------------------------------------------------------

def _check_missing(values: pd.DataFrame, table: pd.DataFrame, what: str) -> None:
    """Raise naming the columns and subjects with missing values in ``values``."""
    bad = values.isna()
    if not bad.to_numpy().any():
        return
    lines = []
    for col in bad.columns[bad.any()]:
        rows = table.loc[bad[col]]
        lines.append(f"{what} {col!r} has no value for {_who(rows)}")
    raise DesignError("missing values (never filled with 0): " + "; ".join(lines)
                      + ". Fill them in participants.tsv or exclude those maps "
                      "(--participant-label, an Edge Filter)")


def _who(rows: pd.DataFrame) -> str:
    if "subject" in rows.columns:
        subjects = [f"sub-{s}" for s in dict.fromkeys(rows["subject"].astype(str))]
        extra = ""
        if "contrast" in rows.columns and rows["contrast"].nunique() > 1:
            extra = f" ({len(rows)} maps)"
        return ", ".join(subjects) + extra
    return "rows " + ", ".join(map(str, rows.index))
