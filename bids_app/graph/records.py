"""Resume records: one per finished unit of work, holding a fingerprint of its inputs and settings.

Each finished unit leaves ``OUTPUT_DIR/.bids-stats/units/node-<Name>/<entities>_unit.json``
(written last, atomically); a rerun with the same fingerprint reuses the
unit's maps instead of refitting. Records name the unit's files relative to
OUTPUT_DIR, so a copied or moved output folder resumes from its own files.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from bids_app.derivatives.atomic import write_json
from bids_app.derivatives.naming import build_name, node_folder
from bids_app.graph.context import Context
from bids_app.graph.units import StatMap
from bids_app.spec.model import Node

UNITS = Path(".bids-stats", "units")


def record_path(ctx: Context, node: Node, entities: dict) -> Path:
    return ctx.out / UNITS / node_folder(node.name) / build_name(entities, "unit", ".json")


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


def _inside(ctx: Context, path: str) -> Path | None:
    """A recorded path as a file of this output folder; None for a path leading outside it."""
    full = (ctx.out / path).resolve()
    return full if full.is_relative_to(ctx.out.resolve()) and not Path(path).is_absolute() else None


def reuse(ctx: Context, record: Path, fingerprint: str) -> list[StatMap] | None:
    """The unit's maps when its record matches ``fingerprint`` and every file it lists exists here.

    Records of older versions (absolute paths) or naming files outside the
    output folder are not trusted: the unit is refitted.
    """
    if not record.exists():
        return None
    try:
        saved = json.loads(record.read_text())
        files = [_inside(ctx, p) for p in saved["files"]]
        maps = [StatMap(m["entities"], _inside(ctx, m["effect"]),
                        _inside(ctx, m["variance"]) if m["variance"] else None, m["dof"], m["source_node"])
                for m in saved["outputs"]]
    except (ValueError, KeyError, TypeError):  # a damaged record: refit
        return None
    if saved.get("fingerprint") != fingerprint or not all(f is not None and f.exists() for f in files) \
            or any(m.effect is None for m in maps):
        return None
    ctx.log.units.append({**saved["summary"], "reused": True})
    ctx.log.warnings.extend(saved["summary"].get("warnings", []))
    return maps


def save(ctx: Context, record: Path, fingerprint: str, maps: list[StatMap], files: list[Path], summary: dict):
    # which call fitted the unit, and when: shards into one folder each keep theirs in the merged provenance
    summary = {**summary, "command": ctx.command, "finished": datetime.now(timezone.utc).isoformat()}
    ctx.log.units.append(summary)
    ctx.log.finished += [*files, record]

    def rel(path) -> str:
        return Path(path).resolve().relative_to(ctx.out.resolve()).as_posix()

    write_json(record, {
        "fingerprint": fingerprint,
        "outputs": [{**asdict(m), "effect": rel(m.effect), "variance": rel(m.variance) if m.variance else None}
                    for m in maps],
        "files": [rel(f) for f in files],
        "summary": summary,
    })


def finished_units(out: Path) -> list[dict]:
    """Summaries of every finished unit in an output folder (whose files are all still there),
    whichever call fitted it; by node, then record name."""
    summaries = []
    for path in sorted((Path(out) / UNITS).glob("node-*/*.json")):
        try:
            saved = json.loads(path.read_text())
            files, summary = saved["files"], saved["summary"]
        except (ValueError, KeyError, TypeError):  # a damaged record: its unit is refitted by the next run
            continue
        if all((Path(out) / p).exists() for p in files):
            summaries.append(summary)
    return summaries
