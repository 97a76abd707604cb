"""BIDS file names for our outputs (input names are parsed by :mod:`bids_app.io.entities`).

Names follow what FitLins and nilearn write::

    node-<Name>/sub-<s>/[ses-<x>/]sub-<s>_[ses-<x>_]task-<t>_[run-<r>_][space-<sp>_]contrast-<c>_stat-<k>_statmap.nii.gz
"""
from __future__ import annotations

import re
from pathlib import Path

from bids_app.io.entities import ENTITY_KEYS
from bids_app.spec.model import sanitize_label


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


def node_folder(node_name: str) -> str:
    """``node-<label>``: the folder of a node's outputs (and of its resume records)."""
    return f"node-{sanitize_label(node_name)}"


def output_dir(root: Path, node_name: str, entities: dict) -> Path:
    """``root/node-<Name>/[sub-X/][ses-Y/]``."""
    d = Path(root) / node_folder(node_name)
    if entities.get("subject"):
        d = d / f"sub-{entities['subject']}"
        if entities.get("session"):
            d = d / f"ses-{entities['session']}"
    return d


#: parts of our snake_case keys written as acronyms in CamelCase sidecar keys
_ACRONYMS = {"hrf": "HRF", "fir": "FIR", "vif": "VIF", "qc": "QC", "hz": "Hz", "fwhm": "FWHM", "mni": "MNI"}
#: sidecar fields whose keys are data names (design columns, entities), not field names
DATA_KEYED = ("convolved", "filled", "vif", "entities")
_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def camel_keys(obj, data_keyed=DATA_KEYED):
    """``obj`` with our snake_case keys in CamelCase, the BIDS convention for sidecar keys.

    ``n_vols`` -> ``NVols``, ``cutoff_hz`` -> ``CutoffHz``, ``hrf`` -> ``HRF``.
    Keys that are not snake_case (``RepetitionTime``, ``trial_type.faces``)
    stay, and so do the keys of the fields in ``data_keyed``, whose keys are
    column or entity names (their values are converted).
    """
    if isinstance(obj, list):
        return [camel_keys(v, data_keyed) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {}
    for key, value in obj.items():
        if isinstance(key, str) and key in data_keyed and isinstance(value, dict):
            value = {k: camel_keys(v, data_keyed) for k, v in value.items()}
        else:
            value = camel_keys(value, data_keyed)
        if isinstance(key, str) and _SNAKE.match(key):
            key = "".join(_ACRONYMS.get(part, part.capitalize()) for part in key.split("_"))
        out[key] = value
    return out
