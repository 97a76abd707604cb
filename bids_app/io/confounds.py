"""Read fMRIPrep confounds tables (``desc-confounds_timeseries.tsv``)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bids_app.errors import InputDataError


def read_confounds(path) -> pd.DataFrame:
    """Read a confounds TSV (``n/a`` -> NaN); ``attrs["source"]`` holds the path.

    Raises
    ------
    bids_app.errors.InputDataError
        The file cannot be read or has no rows.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=["n/a", ""])
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{path}: cannot read confounds file ({exc})") from exc
    if table.empty:
        raise InputDataError(f"{path}: confounds file has no rows")
    table.attrs["source"] = str(path)
    return table
