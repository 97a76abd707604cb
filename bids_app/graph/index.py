"""An index of the input files: raw BIDS plus derivatives folders.

pybids' ``BIDSLayout`` does not know the ``contrast``/``stat`` entities of
statistical maps and silently skips derivatives folders without a
``dataset_description.json``, so we index file names ourselves (one row per
file, long entity names as columns) and keep ``BIDSLayout`` for what it does
well: sidecar metadata with inheritance for the raw dataset.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from bids_app.derivatives.naming import parse_entities
from bids_app.errors import InputDataError, InvalidDatasetError
from bids_app.io.maps import sidecar_path

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
    """

    bids_dir: Path
    derivatives: list[Path]
    files: pd.DataFrame = field(repr=False)

    @classmethod
    def build(cls, bids_dir, derivatives=()) -> "FileIndex":
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
        for root, is_raw in roots:
            for path in sorted(root.rglob("*")):
                if not path.is_file() or not path.name.endswith(_INDEXED):
                    continue
                rel_parts = path.relative_to(root).parts
                if any(p.startswith(".") for p in rel_parts):
                    continue
                if is_raw and rel_parts[0] in ("derivatives", "sourcedata", "code"):
                    continue
                if not rel_parts[-1].startswith("sub-") and len(rel_parts) > 1:
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
        return cls(bids_dir, derivatives, files)

    def select(self, **filters) -> pd.DataFrame:
        """Rows whose entities match; a value may be a scalar, a list, or None (absent)."""
        mask = pd.Series(True, index=self.files.index)
        for key, value in filters.items():
            col = self.files[key] if key in self.files else pd.Series(None, index=self.files.index)
            if value is None:
                mask &= col.isna()
            elif isinstance(value, (list, tuple, set)):
                mask &= col.isin([str(v) for v in value] if key != "is_raw" else list(value))
            else:
                mask &= col == (value if key == "is_raw" else str(value))
        return self.files[mask]

    @cached_property
    def participants(self) -> pd.DataFrame:
        """participants.tsv of the BIDS dir (first found among it and derivatives), ``subject`` column added."""
        for root in [self.bids_dir, *self.derivatives]:
            path = root / "participants.tsv"
            if path.exists():
                table = pd.read_csv(path, sep="\t", dtype={"participant_id": str}, na_values=["n/a"])
                if "participant_id" not in table:
                    raise InputDataError(f"{path}: no participant_id column")
                table["subject"] = table["participant_id"].str.removeprefix("sub-")
                return table
        subjects = sorted(s for s in self.files["subject"].dropna().unique())
        return pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects], "subject": subjects})

    @cached_property
    def _layout(self):
        from bids import BIDSLayout

        return BIDSLayout(self.bids_dir, validate=False)

    def metadata(self, path) -> dict:
        """Sidecar metadata with BIDS inheritance.

        Raw files use pybids; derivative files read their own sidecar and fall
        back to the raw file with the same acquisition entities.
        """
        path = Path(path)
        if _inside(path, self.bids_dir) and not _inside(path, self.bids_dir / "derivatives"):
            return dict(self._layout.get_metadata(str(path)))
        meta = {}
        sidecar = sidecar_path(path)
        if sidecar.exists():
            meta = json.loads(sidecar.read_text())
        ents = parse_entities(path)
        raw = self.select(is_raw=True, suffix=ents.get("suffix"), extension=[".nii.gz", ".nii"],
                          **{k: ents.get(k) for k in ("subject", "session", "task", "acquisition", "run")})
        if len(raw) == 1:
            return {**dict(self._layout.get_metadata(str(raw.iloc[0]["path"]))), **meta}
        return meta


def _inside(path: Path, parent: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(parent).resolve())
        return True
    except ValueError:
        return False


def _same(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()
