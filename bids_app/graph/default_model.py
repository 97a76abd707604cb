"""The model run when none is given, as pybids' ``auto_model`` builds it.

For the dataset's tasks: one regressor per trial type (``trial_type.<value>``,
SPM HRF) plus an intercept at the Run level, a dummy contrast per trial
type; runs (and sessions, when there are several) combined by fixed effects
within each subject; a one-sample t test per condition across subjects at
the Dataset level (when there are at least two subjects). With several
tasks, the trial types are matched per run (``trial_type.*``) and every
higher node groups by task as well.
"""
from __future__ import annotations

from bids_app.design.names import level_label
from bids_app.errors import NoInputsError
from bids_app.io.events import read_events
from bids_app.io.index import FileIndex

#: SPM's and FSL's usual high-pass cutoff (128 s), written out so the model says it
HIGH_PASS_HZ = 1.0 / 128.0


def _trial_types(index: FileIndex, task: str, subjects) -> list[str]:
    events = index.select(suffix="events", extension=".tsv", task=task)
    if subjects and "subject" in events:
        events = events[events["subject"].isin(subjects)]
    values: set[str] = set()
    for path in events["path"]:
        table = read_events(path)
        if "trial_type" in table:
            values.update(level_label(v) for v in table["trial_type"].dropna())
    return sorted(values)


def dataset_default_model(bids_dir, derivatives, participant_label=None) -> dict:
    """:func:`default_model` for the dataset in ``bids_dir`` (with its ``derivatives`` folders)."""
    return default_model(FileIndex.build(bids_dir, derivatives), participant_label)


def default_model(index: FileIndex, participant_label=None) -> dict:
    """Build the default model for the dataset indexed by ``index``.

    Parameters
    ----------
    index : FileIndex
    participant_label : list of str, optional
        Subjects to consider (their events give the trial types).

    Returns
    -------
    dict
        A BIDS Stats Model (JSON-able), valid for :func:`bids_app.spec.load_model`.

    Raises
    ------
    NoInputsError
        No BOLD series, or a task without any ``trial_type`` in its events.
    """
    bold = index.select(suffix="bold", extension=[".nii.gz", ".nii"])
    if participant_label and "subject" in bold:
        bold = bold[bold["subject"].isin(participant_label)]
    if bold.empty or "task" not in bold:
        raise NoInputsError("no BOLD series to build a default model from: give --model")
    tasks = sorted(set(bold["task"].dropna()))
    trial_types = {task: _trial_types(index, task, participant_label) for task in tasks}
    empty = [t for t, values in trial_types.items() if not values]
    if empty:
        raise NoInputsError(f"task(s) {', '.join(empty)} have no events with a trial_type column, so no default "
                            "model can be built: give --model")
    subjects = sorted(set(bold["subject"].dropna())) if "subject" in bold else []
    sessions = sorted(set(bold["session"].dropna())) if "session" in bold else []
    by_task = ["task"] if len(tasks) > 1 else []
    if len(tasks) == 1:
        x = [f"trial_type.{v}" for v in trial_types[tasks[0]]]
        dummies = {"Test": "t", "Contrasts": list(x)}
    else:
        x = ["trial_type.*"]
        dummies = {"Test": "t", "Contrasts": sorted({f"trial_type.{v}" for vs in trial_types.values()
                                                     for v in vs})}
    nodes = [{
        "Level": "Run", "Name": "run", "GroupBy": ["run", "subject", *(["session"] if sessions else [])],
        "Model": {"Type": "glm", "X": [*x, 1], "HRF": {"Variables": list(x), "Model": "spm"},
                  "Options": {"HighPassFilterCutoffHz": HIGH_PASS_HZ}},
        "DummyContrasts": dummies,
    }]
    if len(sessions) > 1:
        nodes.append({"Level": "Session", "Name": "session", "GroupBy": ["subject", "session", *by_task, "contrast"],
                      "Model": {"Type": "meta", "X": [1]}, "DummyContrasts": {"Test": "t"}})
    nodes.append({"Level": "Subject", "Name": "subject", "GroupBy": ["subject", *by_task, "contrast"],
                  "Model": {"Type": "meta", "X": [1]}, "DummyContrasts": {"Test": "t"}})
    if len(subjects) > 1:
        nodes.append({"Level": "Dataset", "Name": "dataset", "GroupBy": [*by_task, "contrast"],
                      "Model": {"Type": "glm", "X": [1]}, "DummyContrasts": {"Test": "t"}})
    name = "default_" + "_".join(tasks)
    return {
        "Name": name, "BIDSModelVersion": "1.0.0",
        "Description": (f"Default model built by bids-stats (as pybids' auto_model) for task(s) {', '.join(tasks)}: "
                        "one SPM-convolved regressor per trial type, runs combined by fixed effects within "
                        "subjects, one-sample t test per condition across subjects."),
        "Input": {"task": tasks},
        "Nodes": nodes,
    }


def describe(model: dict) -> str:
    """One line naming the trial types the default model uses."""
    run = model["Nodes"][0]
    return (f"{len(run['DummyContrasts']['Contrasts'])} condition(s): "
            + ", ".join(run["DummyContrasts"]["Contrasts"]) + "; nodes: "
            + " -> ".join(n["Name"] for n in model["Nodes"]))

