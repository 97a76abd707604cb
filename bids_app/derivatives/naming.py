"""BIDS file names for our outputs (input names are parsed by :mod:`bids_app.io.entities`).

Names follow what FitLins and nilearn write::

    node-<Name>/sub-<s>/[ses-<x>/]sub-<s>_[ses-<x>_]task-<t>_[run-<r>_][space-<sp>_]contrast-<c>_stat-<k>_statmap.nii.gz
"""
from __future__ import annotations

import re
from pathlib import Path

from bids_app.io.entities import ENTITY_KEYS


def sanitize_label(label: str) -> str:
    """Make a BIDS label from a contrast name: alphanumerics only, camelCase joins.

    ``"face vs house"`` -> ``"faceVsHouse"``; ``"trial_type.face"`` -> ``"trialTypeFace"``.
    """
    words = [w for w in re.split(r"[^0-9A-Za-z]+", str(label)) if w]
    if not words:
        raise ValueError(f"cannot make a BIDS label from {label!r}")
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])


def build_name(entities: dict, suffix: str, extension: str) -> str:
    """File name from long-named entities, in BIDS order; unknown keys are dropped."""
    parts = []
    for short, long in ENTITY_KEYS.items():
        value = entities.get(long)
        if value is None or value == "":
            continue
        if long == "contrast":
            value = sanitize_label(value)
        parts.append(f"{short}-{value}")
    parts.append(suffix)
    return "_".join(parts) + extension


def output_dir(root: Path, node_name: str, entities: dict) -> Path:
    """``root/node-<Name>/[sub-X/][ses-Y/]``."""
    d = Path(root) / f"node-{sanitize_label(node_name)}"
    if entities.get("subject"):
        d = d / f"sub-{entities['subject']}"
        if entities.get("session"):
            d = d / f"ses-{entities['session']}"
    return d
