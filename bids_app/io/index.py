"""An index of the input files: raw BIDS plus derivatives folders.

pybids' ``BIDSLayout`` does not know the ``contrast``/``stat`` entities of
statistical maps and silently skips derivatives folders without a
``dataset_description.json``, so we index file names ourselves (one row per
file, long entity names as columns). Sidecar metadata of raw files follows
the inheritance principle as pybids applies it (:mod:`bids_app.io.sidecars`),
without building a ``BIDSLayout``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from bids_app.io.entities import parse_entities
from bids_app.errors import InputDataError, InvalidDatasetError
from bids_app.io.maps import sidecar_path
from bids_app.io.sidecars import inherited_metadata, json_names
from bids_app.io.tsv import read_tsv

_INDEXED = (".nii.gz", ".nii", ".func.gii", ".tsv", ".tsv.gz", ".json")


@dataclass
class FileIndex:
    """All candidate input files.

    Attributes
    ----------
    bids_dir : Path
    derivatives : list of Path
    files : DataFrame
        One row per file: ``path``, ``root`` (which folder it came from),
        ``is_raw`` and one column per entity (``subject``, ``task``, ...).
    notes : list of str
        What the index left out and the user must hear of (links to missing
        content): warnings for provenance and the report.
    """

    bids_dir: Path
    derivatives: list[Path]
    files: pd.DataFrame = field(repr=False)
    notes: list = field(default_factory=list)

    @classmethod
    def build(cls, bids_dir, derivatives=(), exclude=()) -> "FileIndex":
        """Index ``bids_dir`` and the ``derivatives`` folders, skipping the folders in
        ``exclude`` (the output folder: outputs are never read back as inputs)."""
        # absolute: paths recorded in sidecars must not depend on the working directory
        bids_dir = Path(bids_dir).absolute()
        if not bids_dir.is_dir():
            raise InvalidDatasetError(f"BIDS directory not found: {bids_dir}")
        derivatives = [Path(d).absolute() for d in derivatives]
        for d in derivatives:
            if not d.is_dir():
                raise InvalidDatasetError(f"derivatives directory not found: {d}")
        rows = []
        # derivatives nested in bids_dir/derivatives are indexed as derivatives, not raw
        nested = bids_dir / "derivatives"
        roots = [(bids_dir, True)] + [(d, False) for d in derivatives]
        if nested.is_dir() and not any(_same(nested, d) or _inside(d, nested) for d in derivatives):
            roots.append((nested, False))
        skip = [Path(e).resolve() for e in exclude]
        notes = []
        for root, is_raw in roots:
            found, broken = _walk(root, skip)
            if broken:
                notes.append(f"{len(broken)} file(s) under {root} are links to missing content and are not used "
                             "(a DataLad dataset whose content was not retrieved? run `datalad get` on them), "
                             f"e.g. {broken[0]}")
            for path in found:
                if not path.name.endswith(_INDEXED):
                    continue
                rel_parts = path.relative_to(root).parts
                if any(p.startswith(".") for p in rel_parts):
                    continue
                if is_raw and rel_parts[0] in ("derivatives", "sourcedata", "code"):
                    continue
                # subject files anywhere; others (templates, sidecars for inheritance) at a dataset's top
                top = len(rel_parts) == 1 or (path.parent / "dataset_description.json").exists()
                if not rel_parts[-1].startswith(("sub-", "tpl-")) and not top:
                    continue
                ents = parse_entities(path)
                ents.update(path=path, root=root, is_raw=is_raw)
                rows.append(ents)
        files = pd.DataFrame(rows)
        if files.empty:
            raise InvalidDatasetError(
                f"no BIDS files found under {bids_dir}"
                + (f" or {', '.join(map(str, derivatives))}" if derivatives else "")
            )
        files = files.astype(object).where(files.notna(), None)
        return cls(bids_dir, derivatives, files, notes)

    def select(self, **filters) -> pd.DataFrame:
        """Rows whose entities match; a value may be a scalar, a list, or None (absent)."""
        # on the columns' arrays: pandas' Series arithmetic per filter cost ~10x more (called per run)
        mask = np.ones(len(self.files), dtype=bool)
        for key, value in filters.items():
            if key not in self.files:  # every file lacks the entity
                mask &= value is None
                continue
            col = self.files[key].to_numpy()
            if value is None:
                mask &= pd.isna(col)
            elif isinstance(value, (list, tuple, set)):
                allowed = {str(v) for v in value} if key != "is_raw" else set(value)
                mask &= np.fromiter((c in allowed for c in col), dtype=bool, count=len(col))
            else:
                mask &= col == (value if key == "is_raw" else str(value))
        return self.files[mask]

    def __getstate__(self) -> dict:
        # worker processes get the file table, not the sidecars read so far (rebuilt if asked)
        return {k: v for k, v in self.__dict__.items() if k not in ("_sidecars", "_json_names")}

    @cached_property
    def participants(self) -> pd.DataFrame:
        """participants.tsv of the BIDS dir (first found among it and derivatives), ``subject`` column added."""
        for root in [self.bids_dir, *self.derivatives]:
            path = root / "participants.tsv"
            if path.exists():
                table = read_tsv(path, "participants.tsv", dtype={"participant_id": str}, na_values=["n/a"])
                if "participant_id" not in table:
                    raise InputDataError(f"{path}: no participant_id column (columns: {list(table.columns)}); "
                                         "the first column must be participant_id, tab-separated")
                if table["participant_id"].isna().any():
                    raise InputDataError(f"{path}: empty participant_id in row(s) "
                                         f"{[i + 2 for i in table.index[table['participant_id'].isna()]]}")
                table["subject"] = table["participant_id"].str.removeprefix("sub-")
                return table
        subjects = sorted(s for s in self.files["subject"].dropna().unique())
        return pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects], "subject": subjects})

    @cached_property
    def _sidecars(self) -> dict:
        """Raw JSON files read so far (path -> contents); every indexed one is read at the first look-up."""
        # a malformed sidecar stops the run even when no model input inherits from it (as with pybids' layout)
        return {Path(p): read_json(p) for p in self.select(is_raw=True, extension=".json")["path"]}

    @cached_property
    def _derivative(self) -> bool:
        """Whether the BIDS dir describes itself as a derivative dataset (pybids then reads more entities)."""
        description = self.bids_dir / "dataset_description.json"
        return description.is_file() and read_json(description).get("DatasetType") == "derivative"

    @cached_property
    def _json_names(self) -> dict:
        """Folder -> names of its JSON files, as listed once."""
        return {}

    def metadata(self, path) -> dict:
        """Sidecar metadata with BIDS inheritance.

        Raw files inherit as pybids' ``BIDSLayout.get_metadata`` says
        (:func:`~bids_app.io.sidecars.inherited_metadata`); derivative files
        read their own sidecar and fall back to the raw file with the same
        acquisition entities.
        """
        path = Path(path)
        if _inside(path, self.bids_dir) and not _inside(path, self.bids_dir / "derivatives"):
            return self._raw_metadata(path)
        meta = {}
        sidecar = sidecar_path(path)
        if sidecar.exists():
            meta = read_json(sidecar)
        ents = parse_entities(path)
        raw = self.select(is_raw=True, suffix=ents.get("suffix"), extension=[".nii.gz", ".nii"],
                          **{k: ents.get(k) for k in ("subject", "session", "task", "acquisition", "run")})
        if len(raw) == 1:
            return {**self._raw_metadata(raw.iloc[0]["path"]), **meta}
        return meta

    def _raw_metadata(self, path) -> dict:
        path, root = Path(path), self.bids_dir
        if not path.is_relative_to(root):  # the same file reached through another spelling of the folder
            path, root = path.resolve(), root.resolve()
        return inherited_metadata(path, root, self._read_sidecar, self._list_json, self._derivative)

    def _read_sidecar(self, path: Path) -> dict:
        if path not in self._sidecars:
            self._sidecars[path] = read_json(path)
        return self._sidecars[path]

    def _list_json(self, folder: Path) -> list[str]:
        if folder not in self._json_names:
            self._json_names[folder] = json_names(folder)
        return self._json_names[folder]


def read_json(path) -> dict:
    """A JSON sidecar as a dict; :class:`InputDataError` naming the file when it is not one."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputDataError(f"cannot read JSON sidecar {path}: {exc}; fix the file (python -m json.tool "
                             "shows where) or remove it") from exc
    if not isinstance(value, dict):
        raise InputDataError(f"JSON sidecar {path} holds a {type(value).__name__}, not an object of key/values")
    return value


def _walk(root: Path, skip: list[Path]) -> tuple[list[Path], list[Path]]:
    """Files under ``root``, sorted, following symbolic links to files and folders
    (a DataLad dataset is a tree of links) but never a folder twice (link loops),
    and never into a folder of ``skip``; and the links to indexable files whose
    target is missing."""
    found, seen, broken, unreadable = [], set(), [], []
    # os.walk passes over a folder it cannot list unless told: a subject's data would vanish silently
    for folder, dirs, files in os.walk(root, followlinks=True, onerror=unreadable.append):
        real = Path(folder).resolve()
        if real in seen or any(real == s or real.is_relative_to(s) for s in skip):
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # hidden folders are never indexed
        for name in files:
            path = Path(folder) / name
            if path.is_file():
                found.append(path)
            elif path.is_symlink() and name.endswith(_INDEXED):
                broken.append(path)
    if unreadable:
        raise InputDataError(f"cannot list {len(unreadable)} folder(s) under {root}, so their files would be "
                             f"left out: {'; '.join(str(e) for e in unreadable[:3])}; make them readable")
    return sorted(found), broken


def _inside(path: Path, parent: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(parent).resolve())
        return True
    except ValueError:
        return False


def _same(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()
