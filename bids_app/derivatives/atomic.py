"""Atomic file writes: write beside the target, then rename over it.

A crash can leave a stray ``.tmp-*`` file but never a truncated file under a
final name, so a rerun never trusts a half-written output.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import nibabel as nb
import numpy as np

# read once: os.umask can only be read by setting it
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(target):
    """Yield a temporary path in ``target``'s folder; rename it to ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # keep the real suffix so writers that dispatch on it (nibabel, matplotlib) work
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="".join(target.suffixes), dir=target.parent)
    os.close(fd)
    # mkstemp creates 0600 files; derivatives get the mode a plain open() would
    # give, so collaborators (and other container users) can read them
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(target, obj) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    return Path(target)


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
