"""The state one model run carries through the graph: the model, the file index, settings, and its log."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from bids_app.io.index import FileIndex
from bids_app.graph.units import Settings
from bids_app.spec.model import StatsModel

log = logging.getLogger(__name__)


@dataclass
class RunLog:
    """What a run saw, for provenance and the report."""

    input_hashes: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    exclusions: list[dict] = field(default_factory=list)
    units: list[dict] = field(default_factory=list)
    #: files of finished units (with their records): a failed run keeps them, a rerun resumes from them
    finished: list[Path] = field(default_factory=list)

    def hash(self, path) -> str:
        key = str(Path(path).resolve())
        if key not in self.input_hashes:
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            self.input_hashes[key] = digest.hexdigest()
        return self.input_hashes[key]

    def warn(self, message: str) -> None:
        log.warning(message)
        self.warnings.append(message)

    def merge(self, other: "RunLog") -> None:
        """Add what a unit run elsewhere (a worker process) saw."""
        self.input_hashes.update(other.input_hashes)
        self.warnings += other.warnings
        self.exclusions += other.exclusions
        self.units += other.units
        self.finished += other.finished


@dataclass
class Context:
    model: StatsModel
    index: FileIndex | None  # None in run-level worker processes
    out: Path
    settings: Settings
    log: RunLog = field(default_factory=RunLog)
    #: input datasets by name, for BIDS URIs in sidecars (:func:`~bids_app.derivatives.dataset.dataset_links`)
    links: dict[str, Path] = field(default_factory=dict)
    #: the command line of this call, kept in each unit's record
    command: list[str] = field(default_factory=list)
