"""The output folder: where it may be, and which model owns it.

OUTPUT_DIR must not be, contain or be contained by what we read as inputs
(it may sit under ``BIDS_DIR/derivatives``: the index skips it). The first
run that writes into a folder stamps it with the model and the settings that
shape its maps (``.bids-stats/folder.json``, created exclusively); later runs
with the same stamp (the shards of an HPC array, a rerun, the dataset level
after subject jobs) share the folder, any other is refused before writing.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from bids_app.derivatives.atomic import Journal
from bids_app.errors import OutputError
from bids_app.graph.units import Settings
from bids_app.spec.model import StatsModel

#: settings that change what a unit writes under the same file name
STAMPED_SETTINGS = ("space", "desc_label", "estimator", "noise_model", "smoothing_fwhm", "smoothing_level",
                    "missing_confounds", "qc_policy")


def check_output_dir(out: Path, bids_dir, derivatives=()) -> None:
    """Raise :class:`OutputError` if ``out`` cannot be the output folder of these inputs."""
    out_r = Path(out).resolve()
    if out_r.exists() and not out_r.is_dir():
        raise OutputError(f"OUTPUT_DIR {out} is a file, not a folder: give a folder path (it is created if absent)")
    for name, given in [("BIDS_DIR", bids_dir)] + [("--derivatives folder", d) for d in derivatives]:
        src = Path(given).resolve()
        if out_r == src:
            raise OutputError(f"OUTPUT_DIR {out} is the {name}: outputs would overwrite input files "
                              f"(e.g. dataset_description.json); use a separate folder such as "
                              f"{Path(bids_dir) / 'derivatives' / 'bids-stats'}")
        if src.is_relative_to(out_r):
            raise OutputError(f"OUTPUT_DIR {out} contains the {name} {given}: outputs and inputs would mix; "
                              "use a folder outside it")
        if name != "BIDS_DIR" and out_r.is_relative_to(src):
            raise OutputError(f"OUTPUT_DIR {out} is inside the {name} {given}, so our outputs would be read "
                              "back as inputs; use a folder outside it")
    probe = out_r
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"cannot create OUTPUT_DIR {out}: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write into {probe} (permission denied): choose a writable OUTPUT_DIR")


def stamp(model: StatsModel, settings: Settings) -> dict:
    """What identifies the outputs of a folder: the model's name and content and the stamped settings."""
    content = json.dumps(model.raw, sort_keys=True, separators=(",", ":"))
    return {"Model": model.name, "ModelSHA256": hashlib.sha256(content.encode()).hexdigest(),
            "Settings": {_camel(k): getattr(settings, k) for k in STAMPED_SETTINGS}}


def _camel(key: str) -> str:
    return "".join(w.capitalize() for w in key.split("_"))


def marker(out: Path) -> Path:
    return Path(out) / ".bids-stats" / "folder.json"


def claim_folder(out: Path, model: StatsModel, settings: Settings, written: Journal) -> None:
    """Stamp ``out`` for this model and settings, or check the stamp already there.

    Raises
    ------
    OutputError
        The folder holds another model's outputs, or the same model's made
        with other settings.
    """
    path, mine = marker(out), stamp(model, settings)
    try:
        probe = path.parent
        while not probe.exists():
            written.dirs.append(probe)
            probe = probe.parent
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump(mine, fh, indent=2, sort_keys=True)
        try:
            os.link(tmp, path)  # exclusive and complete: of two runs starting together, one stamps
            written.files.append(path)
            return
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    except OSError as exc:
        raise OutputError(f"cannot write into OUTPUT_DIR {out}: {exc.strerror or exc}") from exc
    try:
        theirs = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise OutputError(f"{path} is damaged ({exc}): if no other bids-stats job writes into {out}, "
                          "delete that file and rerun") from exc
    if theirs == mine:
        return
    if theirs.get("Model") != mine["Model"] or theirs.get("ModelSHA256") != mine["ModelSHA256"]:
        what = f"model {theirs.get('Model')!r} (sha256 {str(theirs.get('ModelSHA256'))[:12]})"
        ours = f"this model {mine['Model']!r} (sha256 {mine['ModelSHA256'][:12]})"
    else:
        diff = {k: (v, mine["Settings"].get(k)) for k, v in theirs.get("Settings", {}).items()
                if mine["Settings"].get(k) != v}
        what = f"model {mine['Model']!r} with other settings"
        ours = "this run (" + ", ".join(f"{k}: {a!r} there, {b!r} here" for k, (a, b) in diff.items()) + ")"
    raise OutputError(f"OUTPUT_DIR {out} holds the outputs of {what}; {ours} would mix with them. "
                      "Write to a new OUTPUT_DIR (or delete this one to start over); jobs of one model "
                      "(e.g. --participant-label shards) share a folder when their model and settings are equal")


def release_folder(out: Path, written: Journal, keep) -> None:
    """After a failed run's rollback: remove our stamp if nothing else is left in ``out``."""
    path = marker(out)
    if path not in written.files or not path.exists():
        return
    if all(p == path or p.is_dir() for p in Path(out).rglob("*")):
        written.rollback(keep=keep)
