"""Read, validate and parse BIDS Stats Models JSON files.

>>> model = load_model("models/spec_example.json")   # doctest: +SKIP
>>> [n.name for n in model.topological_order()]      # doctest: +SKIP
['run', 'subject', 'dataset']

Every problem is reported at once in a :class:`bids_app.errors.ModelError`
(see :mod:`bids_app.spec.validate` for the rules).
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from bids_app.errors import ModelError
from bids_app.spec.model import StatsModel, model_from_dict
from bids_app.spec.schema import Issue, json_path, strict_schema
from bids_app.spec.validate import check_conditions, resolve_condition, validate_model

__all__ = [
    "StatsModel",
    "check_conditions",
    "load_model",
    "load_model_dict",
    "model_from_dict",
    "read_model",
    "resolve_condition",
    "strict_schema",
    "validate_model",
]


class _Object(dict):
    """A JSON object that remembers keys it saw more than once, with every value given."""

    duplicates: dict[str, list]


def _object_pairs(pairs: list[tuple[str, object]]) -> _Object:
    obj = _Object(pairs)
    counts: dict[str, list] = {}
    for key, value in pairs:
        counts.setdefault(key, []).append(value)
    obj.duplicates = {k: v for k, v in counts.items() if len(v) > 1}
    return obj


def _no_constant(name: str):
    # Python's json accepts NaN and Infinity; JSON does not.
    raise ValueError(f"{name} is not a JSON value; write a number")


def _plain(value, path: list, issues: list[Issue], notes: list[str]):
    """Plain dicts/lists. A key repeated with equal values is a note; with different values an issue."""
    if isinstance(value, dict):
        for key, values in getattr(value, "duplicates", {}).items():
            where = json_path([*path, key])
            plain = [_plain(v, [*path, key], [], []) for v in values]
            if all(v == plain[0] for v in plain[1:]):
                notes.append(f"{where}: key {key!r} appears {len(values)} times with the same value; "
                             "remove the repeats")
            else:
                shown = ", ".join(json.dumps(v)[:40] for v in plain)
                issues.append((where, f"key {key!r} appears {len(values)} times with different values "
                                      f"({shown}); JSON keeps only the last: keep the one you mean"))
        return {k: _plain(v, [*path, k], issues, notes) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, [*path, i], issues, notes) for i, v in enumerate(value)]
    return value


def load_model_dict(model: dict, source: str | None = None) -> StatsModel:
    """Validate a model dict and build its :class:`StatsModel`.

    Parameters
    ----------
    model : dict
        Parsed model JSON.
    source : str, optional
        Where the dict came from, shown in error messages.

    Raises
    ------
    bids_app.errors.ModelError
        With every problem found by :func:`validate_model`.
    """
    issues = validate_model(model)
    if issues:
        raise ModelError(issues, source=source)
    return model_from_dict(model)


def load_model(path: str | os.PathLike) -> StatsModel:
    """Read, validate and parse a BIDS Stats Model JSON file.

    Parameters
    ----------
    path : str or path-like
        The ``*_smdl.json`` file (UTF-8, a byte-order mark is tolerated).

    Returns
    -------
    StatsModel
        ``notes`` holds warnings (a key repeated with the same value).

    Raises
    ------
    bids_app.errors.ModelError
        As :func:`read_model`.
    """
    notes: list[str] = []
    model = model_from_dict(read_model(path, notes))
    return replace(model, notes=tuple(notes))


def read_model(path: str | os.PathLike, notes_out: list[str] | None = None) -> dict:
    """Read and validate a BIDS Stats Model JSON file, without building the model.

    ``bids-stats validate`` needs no more: it does not import numpy.

    Parameters
    ----------
    path : str or path-like
        The ``*_smdl.json`` file (UTF-8, a byte-order mark is tolerated).
    notes_out : list of str, optional
        Receives the warnings (a key repeated with the same value).

    Raises
    ------
    bids_app.errors.ModelError
        The file is missing or unreadable, is not JSON (one issue with its
        line and column), repeats a key with different values within an
        object, or fails validation; every problem is listed.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ModelError([("", "file not found: give the path to a model JSON file")],
                         source=source) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ModelError([("", f"cannot read the file: {err}")], source=source) from None
    try:
        raw = json.loads(text, object_pairs_hook=_object_pairs, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise ModelError(
            [("", f"not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}")],
            source=source,
        ) from None
    except ValueError as err:  # from _no_constant
        raise ModelError([("", f"not valid JSON: {err}")], source=source) from None
    issues: list[Issue] = []
    notes: list[str] = []
    model = _plain(raw, [], issues, notes)
    issues += validate_model(model)
    if issues:
        raise ModelError(issues, source=source)
    if notes_out is not None:
        notes_out += notes
    return model
