"""BIDS file names for our outputs and parsing of input names.

Names follow what FitLins and nilearn write::

    node-<Name>/sub-<s>/[ses-<x>/]sub-<s>_[ses-<x>_]task-<t>_[run-<r>_][space-<sp>_]contrast-<c>_stat-<k>_statmap.nii.gz
"""
from __future__ import annotations

import re
from pathlib import Path

#: BIDS short key -> pybids long entity name, in the order BIDS writes them.
ENTITY_KEYS = {
    "sub": "subject", "ses": "session", "task": "task", "acq": "acquisition",
    "ce": "ceagent", "rec": "reconstruction", "dir": "direction", "run": "run",
    "echo": "echo", "hemi": "hemi", "space": "space", "res": "resolution", "den": "density",
    "label": "label", "contrast": "contrast", "stat": "stat", "desc": "desc",
}
LONG_TO_SHORT = {v: k for k, v in ENTITY_KEYS.items()}

# GIFTI and CIFTI-2 data files have two-part extensions (.func.gii, .dtseries.nii, ...)
_EXT = re.compile(r"((?:\.(?:func|shape|label|surf|dtseries|dscalar|dlabel|ptseries|pscalar))?"
                  r"\.[A-Za-z0-9]+(?:\.gz)?)$")


def parse_entities(path) -> dict:
    """Entities of a BIDS file name (long names), plus ``suffix`` and ``extension``.

    pybids' own parser does not know the ``contrast`` and ``stat`` entities of
    statistical maps, so we read the key-value grammar directly.
    """
    name = Path(path).name
    ext_match = _EXT.search(name)
    ext = ext_match.group(1) if ext_match else ""
    stem = name[: len(name) - len(ext)]
    parts = stem.split("_")
    out: dict = {}
    if parts and "-" not in parts[-1]:
        out["suffix"] = parts.pop()
    for part in parts:
        key, sep, value = part.partition("-")
        if sep:
            out[ENTITY_KEYS.get(key, key)] = value
    out["extension"] = ext
    return out


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
