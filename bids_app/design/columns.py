"""Resolve ``Model.X`` entries to design-matrix column names.

``X`` holds ``1`` (the intercept), plain column names and Unix shell-style
globs (``trans_*``, ``a_comp_cor_0[0-4]``), matched with :mod:`fnmatch` the
way pybids matches transformation inputs.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from bids_app.errors import DesignError, did_you_mean

INTERCEPT = "intercept"

_GLOB_CHARS = frozenset("*?[")


def is_intercept(entry) -> bool:
    """Whether an X entry is the intercept: ``1``, or the string ``"1"`` bidspm writes (not ``True``)."""
    return entry == "1" or (not isinstance(entry, bool) and isinstance(entry, (int, float)) and entry == 1)


def is_glob(entry) -> bool:
    """Whether a string X entry is a pattern rather than a literal name."""
    return isinstance(entry, str) and any(c in _GLOB_CHARS for c in entry)


def match_entry(entry, columns: Sequence[str]) -> list[str]:
    """Columns matched by one X entry, in ``columns`` order; empty when none.

    ``1`` matches :data:`INTERCEPT` whether or not it is in ``columns``:
    the intercept is built by the design, never read from a file.
    Matching is case-sensitive, as BIDS names are.
    """
    if is_intercept(entry):
        return [INTERCEPT]
    if not isinstance(entry, str):
        raise DesignError(f"Model.X entry {entry!r} is neither 1 nor a column name")
    if is_glob(entry):
        return [c for c in columns if fnmatch.fnmatchcase(c, entry)]
    return [entry] if entry in columns else []


def unmatched_message(entry, columns: Sequence[str]) -> str:
    """A message for an X entry that matched nothing, with close matches."""
    kind = "pattern" if is_glob(entry) else "column"
    return f"Model.X {kind} {entry!r} matches no column{did_you_mean(entry, columns, n=3)}"


def expand_x(x: Sequence, columns: Sequence[str]) -> list[str]:
    """Expand ``Model.X`` to the ordered list of matched column names.

    Parameters
    ----------
    x : sequence
        ``Model.X``: ``1`` for the intercept, column names, fnmatch globs.
    columns : sequence of str
        Available column names; glob matches keep this order.

    Returns
    -------
    list of str
        Matched names in X order, each once (first occurrence wins);
        ``1`` becomes ``"intercept"``.

    Raises
    ------
    bids_app.errors.DesignError
        When an entry matches nothing; the message names the entry and the
        closest available column names.
    """
    out: list[str] = []
    for entry in x:
        matched = match_entry(entry, columns)
        if not matched:
            raise DesignError(unmatched_message(entry, columns))
        out.extend(c for c in matched if c not in out)
    return out
