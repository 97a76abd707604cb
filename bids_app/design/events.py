"""Check BIDS events tables (read by :mod:`bids_app.io.events`); turn them into pybids variables."""
from __future__ import annotations

import numpy as np
import pandas as pd

from bids_app.errors import InputDataError

REQUIRED = ("onset", "duration")


def _rows(mask) -> str:
    """1-based data-row numbers (header excluded) of a boolean mask, abbreviated."""
    rows = (np.flatnonzero(np.asarray(mask)) + 1).tolist()
    shown = ", ".join(map(str, rows[:10]))
    return shown + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")


def validate_events(events: pd.DataFrame, source: str = "events") -> pd.DataFrame:
    """Check onsets and durations; return a copy with both as float64.

    Parameters
    ----------
    events : DataFrame
        One row per event; ``onset`` and ``duration`` in seconds.
    source : str
        File name used in messages.

    Raises
    ------
    bids_app.errors.InputDataError
        A required column is missing or not numeric, an onset is ``n/a``, or
        a duration is negative. ``n/a`` durations are valid BIDS and kept;
        the design refuses them only for variables it has to convolve.
    """
    missing = [c for c in REQUIRED if c not in events.columns]
    if missing:
        raise InputDataError(
            f"{source}: missing required column(s) {', '.join(map(repr, missing))} "
            f"(columns present: {', '.join(map(str, events.columns)) or 'none'})"
        )
    out = events.copy()
    for col in REQUIRED:
        values = pd.to_numeric(out[col], errors="coerce")
        bad = values.isna() & out[col].notna()
        if bad.any():
            raise InputDataError(
                f"{source}: column {col!r} has non-numeric values in row(s) {_rows(bad)}"
            )
        out[col] = values.astype(np.float64)
    if out["onset"].isna().any():
        raise InputDataError(
            f"{source}: column 'onset' is n/a in row(s) {_rows(out['onset'].isna())}"
        )
    if (out["duration"] < 0).any():
        raise InputDataError(
            f"{source}: column 'duration' is negative in row(s) {_rows(out['duration'] < 0)}"
        )
    out.attrs["source"] = source
    return out


def events_after_end(events: pd.DataFrame, duration: float) -> tuple[int, list[str]]:
    """Events starting at or after the run's end.

    Parameters
    ----------
    events : DataFrame
        With ``onset`` (s) and optionally ``trial_type``.
    duration : float
        Length of the run in seconds (volumes x TR).

    Returns
    -------
    n_late : int
        Events whose onset is >= ``duration``.
    lost : list of str
        Trial types all of whose events are late (``["all events"]`` when
        there is no ``trial_type`` column and every event is late).
    """
    late = events["onset"] >= duration
    if not late.any():
        return 0, []
    if "trial_type" in events:
        kinds = events["trial_type"].astype(str)
        lost = sorted(k for k in kinds.unique() if late[kinds == k].all())
    else:
        lost = ["all events"] if late.all() else []
    return int(late.sum()), lost


def sparse_variables(events: pd.DataFrame, run_info: RunInfo) -> list[SparseRunVariable]:
    """One pybids SparseRunVariable per events column other than onset/duration.

    As pybids does when it loads a dataset, events whose value is ``n/a`` in
    a column are left out of that column's variable, all-``n/a`` columns
    give no variable, and the run's entities index every event.
    """
    from bids.variables import SparseRunVariable  # pybids (~1 s) only when a design is built

    variables = []
    for col in events.columns:
        if col in REQUIRED:
            continue
        data = pd.DataFrame({
            "onset": events["onset"].to_numpy(np.float64),
            "duration": events["duration"].to_numpy(np.float64),
            "amplitude": events[col].to_numpy(),
        }).dropna(subset=["amplitude"])
        for entity, value in run_info.entities.items():  # pybids' index, read by GroupBy
            data[entity] = value
        if data.empty:
            continue
        variables.append(SparseRunVariable(name=str(col), data=data, run_info=run_info,
                                           source="events"))
    return variables
