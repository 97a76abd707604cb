"""BIDS file names for our outputs and parsing of input names.

Names follow what FitLins and nilearn write::

    node-<Name>/sub-<s>/[ses-<x>/]sub-<s>_[ses-<x>_]task-<t>_[run-<r>_][space-<sp>_]contrast-<c>_stat-<k>_statmap.nii.gz
"""
from __future__ import annotations

import re
from pathlib import Path

#: BIDS short key -> pybids long entity name, in the order BIDS writes them.
ENTITY_KEYS = {
    "sub": "subject", "ses": "session", "sample": "sample", "task": "task", "tracksys": "tracksys",
    "acq": "acquisition", "nuc": "nucleus", "voi": "volume", "ce": "ceagent", "trc": "tracer",
    "stain": "stain", "rec": "reconstruction", "dir": "direction", "run": "run", "mod": "modality",
    "echo": "echo", "flip": "flip", "inv": "inversion", "mt": "mt", "part": "part", "proc": "processing",
    "hemi": "hemi", "space": "space", "split": "split", "recording": "recording", "chunk": "chunk",
    "seg": "segmentation", "res": "resolution", "den": "density",
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
    """Make a BIDS label from a model name (model, node, contrast): alphanumerics only, camelCase joins.

    The one place where a name from the model becomes part of a path: output
    folders, file names and resume records all use it, so no name can reach
    outside OUTPUT_DIR (``"x/../../tmp"`` -> ``"xTmp"``). The model validator
    rejects names that sanitise to nothing or to another name's label.

    ``"face vs house"`` -> ``"faceVsHouse"``; ``"trial_type.face"`` -> ``"trialTypeFace"``.

    Raises
    ------
    ValueError
        No letter or digit in ``label``.
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
