"""Tiny simulated BIDS datasets for a model, built from the names the model uses.

``dataset_spec`` reads a model (and, when known, the published facts of the
dataset it was written for: events columns, their types and trial types) and
says what a dataset must hold for the model to find its variables;
``write_dataset`` writes it as raw BIDS (events, participants) plus
fMRIPrep-style derivatives (preprocessed BOLD of 2x2x2 voxels, brain mask,
confounds). The BOLD is noise: these datasets test planning and execution,
not statistics.
"""
from __future__ import annotations

import fnmatch
import itertools
import json
import re
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd

TR = 2.0
N_VOLS = 40
SPACE = "MNI152NLin2009cAsym"
ENTITIES = {"subject", "session", "run", "task", "acquisition", "contrast", "space", "desc"}
_CONFOUND = re.compile(
    r"^(trans|rot)_|^(trans|rot)[xyz]?$|^cosine|comp_cor|^framewise|dvars|^global_signal|^csf|"
    r"^white_matter|^motion_outlier|^non_steady|aroma|^rmsd|^nuis|^dummy|^edge|^crown|^tcompcor|"
    r"_derivative1|_power2|^[xyz]$|^rmsd|^outlier|^scrub")


def _listify(value) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]


def _node_names(node: dict) -> list[str]:
    model = node.get("Model") or {}
    names = [x for x in model.get("X") or [] if isinstance(x, str)]
    names += [v for v in (model.get("HRF") or {}).get("Variables") or [] if isinstance(v, str)]
    for c in node.get("Contrasts") or []:
        names += [x for x in c.get("ConditionList") or [] if isinstance(x, str)]
    names += [x for x in (node.get("DummyContrasts") or {}).get("Contrasts") or [] if isinstance(x, str)]
    names = [part.strip() for n in names for part in n.split(":")]  # interactions name each factor
    return [n for n in dict.fromkeys(names) if n not in ("1", "intercept", "Intercept")]


def _level_value(pattern: str) -> list[str]:
    """Concrete level(s) for a level written with glob characters."""
    if pattern in ("*", "?"):
        return ["a", "b"]
    return [re.sub(r"\[[^\]]*\]", "1", pattern).replace("*", "1").replace("?", "1")]


def _run_variables(node: dict, events: dict, confounds: list):
    made, factored, source = set(), set(), {}
    instructions = ((node.get("Transformations") or {}).get("Instructions") or [])

    def origin(col):
        while col in source:
            col = source[col]
        return col

    def add_levels(col, levels):
        col = origin(col)
        if not isinstance(events.get(col, set()), set):
            events[col] = set()
        events.setdefault(col, set()).update(levels)

    for ins in instructions:
        for key in ("Input", "By", "Other", "Target"):
            for name in _listify(ins.get(key)):
                if not isinstance(name, str) or name in made or "*" in name:
                    continue
                col, _, level = name.partition(".")
                if level and col not in made:
                    add_levels(col, _level_value(level))
                elif _CONFOUND.search(name):
                    confounds.append(name)
                elif name not in events:
                    categorical = ins.get("Name") in ("Factor", "Replace", "Split", "Filter") \
                        or key == "By" or name == "trial_type"
                    events[name] = set() if categorical else "numeric"
        outputs = [n for n in _listify(ins.get("Output")) if isinstance(n, str)]
        if ins.get("Name") in ("Copy", "Rename"):
            for src, out in zip(_listify(ins.get("Input")), outputs):
                if isinstance(src, str) and src != out:
                    source[out] = src
                    if ins.get("Name") == "Rename" and out in events and events[out] == set():
                        del events[out]
        made.update(outputs)
        if ins.get("Name") == "Factor":
            factored.update(n for n in _listify(ins.get("Input")) if isinstance(n, str))
        if ins.get("Name") == "Replace" and isinstance(ins.get("Replace"), dict):
            for name in _listify(ins.get("Input")):
                if isinstance(name, str) and isinstance(events.get(origin(name), set()), set):
                    add_levels(name, {k for k in ins["Replace"] if isinstance(k, str)})
    for name in _node_names(node):
        col, dot, level = name.partition(".")
        if dot and col in factored:
            if not any(c in level for c in "*?["):
                add_levels(col, {level})
            continue
        if name in made or any(re.fullmatch(m.replace(".", r"\.").replace("*", ".*"), name) for m in made):
            continue
        if dot and not _CONFOUND.search(col):
            if events.get(col) == "numeric":
                events[col] = set()
            events.setdefault(col, set()).update(_level_value(level))
        elif _CONFOUND.search(name):
            confounds.append(name)
        elif "*" in name or "?" in name or "[" in name:
            continue
        elif name in events and isinstance(events[name], set) and not events[name]:
            events[name] = "numeric"  # a text-typed column the model uses as numbers
        elif name not in events:
            if "trial_type" in factored:
                events[name] = "numeric"  # trial_type is split by the model: a bare name is a column
            else:
                events.setdefault("trial_type", set()).add(name)
    for col in list(events):
        if col in made and col not in source and events[col] == set():
            del events[col]


def dataset_spec(model: dict, facts: dict | None = None, *, replicated: bool = False) -> dict:
    """What a dataset must hold for ``model``: tasks, subjects, sessions, runs, columns.

    Parameters
    ----------
    model : dict
        The model JSON.
    facts : dict, optional
        Published facts of the dataset (``Tasks`` -> ``column_names``,
        ``column_data_types``, ``trial_type_values``, ``task_runs``,
        ``task_sessions``), as the OpenNeuro FitLins specs record them.
    replicated : bool
        Enough data for every higher-level design to keep residual degrees
        of freedom, as a real study would: two runs per subject or more
        (up to three published ones; unless ``Input`` names the runs), and
        two subjects per cell of the participants factors plus two per
        numeric covariate. Otherwise one run (the first published one, if
        any) and one subject per level of the largest factor, three at least.
    """
    inp = model.get("Input") or {}
    tasks = [str(t) for t in _listify(inp.get("task"))] or list((facts or {}).get("Tasks") or {})[:1] or ["task"]
    subjects = [str(s) for s in _listify(inp.get("subject"))][:3] or ["01", "02", "03"]
    while len(subjects) < 3:
        subjects.append(f"{len(subjects) + 90}")
    events: dict = {"trial_type": set()}
    confounds: list[str] = []
    participants: dict = {}
    sessions = [str(s) for s in _listify(inp.get("session"))][:2]
    runs = [int(r) if str(r).isdigit() else r for r in _listify(inp.get("run"))][:2]
    for task in tasks:
        task_facts = ((facts or {}).get("Tasks") or {}).get(task) or {}
        types = task_facts.get("column_data_types") or {}
        for col in task_facts.get("column_names") or []:
            if col in ("onset", "duration"):
                continue
            events[col] = set() if types.get(col) == "object" else "numeric"
        if not sessions and task_facts.get("task_sessions"):
            sessions = [str(s) for s in task_facts["task_sessions"]][:2]
        if not runs and task_facts.get("task_runs"):
            runs = list(task_facts["task_runs"])[:3 if replicated else 1]
    for node in model.get("Nodes") or []:
        if not isinstance(node, dict):
            continue
        level = str(node.get("Level", "")).capitalize()
        if level == "Run":
            _run_variables(node, events, confounds)
            continue
        names = _node_names(node)
        group_by = [g for g in node.get("GroupBy") or [] if isinstance(g, str)]
        for g in group_by:
            if g not in ENTITIES and g != "run":
                participants.setdefault(g, {"a", "b"})
        made = set()
        transformations = node.get("Transformations") if isinstance(node.get("Transformations"), dict) else {}
        for ins in transformations.get("Instructions") or []:
            for name in _listify(ins.get("Input")):
                if isinstance(name, str) and name not in ENTITIES and name not in made:
                    col, dot, lev = name.partition(".")
                    if dot:
                        participants.setdefault(col, set()).update(_level_value(lev))
                    else:
                        participants.setdefault(name, set() if ins.get("Name") == "Factor" else "numeric")
            made.update(n for n in _listify(ins.get("Output")) if isinstance(n, str))
            if ins.get("Name") == "Factor":
                made.update(f"{n}." for n in _listify(ins.get("Input")) if isinstance(n, str))
        x = [e for e in (node.get("Model") or {}).get("X") or [] if isinstance(e, str)]
        for name in names:
            col, dot, lev = name.partition(".")
            if name in made or f"{col}." in made and isinstance(participants.get(col), set):
                if f"{col}." in made and dot:
                    participants[col].update(_level_value(lev))
                continue
            if name == "session" or col == "session":
                if dot:
                    sessions += [v for v in _level_value(lev) if v not in sessions]
                elif not sessions:
                    sessions = ["1", "2"]
            elif dot and col not in ENTITIES:
                if participants.get(col) == "numeric":
                    participants[col] = set()
                participants.setdefault(col, set()).update(_level_value(lev))
            elif name in x and not dot and name not in ENTITIES and "*" not in name:
                participants.setdefault(name, "numeric")
        if "session" in x and not sessions:
            sessions = ["1", "2"]
        # bare conditions of an X session column are its values (bidspm: "test", "retest")
        if "session" in x:
            bare = [n for n in names if n not in x and "." not in n and n not in participants]
            sessions += [b for b in bare if b not in sessions]
    for col, values in list(participants.items()):
        if isinstance(values, set) and not values:
            participants[col] = {"a", "b"}
    cells = int(np.prod([len(v) for v in participants.values() if isinstance(v, set)] or [1]))
    numeric = sum(v == "numeric" for v in participants.values())
    most = min(2 * cells + 2 * numeric, 32) if replicated else max(
        [len(v) for v in participants.values() if isinstance(v, set)] + [0])
    while len(subjects) < most:
        subjects.append(f"{len(subjects) + 90}")
    if replicated and not runs:
        runs = [1, 2]
    for col, values in list(events.items()):
        if isinstance(values, set) and not values:
            events[col] = {"a", "b"}
    space = [str(v) for v in _listify(inp.get("space"))][:1] or [SPACE]
    acq = [str(v) for v in _listify(inp.get("acquisition"))][:1] or [""]
    desc = [str(v) for v in _listify(inp.get("desc", inp.get("description")))][:1] or ["preproc"]
    masks = [((n.get("Model") or {}).get("Options") or {}).get("Mask") for n in model.get("Nodes") or []
             if isinstance(n, dict)]
    for filt in masks:
        if isinstance(filt, dict):
            named = [str(v) for k in ("ses", "session") for v in _listify(filt.get(k))]
            sessions = [s for s in sessions if s] + [v for v in named if v not in sessions]
    return {"masks": [m for m in masks if isinstance(m, dict)], "tasks": tasks, "subjects": subjects, "sessions": sessions or [None],
            "runs": runs or [None], "events": events, "confounds": list(dict.fromkeys(confounds)),
            "participants": participants, "space": space[0], "acquisition": acq[0], "desc": desc[0]}


def _events(spec: dict, rng: np.random.Generator) -> pd.DataFrame:
    cats = {c: sorted(map(str, v)) for c, v in spec["events"].items() if isinstance(v, set)}
    n = max([8, *(2 * len(v) for v in cats.values())])
    table = {"onset": np.arange(n) * (N_VOLS * TR * 0.9 / n) + 2.0, "duration": np.full(n, 2.0)}
    for col, values in spec["events"].items():
        if isinstance(values, set):
            levels = cats[col]
            table[col] = [levels[i % len(levels)] for i in range(n)]
        else:
            table[col] = np.round(rng.normal(1.0, 0.5, n), 3)
    return pd.DataFrame(table)


def _name(sub, ses, task, run, acq="") -> str:
    parts = [f"sub-{sub}", f"ses-{ses}" if ses else "", f"task-{task}", f"acq-{acq}" if acq else "",
             f"run-{run}" if run is not None else ""]
    return "_".join(p for p in parts if p)


def write_dataset(root: Path, spec: dict, seed: int = 0, n_vols: int = N_VOLS,
                  events=None) -> tuple[Path, Path]:
    """Write raw BIDS + fMRIPrep-style derivatives for ``spec``; returns (bids_dir, derivatives_dir).

    ``events(subject, session, task, run)`` may return a run's events table
    (real events, for instance) instead of simulated ones; ``n_vols`` volumes
    of ``TR`` seconds each.
    """
    rng = np.random.default_rng(seed)
    bids, deriv = Path(root) / "bids", Path(root) / "fmriprep"
    bids.mkdir(parents=True, exist_ok=True)
    deriv.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(json.dumps(
        {"Name": "simulated", "BIDSVersion": "1.9.0", "DatasetType": "raw"}))
    (deriv / "dataset_description.json").write_text(json.dumps(
        {"Name": "fMRIPrep (simulated)", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "fMRIPrep"}]}))
    rows = {"participant_id": [f"sub-{s}" for s in spec["subjects"]]}
    factors = {col: sorted(map(str, values)) for col, values in spec["participants"].items() if isinstance(values, set)}
    # subject i in cell i of the factors' crossing: every combination of levels is filled
    cells = list(itertools.product(*factors.values())) or [()]
    for k, col in enumerate(factors):
        rows[col] = [cells[i % len(cells)][k] for i in range(len(spec["subjects"]))]
    for col, values in spec["participants"].items():
        if not isinstance(values, set):
            rows[col] = np.round(rng.normal(30, 5, len(spec["subjects"])), 2)
    pd.DataFrame(rows).to_csv(bids / "participants.tsv", sep="\t", index=False)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    mask = nb.Nifti1Image(np.ones((2, 2, 2), np.uint8), affine)
    for task in spec["tasks"]:
        (bids / f"task-{task}_bold.json").write_text(json.dumps({"RepetitionTime": TR, "TaskName": task}))
    for sub in spec["subjects"]:
        for ses in spec["sessions"]:
            for task in spec["tasks"]:
                for run in spec["runs"]:
                    stem = _name(sub, ses, task, run, spec.get("acquisition", ""))
                    space, desc = spec.get("space", SPACE), spec.get("desc", "preproc")
                    rel = Path(f"sub-{sub}") / (f"ses-{ses}" if ses else "") / "func"
                    (bids / rel).mkdir(parents=True, exist_ok=True)
                    (deriv / rel).mkdir(parents=True, exist_ok=True)
                    table = events(sub, ses, task, run) if events else None
                    (_events(spec, rng) if table is None else table).to_csv(
                        bids / rel / f"{stem}_events.tsv", sep="\t", index=False, na_rep="n/a")
                    bold = 100 + rng.normal(size=(2, 2, 2, n_vols)).astype(np.float32)
                    pre = deriv / rel / f"{stem}_space-{space}_desc-{desc}_bold"
                    nb.save(nb.Nifti1Image(bold, affine), f"{pre}.nii.gz")
                    (Path(f"{pre}.json")).write_text(json.dumps({"RepetitionTime": TR, "TaskName": task}))
                    nb.save(mask, deriv / rel / f"{stem}_space-{space}_desc-brain_mask.nii.gz")
                    for i, filt in enumerate(spec.get("masks", [])):
                        ents = {k: str(_listify(v)[0]) for k, v in filt.items() if _listify(v)}
                        suffix = ents.pop("suffix", "mask")
                        ents.setdefault("space", space)
                        label = "_".join(f"{k}-{v}" for k, v in ents.items() if k in ("space", "label", "desc"))
                        name = f"sub-{sub}_{label}_{suffix}.nii.gz"
                        nb.save(mask, deriv / rel / name)
                    confounds = {c: rng.normal(size=n_vols) for c in
                                 ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z",
                                  "framewise_displacement", "global_signal", "csf", "white_matter",
                                  *spec["confounds"]]}
                    for c in list(confounds):
                        if "*" in c or "?" in c or "[" in c:
                            del confounds[c]
                            if not any(fnmatch.fnmatchcase(other, c) for other in confounds):
                                confounds[_level_value(c)[0]] = rng.normal(size=n_vols)
                    pd.DataFrame(confounds).to_csv(deriv / rel / f"{stem}_desc-confounds_timeseries.tsv",
                                                   sep="\t", index=False)
    return bids, deriv
