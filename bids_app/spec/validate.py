"""Validate a BIDS Stats Model dict: schema errors plus semantic checks.

:func:`validate_model` reports every problem at once as ``(json_path,
message)`` pairs; :func:`check_conditions` repeats the condition checks once
the graph knows a node's real design-matrix columns.

Rules that go beyond the schema, and how ambiguities of the specification are
resolved (accepted unless they cannot be run):

* Names: node names are unique; contrast names are unique within a node,
  counting ``DummyContrasts`` names (the condition names, or every literal
  ``X`` name when ``DummyContrasts`` has no ``Contrasts`` list). Model, node
  and contrast names become path components through one sanitiser
  (:func:`~bids_app.derivatives.naming.sanitize_label`): each must keep a
  letter or digit, and no two may give the same label.
* Graph: without ``Edges`` the nodes are chained in list order (always
  valid). With ``Edges``, every edge names existing nodes, no self-loops, no
  duplicate edges, no cycles and exactly one root (node without incoming
  edges). ``"Edges": []`` with several nodes therefore has several roots.
* Conditions (``ConditionList``, ``DummyContrasts.Contrasts``): non-empty,
  no duplicates, each obtainable from the node's ``X``:

  - without ``Formula``: equal to a string of ``X`` or matched by an ``X``
    pattern (``*``, ``?``, ``[...]``, :func:`fnmatch.fnmatchcase`, as the
    design resolves ``X``; the spec's "alphanumeric only" wording for ``*``
    is not enforced);
  - with ``Formula``: the condition's variables equal those of one formula
    term. ``group.1:sex.M`` (pybids ``variable.level``) and
    ``C(group)[T.a]`` (formulaic) both name the term ``group:sex`` /
    ``C(group)``; a dotted name also matches a variable containing the dots
    (``trial_type.word``);
  - the intercept is written ``1``, ``"1"``, ``"intercept"`` or
    ``"Intercept"`` (:data:`INTERCEPT_ALIASES`, the names the graph maps to
    the design's ``intercept`` column); it is valid when ``X`` contains
    ``1`` (no Formula) or the Formula keeps the intercept.
* Weights: one per condition. ``t`` and ``pass`` need a flat list. ``F``
  takes a list of rows, each as long as ``ConditionList``; a flat list is
  also accepted for ``F`` because the specification allows it (it is one
  row). Weights are numbers or fraction strings (``"-1/3"``); all-zero
  contrasts and F rows, and linearly dependent F rows, are errors.
* ``Formula`` contains an explicit ``1`` or ``0`` term (spec MUST), has no
  left-hand side (a leading ``~`` alone is accepted: ``"~ 0 + a:b"``),
  parses with formulaic, and uses only variables of ``X``.
* ``Transformations``: with the ``pybids-transforms-v1`` transformer (or
  none named), every instruction names a pybids transformation, spelled as
  pybids spells it (``Demean``, ``And``; "did you mean" otherwise), and
  holds only that transformation's arguments
  (:mod:`bids_app.spec.transformations`). Other transformers (bidspm's) are
  not implemented: an error.
* ``Type: "meta"`` (fixed effects: weighted least squares with the incoming
  variances) takes any ``X`` or ``Formula``, and is not allowed at ``Run``
  level, whose inputs are BOLD series, not maps.
* ``HRF.Model``: spm, glover (each ``+ derivative`` and ``+ derivative +
  dispersion``) or fir, case and spaces ignored; the spec's ``afni`` is not
  implemented. ``fir`` needs ``Parameters.fir_delays`` (whole scans).
  ``HRF.Variables`` must be in ``X``.
* ``Options``: cutoffs are positive and the low-pass cutoff lies above the
  high-pass one. Filter values (``Input``, ``Edge.Filter``, ``Mask``) are a
  scalar or a non-empty list of scalars. ``Aggregate`` "mean" or "pca"
  (:data:`AGGREGATE_METHODS`) averages BOLD within the regions of ``Mask``:
  it needs a ``Mask`` and belongs to Run nodes (higher levels combine the
  region tables without it); "none" is accepted everywhere.
"""
from __future__ import annotations

import ast
import fnmatch
import itertools
import math
import re
from collections.abc import Sequence

from bids_app.errors import did_you_mean
from bids_app.spec.hrf import HRF_MODELS, fir_delays, hrf_key, hrf_model_name
from bids_app.spec.model import Node, ar_order, parse_weight, sanitize_label, strip_formula
from bids_app.spec.schema import Issue, schema_issues
from bids_app.spec.transformations import (COMMON_ARGUMENTS, TRANSFORMER, json_key,
                                           transformation_arguments)

INTERCEPT_ALIASES = frozenset({"1", "intercept", "Intercept"})

#: ``Model.Options.Aggregate`` values that fit regions instead of voxels ("none" is voxelwise).
AGGREGATE_METHODS = ("mean", "pca")
_GLOB_CHARS = frozenset("*?[")
_MAX_LISTED = 12


# --- small helpers ------------------------------------------------------------

def _is_one(value) -> bool:
    """The intercept in X: ``1``, or the string ``"1"`` bidspm writes (``true`` is not an intercept)."""
    return value == "1" or (not isinstance(value, bool) and isinstance(value, (int, float)) and value == 1)


def _is_glob(entry) -> bool:
    return isinstance(entry, str) and any(c in _GLOB_CHARS for c in entry)


def _is_intercept_name(cond) -> bool:
    return _is_one(cond) or (isinstance(cond, str) and cond in INTERCEPT_ALIASES)


def _dicts(value) -> list[tuple[int, dict]]:
    """``(index, item)`` for the dict items of a list; [] for anything else."""
    return [(i, v) for i, v in enumerate(value) if isinstance(v, dict)] \
        if isinstance(value, list) else []


def _listing(names: Sequence) -> str:
    shown = ", ".join(map(repr, list(names)[:_MAX_LISTED]))
    return shown + (", ..." if len(names) > _MAX_LISTED else "")


def in_x(name: str, x: Sequence) -> bool:
    """Whether ``name`` is a string of ``X`` or matched by one of its patterns."""
    for entry in x:
        if isinstance(entry, str) and (
            entry == name or (_is_glob(entry) and fnmatch.fnmatchcase(name, entry))
        ):
            return True
    return False


def resolve_condition(cond, columns: Sequence[str]) -> str | None:
    """The design column a condition names, or None.

    An intercept alias (:data:`INTERCEPT_ALIASES`, or the integer 1)
    resolves to the first column whose name is itself an alias.
    """
    if isinstance(cond, str) and cond in columns:
        return cond
    if _is_intercept_name(cond):
        return next((c for c in columns if c in INTERCEPT_ALIASES), None)
    return None


# --- formulas -----------------------------------------------------------------

def _has_explicit_intercept_term(formula: str) -> bool:
    """Whether ``1`` or ``0`` appears as a term outside brackets and quotes."""
    top, depth, quote = [], 0, None
    for ch in formula:
        if quote:
            quote = None if ch == quote else quote
            top.append(" ")
        elif ch in "`'\"":
            quote = ch
            top.append(" ")
        elif ch in "([{":
            depth += 1
            top.append(" ")
        elif ch in ")]}":
            depth -= 1
            top.append(" ")
        else:
            top.append(ch if depth == 0 else " ")
    return re.search(r"(?<![\w.])[01](?![\w.])", "".join(top)) is not None


def _expr_variables(expr: str) -> frozenset[str]:
    """Variable names in a Python factor such as ``C(group)`` or ``poly(age, 2)``.

    Called functions are not variables; ``a.b`` counts as one dotted name.
    """
    def dotted(node) -> str | None:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            head = dotted(node.value)
            return f"{head}.{node.attr}" if head else None
        return None

    def walk(node) -> set[str]:
        if isinstance(node, ast.Call):
            found: set[str] = set()
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                found |= walk(arg)
            return found
        name = dotted(node)
        if name is not None:
            return {name}
        return set().union(*(walk(child) for child in ast.iter_child_nodes(node)))

    try:
        return frozenset(walk(ast.parse(expr, mode="eval").body))
    except SyntaxError:
        return frozenset({expr})


def _factor_variables(factor) -> frozenset[str]:
    method = factor.eval_method.name
    if method == "LITERAL":
        return frozenset()
    if method == "LOOKUP":
        return frozenset({factor.expr})
    return _expr_variables(factor.expr)


def formula_terms(formula: str) -> list[frozenset[str]]:
    """The variable set of every term of a right-hand-side formula.

    The intercept term is the empty set.

    Raises
    ------
    formulaic.errors.FormulaicError
        The formula does not parse.
    """
    from formulaic import Formula  # ~1 s to import: only models with a Formula pay it

    return [frozenset().union(*(_factor_variables(f) for f in term.factors))
            for term in Formula(formula)]


def _split_top(text: str, sep: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def _factor_alternatives(factor: str) -> list[frozenset[str]]:
    """Possible variable sets of one ``:``-separated part of a column name."""
    level = re.fullmatch(r"(.+?)\[.*\]", factor)
    base = level.group(1) if level else factor
    if "(" in base:
        return [_expr_variables(base)]
    pieces = base.split(".")
    return [frozenset({".".join(pieces[:k])}) for k in range(len(pieces), 0, -1)]


def _matches_term(cond: str, terms: list[frozenset[str]]) -> bool:
    alternatives = [_factor_alternatives(f.strip()) for f in _split_top(cond, ":")]
    wanted = [t for t in terms if t]
    return any(frozenset().union(*choice) in wanted
               for choice in itertools.product(*alternatives))


# --- condition checks -----------------------------------------------------------

def _names_a_level(cond: str, x: list, level: str | None, upstream: frozenset | None) -> bool:
    """Whether a condition outside X can still name a design column (resolved when planning).

    * a level of an X column: ``group.patient`` with ``group`` in X, or the
      bare level ``face`` of an X entry ``trial_type.face``;
    * above the Run level, a bare level of a categorical X column
      (``retest`` with ``session`` in X), or an incoming contrast name when
      X has the intercept (bidspm's DummyContrasts on ``X: [1]``).
      ``upstream`` holds the names earlier nodes can produce (None: not
      known without the data).
    """
    names = [e for e in x if isinstance(e, str)]
    if any(cond.startswith(f"{e}.") for e in names if not _is_glob(e)):
        return True
    if any(e.split(".", 1)[-1] == cond for e in names if "." in e and not _is_glob(e)):
        return True
    if level in (None, "Run"):
        return False
    if "." not in cond and any(not _is_glob(e) and "." not in e for e in names):
        return True
    return any(_is_one(e) for e in x) and (upstream is None or cond in upstream)


def _condition_problem(cond, x: list, formula: str | None,
                       terms: list[frozenset[str]] | None, level: str | None = None,
                       upstream: frozenset | None = None) -> str | None:
    """Why a condition cannot come from this model, or None when it can."""
    if _is_intercept_name(cond):
        if formula is None:
            return None if any(_is_one(e) for e in x) else \
                f"{cond!r} is the intercept, but X has no 1: add 1 to X"
        if terms is None or frozenset() in terms:
            return None
        return f"{cond!r} is the intercept, but the Formula removes it (it has a 0 term)"
    if not isinstance(cond, str):
        return None  # a schema error already
    if formula is None:
        if in_x(cond, x) or _names_a_level(cond, x, level, upstream):
            return None
        names = [e for e in x if isinstance(e, str)]
        return (f"{cond!r} is not in Model.X{did_you_mean(cond, names)}; a condition must be an "
                f"X entry or match an X pattern (X: {_listing(x)})")
    if terms is None or _matches_term(cond, terms):
        return None
    shown = [":".join(sorted(t)) for t in terms if t]
    return (f"{cond!r} does not name a term of the Formula {formula!r}; its variables must "
            f"be those of one term ({_listing(shown)}), e.g. 'group.1:sex.M' for 'group:sex'")


def _condition_list_issues(conds, where: str, x: list, formula, terms, level=None,
                           upstream=None) -> list[Issue]:
    if not isinstance(conds, list):
        return []
    if not conds:
        return [(where, "empty list: name at least one condition")]
    issues = []
    seen: dict = {}
    for j, cond in enumerate(conds):
        if not isinstance(cond, (str, int, float)):
            continue  # a schema error already
        key = (type(cond).__name__, cond)
        if key in seen:
            issues.append((f"{where}[{j}]", f"{cond!r} is listed twice (also at [{seen[key]}])"))
            continue
        seen[key] = j
        problem = _condition_problem(cond, x, formula, terms, level, upstream)
        if problem:
            issues.append((f"{where}[{j}]", problem))
    return issues


# --- weights ----------------------------------------------------------------------

def _is_weight_type(value) -> bool:
    """A JSON number or string; anything else is reported by the schema."""
    return isinstance(value, (int, float, str)) and not isinstance(value, bool)


def _weight_problem(value) -> str | None:
    """Why a number or string is not a usable weight, or None."""
    try:
        number = parse_weight(value)
    except ZeroDivisionError:
        return f"{value!r} divides by zero"
    except ValueError:
        return f'{value!r} is not a number; write a number or a fraction such as "-1/3"'
    if not math.isfinite(number):
        return f"{value!r} is not a finite number"
    return None


def _weights_issues(contrast: dict, where: str) -> list[Issue]:
    weights, conds, test = contrast.get("Weights"), contrast.get("ConditionList"), contrast.get("Test")
    if not isinstance(weights, list) or not isinstance(conds, list) or not conds:
        return []
    nested = [isinstance(w, list) for w in weights]
    if any(nested) and not all(nested):
        return []  # mixed 1-D/2-D: reported by the schema
    n = len(conds)
    path = f"{where}.Weights"
    if all(nested) and weights:
        if test in ("t", "pass"):
            return [(path, f"a {test!r} contrast takes a flat list of {n} weights (one per "
                           "condition); a list of rows is only for 'F' contrasts")]
        rows = weights
        row_paths = [f"{path}[{i}]" for i in range(len(rows))]
    else:
        rows, row_paths = [weights], [path]
    issues = []
    usable = all(_is_weight_type(v) for row in rows for v in row)
    for row, row_path in zip(rows, row_paths):
        if len(row) != n:
            issues.append((row_path, f"expected {n} weights (one per ConditionList entry), "
                                     f"got {len(row)}"))
            continue
        for j, value in enumerate(row):
            problem = _weight_problem(value) if _is_weight_type(value) else None
            if problem:
                issues.append((f"{row_path}[{j}]", problem))
    if issues or not usable:
        return issues
    matrix = [[parse_weight(v) for v in row] for row in rows]
    for row, row_path in zip(matrix, row_paths):
        if not any(row):
            issues.append((row_path, "all weights are zero: the contrast tests nothing"))
    if not issues and len(rows) > 1:
        import numpy as np  # only F contrasts need it: `bids-stats validate` starts faster

        rank = np.linalg.matrix_rank(np.array(matrix, dtype=np.float64))
        if rank < len(rows):
            issues.append((path, f"the {len(rows)} rows are linearly dependent (rank "
                                 f"{rank}): drop redundant rows"))
    return issues


# --- node parts -------------------------------------------------------------------

def _formula_issues(formula, x: list, where: str) -> tuple[list[Issue], list | None]:
    """Problems of ``Model.Formula`` and its term variable sets (None if unusable)."""
    if not isinstance(formula, str):
        return [], None
    formula = strip_formula(formula)
    if "~" in formula:
        return [(where, "write only the right-hand side (no '~'): the data are the images")], None
    issues = []
    if not _has_explicit_intercept_term(formula):
        issues.append((where, "the Formula must contain an explicit 1 (keep the intercept) or "
                              f"0 (drop it), e.g. '1 + {formula}' or '0 + {formula}'"))
    from formulaic.errors import FormulaicError

    try:
        terms = formula_terms(formula)
    except (FormulaicError, SyntaxError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return [*issues, (where, f"cannot parse the Formula: {first_line}")], None
    for var in sorted(frozenset().union(*terms)):
        if not in_x(var, x):
            issues.append((where, f"the Formula uses {var!r}, which is not in Model.X: "
                                  "add it to X"))
    return issues, terms


def _hrf_issues(hrf, x: list, where: str) -> list[Issue]:
    if not isinstance(hrf, dict):
        return []
    issues = []
    name = hrf.get("Model")
    key = hrf_key(name) if isinstance(name, str) else None
    if key == "afni":
        issues.append((f"{where}.Model", "'afni' is named by the specification but not "
                                         f"implemented here; use one of {_listing(HRF_MODELS)}"))
    elif key == "doublegamma":
        issues.append((f"{where}.Model", "'DoubleGamma' does not say which double-gamma HRF: SPM's canonical "
                                         "HRF and Glover's are both double gammas; write 'spm' or 'glover'"))
    elif key is not None and hrf_model_name(name) is None:
        issues.append((f"{where}.Model", f"unknown HRF model {name!r}{did_you_mean(name, HRF_MODELS)}; "
                                         f"use one of {_listing(HRF_MODELS)} (case-insensitive)"))
    if key == "fir":
        params = hrf.get("Parameters") if isinstance(hrf.get("Parameters"), dict) else {}
        try:
            fir_delays(params)
        except ValueError as exc:
            issues.append((f"{where}.Parameters", str(exc)))
    variables = hrf.get("Variables")
    for j, var in enumerate(variables if isinstance(variables, list) else []):
        if isinstance(var, str) and not in_x(var, x):
            issues.append((f"{where}.Variables[{j}]",
                           f"{var!r} is not in Model.X{did_you_mean(var, [e for e in x if isinstance(e, str)])}; "
                           "only X variables can be convolved"))
    return issues


def _options_issues(options, where: str) -> list[Issue]:
    if not isinstance(options, dict):
        return []
    issues = []
    cut = {}
    for key in ("HighPassFilterCutoffHz", "LowPassFilterCutoffHz"):
        value = options.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value > 0:
                cut[key] = value
            else:
                example = " (e.g. 0.0078125 for a 128 s cutoff)" if key.startswith("High") else ""
                issues.append((f"{where}.{key}", f"must be > 0 Hz, got {value}{example}"))
    if len(cut) == 2 and cut["LowPassFilterCutoffHz"] <= cut["HighPassFilterCutoffHz"]:
        issues.append((f"{where}.LowPassFilterCutoffHz",
                       "must be above HighPassFilterCutoffHz, or no frequency is kept"))
    issues += _filter_issues(options.get("Mask"), f"{where}.Mask")
    return issues


def _aggregate_issues(options, level, where: str) -> list[Issue]:
    method = options.get("Aggregate") if isinstance(options, dict) else None
    if method not in AGGREGATE_METHODS:
        return []  # "none", absent, or a schema error reported already
    path = f"{where}.Aggregate"
    if level != "Run":
        return [(path, f"{method!r} reduces BOLD time series to regions, which only a Run node has; "
                       "higher levels combine the Run node's region tables as they are: remove it here")]
    if not options.get("Mask"):
        return [(path, f"{method!r} aggregates BOLD within the regions of Options.Mask, and there is none: "
                       'add Options.Mask selecting a label image, e.g. {"desc": ["aseg"], "suffix": ["dseg"]}')]
    return []


def _filter_issues(filt, where: str) -> list[Issue]:
    if not isinstance(filt, dict):
        return []
    return [(f"{where}.{key}", "empty list selects nothing: list the values to keep, "
                               "or remove the key to keep everything")
            for key, values in filt.items() if values == []]


def _x_issues(x: list, model: dict, where: str) -> list[Issue]:
    if "X" in model and x == []:
        return [(f"{where}.X", "empty: list the design variables (1 is the intercept)")]
    issues, seen = [], {}
    for j, entry in enumerate(x):
        if not isinstance(entry, (str, int, float)):
            continue
        key = (type(entry).__name__, entry)
        if key in seen:
            issues.append((f"{where}.X[{j}]", f"{entry!r} is listed twice (also at X[{seen[key]}])"))
        else:
            seen[key] = j
    return issues


def _meta_issues(node: dict, where: str) -> list[Issue]:
    if node.get("Level") == "Run":
        return [(f"{where}.Type", "a Run node models BOLD series; 'meta' combines "
                                  "maps from an earlier node: use 'glm'")]
    return []


def _noise_model_issues(software, where: str) -> list[Issue]:
    ours = software.get("bids-stats") if isinstance(software, dict) else None
    if not isinstance(ours, dict) or "NoiseModel" not in ours:
        return []
    try:
        ar_order(ours["NoiseModel"])
    except ValueError as exc:
        return [(f'{where}["bids-stats"].NoiseModel', str(exc))]
    return []


def _dummy_names(dummy: dict, x: list, formula: str | None, where: str) -> list[tuple[str, str]]:
    """``(contrast name, json path)`` of the dummy contrasts known before the data."""
    listed = dummy.get("Contrasts")
    if isinstance(listed, list):
        pairs = [(c, f"{where}.DummyContrasts.Contrasts[{j}]") for j, c in enumerate(listed)]
    elif formula is None:  # one per literal X name; patterns expand only with data
        pairs = [(e, f"{where}.Model.X[{j}]") for j, e in enumerate(x) if not _is_glob(e)]
    else:
        pairs = []
    return [(name, path) for name, path in pairs if isinstance(name, str)]


def _output_names(nodes: list[tuple[int, dict]]) -> frozenset | None:
    """Every contrast name any node can produce, or None when a pattern makes them data-dependent."""
    names: set[str] = set()
    for _, node in nodes:
        model = node.get("Model") if isinstance(node.get("Model"), dict) else {}
        x = model.get("X") if isinstance(model.get("X"), list) else []
        dummy = node.get("DummyContrasts")
        if isinstance(dummy, dict):
            listed = dummy.get("Contrasts")
            if isinstance(listed, list):
                names.update(c for c in listed if isinstance(c, str))
            elif any(_is_glob(e) for e in x) or model.get("Formula"):
                return None
            else:
                names.update(e for e in x if isinstance(e, str))
        names.update(c.get("Name") for _, c in _dicts(node.get("Contrasts")) if isinstance(c.get("Name"), str))
    return frozenset(names)


def _node_issues(node: dict, where: str, upstream: frozenset | None = None) -> list[Issue]:
    model = node.get("Model") if isinstance(node.get("Model"), dict) else {}
    x = model.get("X") if isinstance(model.get("X"), list) else []
    formula = strip_formula(model["Formula"]) if isinstance(model.get("Formula"), str) else None
    mpath = f"{where}.Model"
    issues = _x_issues(x, model, mpath)
    issues += _transformation_issues(node.get("Transformations"), f"{where}.Transformations")
    if model.get("Type") == "meta":
        issues += _meta_issues(node, mpath)
    f_issues, terms = _formula_issues(formula, x, f"{mpath}.Formula")
    issues += f_issues
    issues += _hrf_issues(model.get("HRF"), x, f"{mpath}.HRF")
    issues += _options_issues(model.get("Options"), f"{mpath}.Options")
    issues += _aggregate_issues(model.get("Options"), node.get("Level"), f"{mpath}.Options")
    issues += _noise_model_issues(model.get("Software"), f"{mpath}.Software")

    names: dict[str, str] = {}
    dummy = node.get("DummyContrasts")
    if isinstance(dummy, dict):
        if dummy.get("Contrasts") != []:  # [] means no dummy contrasts
            issues += _condition_list_issues(dummy.get("Contrasts"),
                                             f"{where}.DummyContrasts.Contrasts", x, formula, terms,
                                             node.get("Level"), upstream)
        for name, path in _dummy_names(dummy, x, formula, where):
            names.setdefault(name, path)

    for i, contrast in _dicts(node.get("Contrasts")):
        cpath = f"{where}.Contrasts[{i}]"
        name = contrast.get("Name")
        if isinstance(name, str):
            if not name.strip():
                issues.append((f"{cpath}.Name", "empty name: contrast names label output files"))
            elif name in names:
                issues.append((f"{cpath}.Name", f"duplicate contrast name {name!r} (also "
                                                f"{names[name]}); names must be unique in a node"))
            else:
                names[name] = f"{cpath}.Name"
        issues += _condition_list_issues(contrast.get("ConditionList"), f"{cpath}.ConditionList",
                                         x, formula, terms, node.get("Level"), upstream)
        issues += _weights_issues(contrast, cpath)
    return issues + _label_issues(names, "contrast", "the contrast- entity of output files")


def _transformation_issues(transformations, where: str) -> list[Issue]:
    if not isinstance(transformations, dict):
        return []
    transformer = transformations.get("Transformer", TRANSFORMER)
    if not isinstance(transformer, str) or transformer.lower() != TRANSFORMER:
        return [(f"{where}.Transformer", f"transformer {transformer!r} is not implemented here; only "
                                         f"{TRANSFORMER!r} (pybids' transformations) is")]
    known = transformation_arguments()
    issues = []
    for i, instruction in _dicts(transformations.get("Instructions")):
        path = f"{where}.Instructions[{i}]"
        name = instruction.get("Name")
        if not isinstance(name, str) or name not in known:
            issues.append((f"{path}.Name", f"unknown transformation {name!r}{did_you_mean(str(name), list(known))}; "
                                           f"pybids' transformations are {', '.join(sorted(known))}"))
            continue
        allowed = COMMON_ARGUMENTS | known[name]
        shown = sorted({"Input", "Output", *(_camel(a) for a in known[name])})
        for key in instruction:
            if json_key(key) not in allowed:
                issues.append((f"{path}.{key}", f"{name} takes no argument {key!r}"
                                                f"{did_you_mean(key, shown)}; it takes {', '.join(shown)}"))
        if name == "Group" and not instruction.get("Output"):
            issues.append((path, "Group names its group with Output (the name later instructions and X use)"))
    return issues


def _camel(snake: str) -> str:
    return "".join(w[:1].upper() + w[1:] for w in snake.split("_"))


# --- graph --------------------------------------------------------------------

def _label_issues(names: dict[str, str], what: str, used_as: str) -> list[Issue]:
    """Names (name -> JSON path) that become path components must give distinct, non-empty labels.

    Labels are made by :func:`bids_app.derivatives.naming.sanitize_label`,
    the one sanitiser of every path written; empty names are reported elsewhere.
    """
    issues, labels = [], {}
    for name, path in names.items():
        if not name.strip():
            continue
        try:
            label = sanitize_label(name)
        except ValueError:
            issues.append((path, f"{what} name {name!r} has no letter or digit, but it becomes {used_as}; "
                                 "use letters and digits"))
            continue
        if label in labels:
            other, other_path = labels[label]
            issues.append((path, f"{what} names {other!r} ({other_path}) and {name!r} both become {label!r} "
                                 f"in {used_as}; rename one"))
        else:
            labels[label] = (name, path)
    return issues


def _edge_issues(edges, node_names: list[str]) -> list[Issue]:
    if not isinstance(edges, list):
        return []  # absent (or null): nodes chain in list order
    issues: list[Issue] = []
    known = set(node_names)
    pairs: dict[tuple[str, str], int] = {}
    unknown_names = False
    for i, edge in _dicts(edges):
        ends = [edge.get("Source"), edge.get("Destination")]
        for key, name in zip(("Source", "Destination"), ends):
            if isinstance(name, str) and name not in known:
                issues.append((f"Edges[{i}].{key}", f"no node is named {name!r}"
                                                     f"{did_you_mean(name, node_names)}; nodes: "
                                                     f"{_listing(node_names)}"))
                unknown_names = True
        if not all(isinstance(n, str) and n in known for n in ends):
            continue
        source, dest = ends
        if source == dest:
            issues.append((f"Edges[{i}]", f"self-loop on {source!r}: an edge joins two different "
                                          "nodes"))
        elif (source, dest) in pairs:
            issues.append((f"Edges[{i}]", f"duplicate of Edges[{pairs[source, dest]}] "
                                          f"({source!r} -> {dest!r})"))
        else:
            pairs[source, dest] = i
        issues += _filter_issues(edge.get("Filter"), f"Edges[{i}].Filter")
    if unknown_names:
        return issues  # roots and cycles would be guesses
    children = {n: [d for s, d in pairs if s == n] for n in node_names}
    indegree = {n: sum(d == n for _, d in pairs) for n in node_names}
    roots = [n for n in node_names if indegree[n] == 0]
    # Kahn's algorithm: nodes never reaching in-degree 0 lie on or after a cycle.
    queue, left = list(roots), dict(indegree)
    while queue:
        for child in children[queue.pop()]:
            left[child] -= 1
            if left[child] == 0:
                queue.append(child)
    cyclic = [n for n in node_names if left[n] > 0]
    if cyclic:
        issues.append(("Edges", f"the edges form a cycle through {_listing(cyclic)}: the graph "
                                "must be acyclic"))
    if len(roots) > 1:
        issues.append(("Edges", f"the graph must have exactly one root (a node without incoming "
                                f"edges), found {len(roots)}: {_listing(roots)}; add edges into "
                                "all but the first"))
    elif not roots and not cyclic:
        issues.append(("Edges", "the graph has no root node"))
    return issues


def _semantic_issues(model: dict) -> list[Issue]:
    issues: list[Issue] = []
    issues += _filter_issues(model.get("Input"), "Input")
    nodes = _dicts(model.get("Nodes"))
    first: dict[str, int] = {}
    for i, node in nodes:
        name = node.get("Name")
        if not isinstance(name, str):
            continue
        if not name.strip():
            issues.append((f"Nodes[{i}].Name", "empty name: edges and outputs refer to nodes by name"))
        elif name in first:
            issues.append((f"Nodes[{i}].Name", f"duplicate node name {name!r} (also "
                                                f"Nodes[{first[name]}]); node names must be unique"))
        else:
            first[name] = i
    issues += _label_issues({n: f"Nodes[{i}].Name" for n, i in first.items()}, "node",
                            "the output folder node-<label>")
    if isinstance(model.get("Name"), str):
        issues += _label_issues({model["Name"]: "Name"}, "model", "the model copy's file name model-<label>_smdl.json")
    upstream = _output_names(nodes)
    for i, node in nodes:
        issues += _node_issues(node, f"Nodes[{i}]", upstream)
    if isinstance(model.get("Nodes"), list) and not model["Nodes"]:
        issues.append(("Nodes", "empty: a model needs at least one node"))
    issues += _edge_issues(model.get("Edges"), list(first))
    return issues


def validate_model(model: dict) -> list[Issue]:
    """Every problem of a BIDS Stats Model dict, schema and semantic, at once.

    Parameters
    ----------
    model : dict
        The parsed model JSON.

    Returns
    -------
    list of (str, str)
        ``(json_path, message)`` pairs, e.g.
        ``("Nodes[1].Contrasts[0].Weights", "expected 3 weights ...")``;
        empty when the model is valid. Schema problems come first.
    """
    issues = schema_issues(model)
    if isinstance(model, dict):
        issues += [i for i in _semantic_issues(model) if i not in issues]
    return issues


def check_conditions(node: Node, columns: list[str], path_prefix: str) -> list[Issue]:
    """Check a node's conditions against the real design-matrix columns.

    Parameters
    ----------
    node : Node
    columns : list of str
        The columns of one design built for ``node``.
    path_prefix : str
        JSON path of the node, e.g. ``"Nodes[0]"``.

    Returns
    -------
    list of (str, str)
        One issue per ``ConditionList`` / ``DummyContrasts.Contrasts`` entry
        that names no column (intercept aliases resolve as in
        :func:`resolve_condition`).
    """
    def problem(cond) -> str:
        if _is_intercept_name(cond):
            return f"{cond!r} is the intercept, but the design has no intercept column"
        return (f"{cond!r} is not a column of the design matrix{did_you_mean(str(cond), columns)}; "
                f"columns: {_listing(columns)}")

    issues = []
    for i, contrast in enumerate(node.contrasts):
        for j, cond in enumerate(contrast.conditions):
            if resolve_condition(cond, columns) is None:
                issues.append((f"{path_prefix}.Contrasts[{i}].ConditionList[{j}]", problem(cond)))
    for j, cond in enumerate(node.dummy_contrasts or ()):
        if resolve_condition(cond, columns) is None:
            issues.append((f"{path_prefix}.DummyContrasts.Contrasts[{j}]", problem(cond)))
    return issues
