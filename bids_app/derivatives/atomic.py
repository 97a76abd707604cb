"""Atomic file writes: write beside the target, then rename over it.

A crash can leave a stray ``.tmp-*`` file but never a truncated file under a
final name, so a rerun never trusts a half-written output.

Every write is also noted in the active :class:`Journal` (when a run opened
one) if it created the file or a folder, so that a failed run removes what it
created itself and nothing else: not the user's files, not the files another
job wrote into the same output folder at the same time.

JSON is strict (RFC 8259, as BIDS requires): a non-finite number is written
as ``null`` and the object names it under ``NonFiniteValues`` with the value
it had.
"""
from __future__ import annotations

import contextvars
import json
import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nb
import numpy as np

from bids_app.errors import OutputError

# read once: os.umask can only be read by setting it
_UMASK = os.umask(0)
os.umask(_UMASK)


@dataclass
class Journal:
    """Files and folders one run created (not those it replaced), in creation order."""

    files: list[Path] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)

    def rollback(self, keep=()) -> list[Path]:
        """Remove the created files not in ``keep``, then the created folders left empty.

        Returns the files removed. Folders that another process has written
        into are not empty and stay.
        """
        keep = {Path(k) for k in keep}
        removed = []
        for path in reversed(self.files):
            if path not in keep and path.exists():
                path.unlink(missing_ok=True)
                removed.append(path)
        for folder in sorted(self.dirs, key=lambda d: len(d.parts), reverse=True):
            try:
                folder.rmdir()
            except OSError:  # not empty (another job's or a kept file) or already gone
                pass
        return removed


_journal: contextvars.ContextVar[Journal | None] = contextvars.ContextVar("journal", default=None)


@contextmanager
def journal():
    """Note every file and folder the atomic writers create until the block ends."""
    record = Journal()
    token = _journal.set(record)
    try:
        yield record
    finally:
        _journal.reset(token)


def _make_parents(folder: Path) -> None:
    missing = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    active = _journal.get()
    if active is not None:
        active.dirs += missing


@contextmanager
def atomic_path(target):
    """Yield a temporary path in ``target``'s folder; rename it to ``target`` on success.

    Raises
    ------
    OutputError
        The folder cannot be made or written (permissions, full disk, a
        file where a folder should be).
    """
    target = Path(target)
    try:
        for attempt in range(3):
            _make_parents(target.parent)
            try:
                # keep the real suffix so writers that dispatch on it (nibabel, matplotlib) work
                fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="".join(target.suffixes), dir=target.parent)
                break
            except FileNotFoundError:  # a failing job removed the folder it had made, now empty
                if attempt == 2:
                    raise
        os.close(fd)
        # mkstemp creates 0600 files; derivatives get the mode a plain open() would
        # give, so collaborators (and other container users) can read them
        os.chmod(tmp, 0o666 & ~_UMASK)
    except OSError as exc:
        raise OutputError(_cannot_write(target, exc)) from exc
    try:
        yield Path(tmp)
        existed = target.exists()
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(_cannot_write(target, exc)) from exc
        raise
    active = _journal.get()
    if active is not None and not existed:
        active.files.append(target)


def _cannot_write(target: Path, exc: OSError) -> str:
    return (f"cannot write {target}: {exc.strerror or exc}; check that OUTPUT_DIR is a writable folder "
            "with free space (or choose another OUTPUT_DIR)")


def write_json(target, obj) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(strict_json(obj), indent=2, sort_keys=True, allow_nan=False,
                                  default=_json_default) + "\n")
    return Path(target)


def strict_json(obj):
    """``obj`` with every non-finite number replaced by None; a dict at the top
    names each replaced value under ``NonFiniteValues`` (JSON path -> what it was)."""
    notes: dict[str, str] = {}
    clean = _finite(obj, "", notes)
    if notes and isinstance(clean, dict):
        clean["NonFiniteValues"] = {**clean.get("NonFiniteValues", {}), **{
            path: f"{value} (not representable in JSON, written as null)" for path, value in notes.items()}}
    return clean


def _finite(value, path: str, notes: dict):
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _finite(v, f"{path}.{k}" if path else str(k), notes) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, f"{path}[{i}]", notes) for i, v in enumerate(value)]
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        notes[path or "<root>"] = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return None
    return value


def write_text(target, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def write_tsv(target, frame, index=False) -> Path:
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, sep="\t", index=index, na_rep="n/a")
    return Path(target)


def write_nifti(target, data: np.ndarray, affine: np.ndarray, header=None) -> Path:
    """Save float32 maps (NaN outside the analysed voxels); gzip output is byte-stable."""
    img = nb.Nifti1Image(np.asarray(data, dtype=np.float32), affine, header=header)
    img.header.set_data_dtype(np.float32)
    with atomic_path(target) as tmp:
        nb.save(img, tmp)
    return Path(target)


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
