"""BIDS entities of file names: the key-value grammar, long and short names."""
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
