"""Read BIDS physiological and stimulus recordings (``*_physio.tsv.gz``, ``*_stim.tsv.gz``).

What the samples mean and how they enter a design: :mod:`bids_app.design.recordings`.
"""
from __future__ import annotations

import dataclasses
import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from bids_app.design.recordings import RecordingFile
from bids_app.errors import InputDataError


def recording_file(path) -> RecordingFile:
    """The file with the JSON sidecar of the same name in its folder (if any), not read yet.

    Raises
    ------
    bids_app.errors.InputDataError
        The sidecar exists but is not readable JSON.
    """
    path = Path(path)
    sidecar = path.with_name(path.name.split(".")[0] + ".json")
    if not sidecar.exists():
        return RecordingFile(path)
    try:
        return RecordingFile(path, json.loads(sidecar.read_text()))
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{sidecar}: cannot read the JSON sidecar of {path.name} ({exc})") from exc


def read_table(file: RecordingFile) -> RecordingFile:
    """``file`` with its samples read: a headerless table, (n_rows, n_columns) float64.

    Raises
    ------
    bids_app.errors.InputDataError
        The file cannot be read, or holds text (including ``n/a``).
    """
    try:
        # header=None: the first line is a sample (pybids reads it as a header and loses it)
        table = pd.read_csv(file.path, sep="\t", header=None, dtype=np.float64, na_filter=False)
    except (OSError, EOFError, zlib.error, ValueError) as exc:  # ValueError: text, bad rows, empty
        raise InputDataError(f"{file.path}: cannot read the recording as a numeric table ({exc})") from exc
    return dataclasses.replace(file, table=table.to_numpy())


def read_used(files, used) -> tuple[RecordingFile, ...]:
    """``files`` with the tables of those for which ``used(file)`` is true read; the others are not opened."""
    return tuple(read_table(file) if used(file) else file for file in files)
