"""The BIDS Stats Models JSON schema, made strict, and readable schema errors.

The schema is generated from :class:`bsmschema.models.BIDSStatsModel` (the
specification's own pydantic models) and post-processed in two ways:

* every object with declared properties gets ``additionalProperties: false``.
  bsmschema means to forbid unknown keys but its base config spells the
  pydantic option ``extras`` instead of ``extra``, so a typo such as
  ``"Contrats"`` would otherwise be silently ignored;
* filter values (``Input``, ``Edge.Filter``, ``Options.Mask``) may be a
  single scalar as well as a list. The schema asks for lists, but the
  specification's own example model writes ``"Input": {"task": "stroop"}``,
  the ``Options.Mask`` docstring writes ``{"desc": "brain"}``, and pybids
  accepts both; a scalar means a one-element list.

:func:`schema_issues` turns jsonschema errors into ``(json_path, message)``
pairs whose message says how to fix the problem.

Generating the schema (importing pydantic and bsmschema) costs ~0.3 s, more
than the rest of ``bids-stats validate``: it is kept in the user cache
(:mod:`bids_app.cache`), keyed on the bsmschema and pydantic versions and on
this module's source.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from bids_app.cache import cached_json, package_version
from bids_app.errors import did_you_mean

Issue = tuple[str, str]

# bsmschema's ``Filter`` alias (dict[str, list[Any]]) as pydantic renders it.
_FILTER_VALUES = {"items": {}, "type": "array"}
_FILTER_SCALAR = {"type": ["string", "number", "boolean", "null"]}
_STRICT_FILTER_VALUES = {
    "anyOf": [{"type": "array", "items": _FILTER_SCALAR}, _FILTER_SCALAR],
}

# Shown after "missing required key ..." so the user knows what to write.
_REQUIRED_HINTS = {
    "BIDSModelVersion": ' (the specification version, e.g. "1.0.0")',
    "GroupBy": ' (a list such as ["run", "subject"]; [] fits one model to all inputs)',
    "Type": ' ("glm" or "meta")',
    "Test": ' ("t", "F" or "pass")',
    "X": " (the list of design variables; 1 is the intercept)",
}



def json_path(parts: Iterable) -> str:
    """Join path parts as ``Nodes[1].Contrasts[0].Weights``; the root is ``""``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _strict(node):
    """Recursively forbid unknown keys and widen filter values (see module doc)."""
    if isinstance(node, list):
        return [_strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if "properties" in out:
        out["additionalProperties"] = False
    if out.get("type") == "object" and out.get("additionalProperties") == _FILTER_VALUES:
        out["additionalProperties"] = copy.deepcopy(_STRICT_FILTER_VALUES)
    return out


@functools.cache
def _cached_schema() -> dict:
    source = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    key = f"schema-bsmschema{package_version('bsmschema')}-pydantic{package_version('pydantic')}-{source}"
    return cached_json(key, _build_schema)


def _build_schema() -> dict:
    from bsmschema.models import BIDSStatsModel

    schema = _strict(BIDSStatsModel.model_json_schema())
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    return schema


def strict_schema() -> dict:
    """The strict BIDS Stats Model JSON schema (Draft 2020-12).

    Returns
    -------
    dict
        A fresh copy of the cached schema; mutating it does not affect
        validation.
    """
    return copy.deepcopy(_cached_schema())


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(_cached_schema())


def _describe(value) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 40 else text[:37] + "..."


def _expected(schema: dict) -> str:
    """A short phrase for what one schema branch accepts."""
    if "$ref" in schema:
        return "an object"
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(map(json.dumps, schema["enum"]))
    if "anyOf" in schema:
        words = [_expected(s) for s in schema["anyOf"]]
        if "a number" in words:
            words = [w for w in words if w != "an integer"]
        return " or ".join(dict.fromkeys(words))
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    names = {"object": "an object", "array": "a list", "string": "a string",
             "number": "a number", "integer": "an integer", "boolean": "a boolean",
             "null": "null"}
    words = [names.get(k, k) for k in kinds]
    return " or ".join(words) or "a different value"


def _branch_fits(error: ValidationError) -> bool:
    """Whether an anyOf branch error lies inside the value (the value's shape fits).

    ``error.relative_path`` is relative to the value the anyOf tested.
    """
    return bool(error.relative_path) or error.validator not in ("type", "const")


def _issues_from(error: ValidationError) -> list[Issue]:
    path = json_path(error.absolute_path)
    kind = error.validator
    if kind == "additionalProperties" and error.validator_value is False:
        allowed = sorted(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        return [
            (json_path([*error.absolute_path, key]),
             f"unknown key {key!r}{did_you_mean(key, allowed)}; allowed keys: {', '.join(allowed)}")
            for key in extra
        ]
    if kind == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return [(path, f"missing required key {k!r}{_REQUIRED_HINTS.get(k, '')}") for k in missing]
    if kind == "enum" or (kind == "const" and isinstance(error.validator_value, str)):
        values = error.validator_value if kind == "enum" else [error.validator_value]
        allowed = [str(v) for v in values]
        return [(path, f"{_describe(error.instance)} is not allowed{did_you_mean(error.instance, allowed)};"
                       f" use one of {', '.join(map(repr, allowed))}")]
    if kind in ("anyOf", "oneOf"):
        branches: dict[int, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        fitting = [errs for errs in branches.values()
                   if all(_branch_fits(e) for e in errs)]
        if fitting:
            # The value has the right shape for a branch: report what is
            # wrong inside it (the smallest set of problems if several fit).
            return [i for e in min(fitting, key=len) for i in _issues_from(e)]
        return [(path, f"expected {_expected(error.schema)}, got {_describe(error.instance)}")]
    if kind in ("type", "const"):
        return [(path, f"expected {_expected(error.schema)}, got {_describe(error.instance)}")]
    return [(path, error.message)]


def schema_issues(model: object) -> list[Issue]:
    """Every schema problem of a model dict as ``(json_path, message)`` pairs.

    Parameters
    ----------
    model : object
        The parsed JSON document.

    Returns
    -------
    list of (str, str)
        Sorted by path; empty when the document matches :func:`strict_schema`.
    """
    issues: list[Issue] = []
    for error in _validator().iter_errors(model):
        for issue in _issues_from(error):
            if issue not in issues:
                issues.append(issue)
    return issues
