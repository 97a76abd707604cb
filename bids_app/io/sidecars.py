"""Sidecar metadata of raw BIDS files, with the inheritance principle, as pybids reads it.

pybids' ``BIDSLayout.get_metadata`` is the reference, but the layout indexes
the whole dataset into SQLite first (~0.3 s for a 12-run subject, seconds
for large datasets) only to answer a handful of questions. The rule it
applies is small, and this module applies it on the file system:

* the candidates of a data file are the ``.json`` files of the same suffix
  in its folder and every folder above it, up to the dataset's top, whose
  entities are all the file's (same values; ``run-1`` equals ``run-01``);
* they are merged from the top down, so deeper files override; of several
  candidates in one folder (BIDS allows one), the first in pybids' natural
  order of names overrides the others, as in pybids;
* ``null`` values are left out;
* a key that is also an entity of the file's name (``"run": 1``) is left
  out when it agrees, and is an error when it does not (pybids raises
  ``BIDSConflictingValuesError`` while indexing).

Only the entities pybids knows in raw data count (others in a name are
ignored, as pybids ignores them). ``tests/test_io_sidecars.py`` checks the
result equals pybids' on real and generated datasets.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Callable

from bids_app.errors import InputDataError
from bids_app.io.entities import LONG_TO_SHORT, parse_entities

#: Entities of pybids' raw-BIDS configuration (short keys): only these take part in the matching.
PYBIDS_ENTITIES = frozenset({
    "sub", "ses", "sample", "task", "tracksys", "acq", "nuc", "voi", "ce", "stain", "trc", "rec", "dir",
    "run", "proc", "mod", "echo", "flip", "inv", "mt", "part", "recording", "space", "chunk"})
#: Entities pybids adds for a dataset whose description says ``"DatasetType": "derivative"``.
PYBIDS_DERIVATIVE_ENTITIES = frozenset({
    "atlas", "roi", "label", "desc", "from", "to", "mode", "hemi", "seg", "res", "den", "model", "subset"})
#: pybids' names of those entities (and of the name's other parts): metadata keys that collide with them
_PYBIDS_NAMES = {"sub": "subject", "ses": "session", "acq": "acquisition", "nuc": "nucleus", "voi": "volume",
                 "ce": "ceagent", "stain": "staining", "trc": "tracer", "rec": "reconstruction",
                 "dir": "direction", "mod": "modality", "seg": "segmentation"}
_DATATYPE = re.compile(r"^(anat|beh|dwi|eeg|fmap|func|ieeg|meg|micr|motion|mrs|nirs|perf|pet)$")


def name_entities(name: str, derivative: bool = False) -> tuple[dict, str | None, str]:
    """The pybids entities (short key -> value), suffix and extension of a file name.

    ``derivative``: the dataset is a derivative one, whose entities (``desc``,
    ``res``...) pybids also reads.
    """
    parsed = parse_entities(name)
    suffix, extension = parsed.pop("suffix", None), parsed.pop("extension", "")
    known = PYBIDS_ENTITIES | PYBIDS_DERIVATIVE_ENTITIES if derivative else PYBIDS_ENTITIES
    ents = {LONG_TO_SHORT.get(k, k): v for k, v in parsed.items()}
    return {k: v for k, v in ents.items() if k in known}, suffix, extension


def _same(key: str, a: str, b: str) -> bool:
    if key == "run" and a.isdigit() and b.isdigit():
        return int(a) == int(b)  # pybids reads run as a number
    return a == b


def natural_key(name: str) -> list:
    """pybids' natural sort key: digit runs compare as numbers, text case-insensitively."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split("([0-9]+)", name)]


def json_names(folder: Path) -> list[str]:
    """Names of the visible ``.json`` files in ``folder``, in pybids' natural order."""
    try:
        with os.scandir(folder) as entries:
            names = [e.name for e in entries if e.name.endswith(".json") and not e.name.startswith(".")
                     and e.is_file()]
    except OSError as exc:  # a folder above a file that was found: unreadable, not absent
        raise InputDataError(f"cannot list the JSON sidecars in {folder} ({exc}): the metadata of the files "
                             "below it (RepetitionTime, SliceTiming...) would be incomplete; make it readable") from exc
    return sorted(names, key=natural_key)


def inherited_metadata(path: Path, root: Path, read: Callable[[Path], dict],
                       listing: Callable[[Path], list[str]] = json_names, derivative: bool = False) -> dict:
    """Metadata of the raw data file ``path`` inside the dataset ``root`` (module docstring).

    Parameters
    ----------
    path : Path
        A data file (not a ``.json``) under ``root``.
    root : Path
        The dataset's top folder.
    read : callable
        ``read(json_path) -> dict``, e.g. a cached :func:`bids_app.io.index.read_json`.
    listing : callable
        ``listing(folder) -> names`` of the ``.json`` files of a folder, in natural order.
    derivative : bool
        ``root`` is a derivative dataset (its ``dataset_description.json``
        says so): pybids then also matches the derivative entities.

    Raises
    ------
    InputDataError
        A sidecar key that is an entity of the file's name holds another value.
    """
    path, root = Path(path), Path(root)
    ents, suffix, extension = name_entities(path.name, derivative)
    if suffix is None:
        return {}
    below = path.parent.relative_to(root).parts
    folders = [root.joinpath(*below[:depth]) for depth in range(len(below) + 1)]
    merged: dict = {}
    for folder in folders:
        matching = []
        for name in listing(folder):
            js_ents, js_suffix, _ = name_entities(name, derivative)
            if js_suffix == suffix and all(k in ents and _same(k, v, ents[k]) for k, v in js_ents.items()):
                matching.append(folder / name)
        for sidecar in reversed(matching):  # the first in natural order wins within a folder, as in pybids
            merged.update(read(sidecar))
    # copies: callers may change the values, the cache of ``read`` must not see it
    return _without_entities({k: copy.deepcopy(v) for k, v in merged.items() if v is not None}, path,
                             {**ents, "suffix": suffix, "extension": extension})


def _without_entities(meta: dict, path: Path, parts: dict) -> dict:
    """``meta`` without keys naming a part of the file's name (pybids keeps those as entities).

    ``parts``: the file's entities (short keys), suffix and extension.
    """
    named = {_PYBIDS_NAMES.get(k, k): v for k, v in parts.items()}
    if _DATATYPE.match(path.parent.name):
        named["datatype"] = path.parent.name
    out = {}
    for key, value in meta.items():
        if key not in named:
            out[key] = value
        elif str(value) != named[key]:
            raise InputDataError(f"{path}: its JSON sidecar(s) set {key!r} to {value!r}, but the file name says "
                                 f"{key} {named[key]!r}; remove the key from the sidecar or rename the file")
    return out
