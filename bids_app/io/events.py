"""Read BIDS ``*_events.tsv`` tables.

Only ``n/a`` (the BIDS missing-value marker) and empty cells are read as
missing: pandas' default list would also turn condition labels such as
``"NA"`` or ``"null"`` into NaN.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from bids_app.design.events import validate_events
from bids_app.io.tsv import read_tsv

NA_VALUES = ("n/a", "")


def read_events(path) -> pd.DataFrame:
    """Read a BIDS events TSV and validate it with :func:`validate_events`.

    The returned frame's ``attrs["source"]`` holds the path, for messages.

    Raises
    ------
    bids_app.errors.InputDataError
        Unreadable file, missing ``onset``/``duration``, ``n/a`` onset,
        negative duration; the message names the file and the column.
    """
    path = Path(path)
    events = read_tsv(path, "events file", keep_default_na=False, na_values=list(NA_VALUES))
    return validate_events(events, str(path))
