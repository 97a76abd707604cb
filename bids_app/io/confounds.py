"""Read fMRIPrep confounds tables (``desc-confounds_timeseries.tsv``)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bids_app.errors import InputDataError
from bids_app.io.tsv import read_tsv


def read_confounds(path) -> pd.DataFrame:
    """Read a confounds TSV (``n/a`` -> NaN); ``attrs["source"]`` holds the path.

    Raises
    ------
    bids_app.errors.InputDataError
        The file cannot be read or has no rows.
    """
    path = Path(path)
    table = read_tsv(path, "confounds file", keep_default_na=False, na_values=["n/a", ""])
    if table.empty:
        raise InputDataError(f"{path}: confounds file has no rows")
    table.attrs["source"] = str(path)
    return table
