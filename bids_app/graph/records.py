"""Resume records: one per finished unit of work, holding a fingerprint of its inputs and settings.

Each finished unit leaves ``OUTPUT_DIR/.bids-stats/units/node-<Name>/<entities>_unit.json``
(written last, atomically); a rerun with the same fingerprint reuses the
unit's maps instead of refitting.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from bids_app.derivatives.atomic import write_json
from bids_app.derivatives.naming import build_name
from bids_app.graph.context import Context
from bids_app.graph.units import StatMap
from bids_app.spec.model import Node


UNITS = Path(".bids-stats", "units")


def record_path(ctx: Context, node: Node, entities: dict) -> Path:
    return ctx.out / UNITS / f"node-{node.name}" / build_name(entities, "unit", ".json")


def fingerprint(ctx: Context, node: Node, input_files: list[Path], extra: dict) -> str:
    payload = {
        "node": next(n for n in ctx.model.raw["Nodes"] if n["Name"] == node.name),
        "inputs": sorted(ctx.log.hash(p) for p in input_files),
        "settings": {k: v for k, v in asdict(ctx.settings).items()
                     if k in ("estimator", "noise_model", "missing_confounds", "qc_policy", "seed")},
        "smoothing": ctx.settings.smoothing_at(node.level),
        **extra,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def reuse(ctx: Context, record: Path, fingerprint: str) -> list[StatMap] | None:
    if not record.exists():
        return None
    saved = json.loads(record.read_text())
    maps = [StatMap(m["entities"], Path(m["effect"]), Path(m["variance"]) if m["variance"] else None,
                    m["dof"], m["source_node"]) for m in saved["outputs"]]
    if saved.get("fingerprint") != fingerprint or not all(Path(p).exists() for p in saved["files"]):
        return None
    ctx.log.units.append({**saved["summary"], "reused": True})
    ctx.log.warnings.extend(saved["summary"].get("warnings", []))
    return maps


def save(ctx: Context, record: Path, fingerprint: str, maps: list[StatMap], files: list[Path], summary: dict):
    # which call fitted the unit, and when: shards into one folder each keep theirs in the merged provenance
    summary = {**summary, "command": ctx.command, "finished": datetime.now(timezone.utc).isoformat()}
    ctx.log.units.append(summary)
    write_json(record, {
        "fingerprint": fingerprint,
        "outputs": [{**asdict(m), "effect": str(m.effect), "variance": str(m.variance) if m.variance else None}
                    for m in maps],
        "files": [str(f) for f in files],
        "summary": summary,
    })


def finished_units(out: Path) -> list[dict]:
    """Summaries of every finished unit in an output folder (whose files are all still there),
    whichever call fitted it; by node, then record name."""
    summaries = []
    for path in sorted((Path(out) / UNITS).glob("node-*/*.json")):
        saved = json.loads(path.read_text())
        if all(Path(p).exists() for p in saved["files"]):
            summaries.append(saved["summary"])
    return summaries
