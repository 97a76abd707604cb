"""An output folder's history: every call into it, and the record that describes the whole folder.

Sharded runs (one ``subject`` call per participant, then one ``dataset``
call) write into one folder. Each call leaves its own record, with the
software versions that ran it, in ``OUTPUT_DIR/.bids-stats/calls/``;
``provenance.json`` and the report are then made from all calls and from
every finished unit's resume record, so after the last shard they describe
everything in the folder, each unit with the command that fitted it and when.
Shards finishing together take turns (:func:`summary_lock`): the last to
write has seen every call saved before it.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from bids_app.derivatives.atomic import write_json
from bids_app.derivatives.dataset import software_versions
from bids_app.derivatives.naming import camel_keys
from bids_app.graph.records import finished_units

CALLS = Path(".bids-stats", "calls")
LOCK = Path(".bids-stats", "summary.lock")


@contextlib.contextmanager
def summary_lock(out: Path):
    """Hold the folder's summary lock: one call at a time saves its record and writes the folder's summaries.

    Without it, a shard that read the calls before another saved its own
    could write ``provenance.json`` last and leave that call out. POSIX
    record locks (``lockf``) also hold on NFS, where HPC arrays write; the
    lock is released when the process ends, even when killed.
    """
    import fcntl

    path = Path(out) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def save_call(out: Path, record: dict) -> Path:
    """Keep this call's record, with the software versions that ran it (named by start time and
    process id, so concurrent shards do not collide)."""
    stamp = record["StartTime"].replace(":", "").replace("+", "Z")
    return write_json(Path(out) / CALLS / f"{stamp}_{os.getpid()}.json",
                      {**record, "Software": software_versions()})


def folder_record(out: Path, record: dict) -> dict:
    """This call's ``record`` widened to the whole folder.

    ``Units`` lists every finished unit (``reused``: not fitted by this call);
    ``Calls`` every call (command, level, participants, times, units fitted);
    ``Inputs``, ``Warnings`` and ``Exclusions`` are the union over calls.
    The other keys (command, settings, model, seed) are this call's. Units and
    exclusions, snake_case in the records kept for ourselves, get CamelCase
    keys like every key of ``provenance.json`` (entity names stay).
    """
    calls = [json.loads(p.read_text()) for p in sorted((Path(out) / CALLS).glob("*.json"))]
    calls.sort(key=lambda c: c["StartTime"])
    fitted = {_key(u) for u in record["Units"] if not u.get("reused")}
    units = [{**u, "reused": _key(u) not in fitted} for u in finished_units(out)]
    exclusions = _unique(e for call in calls for e in call["Exclusions"])
    inputs = {}
    for call in calls:
        inputs.update({i["Path"]: i["SHA256"] for i in call["Inputs"]})
    return {
        **record,
        "Units": camel_keys(units),
        "Inputs": [{"Path": p, "SHA256": h} for p, h in sorted(inputs.items())],
        "Warnings": list(dict.fromkeys(w for call in calls for w in call["Warnings"])),
        "Exclusions": camel_keys(exclusions),
        "Calls": [{"Command": c["Command"], "AnalysisLevel": c["AnalysisLevel"],
                   "ParticipantLabel": c["Settings"].get("ParticipantLabel"),
                   "StartTime": c["StartTime"], "EndTime": c["EndTime"],
                   "UnitsFitted": sum(not u.get("reused") for u in c["Units"]),
                   "UnitsReused": sum(bool(u.get("reused")) for u in c["Units"])} for c in calls],
    }


def _key(unit: dict) -> str:
    return json.dumps([unit["node"], unit["entities"]], sort_keys=True)


def _unique(items) -> list:
    seen = {}
    for item in items:
        seen.setdefault(json.dumps(item, sort_keys=True), item)
    return list(seen.values())
