"""Tab-separated tables (events, confounds, participants.tsv), read strictly.

pandas reads a row with more fields than the header as extra index levels,
and one with fewer as missing values: both silently shift columns. A BIDS
TSV has as many fields on every line as in its header, so rows of another
length are an error naming the file and the line.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd

from bids_app.errors import InputDataError


def read_tsv(path, what: str, **read_csv) -> pd.DataFrame:
    """Read a TSV with a header row; ``what`` (e.g. ``"events file"``) names it in errors.

    Raises
    ------
    InputDataError
        Unreadable, empty, or a line whose field count differs from the header's.
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig") as fh:
            lines = fh.read().splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{path}: cannot read {what} ({exc})") from exc
    if not lines or not lines[0].strip():
        raise InputDataError(f"{path}: {what} is empty; it needs a header row of tab-separated column names")
    width = len(lines[0].split("\t"))
    for number, line in enumerate(lines[1:], start=2):
        if line.strip() and len(line.split("\t")) != width:
            raise InputDataError(f"{path}, line {number}: {len(line.split(chr(9)))} tab-separated field(s), the "
                                 f"header has {width}; every row of a {what} needs one value per column "
                                 "(n/a when missing), separated by tabs")
    try:
        return pd.read_csv(path, sep="\t", **read_csv)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputDataError(f"{path}: cannot read {what} ({exc})") from exc
