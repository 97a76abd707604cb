"""Entity and metadata filters (model ``Input``, Edge ``Filter``, ``Options.Mask``).

Labels reach us in several types for one meaning: file names give strings
(``run-01``), pybids and models give integers (``"run": [1]``), and a numeric
participants.tsv column with an ``n/a`` is read as float (``1.0``). A filter
value therefore matches a label when both are equal as strings or, when both
read as numbers, equal as numbers.
"""
from __future__ import annotations

import math

import pandas as pd


def _as_number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def value_matches(value, allowed) -> bool:
    """Whether the label ``value`` equals one of ``allowed`` (see module docstring)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    text, number = str(value), _as_number(value)
    for candidate in allowed:
        if str(candidate) == text:
            return True
        other = _as_number(candidate)
        if number is not None and other is not None and number == other:
            return True
    return False


#: Other spellings of entities (BIDS full names, short keys) -> the names file tables use
ENTITY_ALIASES = {"description": "desc", "sub": "subject", "ses": "session", "acq": "acquisition",
                  "rec": "reconstruction", "dir": "direction", "ce": "ceagent", "res": "resolution",
                  "den": "density"}


def match_frame(frame: pd.DataFrame, filters: dict) -> pd.DataFrame:
    """Rows of a file table whose entity columns match every filter.

    A key may be written with the entity's full BIDS name (``description``
    for ``desc``) or its short key (``ses`` for ``session``). The value ``""`` matches files without the entity
    (bidspm writes ``"acquisition": [""]`` for "no acq- entity"); otherwise
    a file without the entity does not match.
    """
    for key, allowed in filters.items():
        key = ENTITY_ALIASES.get(key, key)
        values = list(allowed) if isinstance(allowed, (list, tuple, set)) else [allowed]
        absent_ok = "" in values
        if key not in frame:
            if absent_ok:
                continue
            return frame.iloc[0:0]
        frame = frame[frame[key].map(lambda v: value_matches(v, values)
                                     or (absent_ok and (v is None or (isinstance(v, float) and math.isnan(v)))))]
    return frame
