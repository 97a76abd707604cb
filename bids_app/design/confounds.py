"""fMRIPrep confounds tables (``desc-confounds_timeseries.tsv``, read by :mod:`bids_app.io.confounds`).

Missing values: fMRIPrep writes ``n/a`` in the first row(s) of derivative
and DVARS/FD columns, which have no value before the second volume. We fill
those leading gaps with the column's first valid value, as nilearn's
``load_confounds`` does (it copies row 1 into row 0), generalised to several
leading rows. Any other gap (not produced by fMRIPrep) is filled with the
previous valid value and reported as a warning. A column with no valid
value at all cannot be used and counts as absent from the run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bids_app.errors import InputDataError

NAN_POLICY = (
    "leading n/a rows take the column's first valid value (nilearn load_confounds practice); "
    "other n/a take the previous valid value; all-n/a or non-numeric columns are unusable"
)


@dataclass
class PreparedConfounds:
    """Confounds ready for the design.

    Attributes
    ----------
    table : DataFrame, shape (n_vols, n_usable)
        Numeric float64 columns without missing values.
    filled : dict
        ``{column: {"leading": n, "other": m}}`` for columns that had gaps.
    unusable : dict
        ``{column: reason}`` for columns left out.
    source : str
        File name for messages.
    """

    table: pd.DataFrame
    filled: dict = field(default_factory=dict)
    unusable: dict = field(default_factory=dict)
    source: str = "confounds"


def prepare_confounds(confounds: pd.DataFrame, n_vols: int, source: str = "") -> PreparedConfounds:
    """Check the length, apply the missing-value policy (module docstring).

    Parameters
    ----------
    confounds : DataFrame, shape (n_vols, n_columns)
        One row per volume.
    n_vols : int
        Volumes in the run's BOLD series.
    source : str
        File name for messages; defaults to ``confounds.attrs["source"]``.

    Raises
    ------
    bids_app.errors.InputDataError
        The row count differs from ``n_vols``, or a value is infinite.
    """
    source = source or confounds.attrs.get("source", "confounds")
    if len(confounds) != n_vols:
        raise InputDataError(
            f"{source}: {len(confounds)} rows but the run has {n_vols} volumes"
        )
    columns, filled, unusable = {}, {}, {}
    for col in confounds.columns:
        values = pd.to_numeric(confounds[col], errors="coerce")
        if (values.isna() & confounds[col].notna()).any():
            unusable[str(col)] = "not numeric"
            continue
        values = values.astype(np.float64)
        if np.isinf(values).any():
            raise InputDataError(f"{source}: column {col!r} has infinite values")
        missing = values.isna().to_numpy()
        if missing.all():
            unusable[str(col)] = "all n/a"
            continue
        if missing.any():
            leading = int(np.argmax(~missing))
            filled[str(col)] = {"leading": leading, "other": int(missing.sum()) - leading}
            values = values.ffill().bfill()
        columns[str(col)] = values.to_numpy()
    table = pd.DataFrame(columns, index=pd.RangeIndex(n_vols))
    return PreparedConfounds(table, filled, unusable, source)


def dense_variables(table: pd.DataFrame, run_info: RunInfo, tr: float) -> list[DenseRunVariable]:
    """One pybids DenseRunVariable per column, sampled once per volume (1/TR Hz)."""
    from bids.variables import DenseRunVariable  # pybids (~1 s) only when a design is built

    return [
        DenseRunVariable(name=col, values=table[[col]].to_numpy(), run_info=run_info,
                         source="regressors", sampling_rate=1.0 / tr)
        for col in table.columns
    ]
