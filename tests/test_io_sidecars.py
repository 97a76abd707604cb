"""Sidecar metadata with BIDS inheritance (io/sidecars.py) equals pybids' ``BIDSLayout.get_metadata``.

pybids stays the reference: every comparison builds a ``BIDSLayout`` of the
same folder and asks it for every raw data file the file index holds. The
datasets: bids-examples layouts (file names and every JSON file, kept in
``tests/data/sidecar_layouts.json.gz``; the data files are empty there too),
the real datasets of ../shared/data, and a generated dataset with the
corner cases (several levels, several candidates in one folder, ``run-1``
against ``run-01``, ``null`` values, keys that are entities).
"""
import gzip
import json
import warnings

import pytest

from bids_app.errors import InputDataError
from bids_app.io.index import FileIndex
from conftest import REPO, real_data

LAYOUTS = json.loads(gzip.decompress((REPO / "tests" / "data" / "sidecar_layouts.json.gz").read_bytes()))


def _pybids_metadata(root) -> dict:
    from bids import BIDSLayout

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layout = BIDSLayout(root, validate=False)
    return lambda path: dict(layout.get_metadata(str(path)))


def _compare(root) -> tuple[int, int]:
    """Every raw non-JSON file of the index: ours == pybids'. Returns (files, files with metadata)."""
    index, reference = FileIndex.build(root), _pybids_metadata(root)
    files = [p for p in index.select(is_raw=True)["path"] if not p.name.endswith(".json")]
    differ = {}
    for path in files:
        ours, theirs = index.metadata(path), reference(path)
        if ours != theirs:
            differ[str(path.relative_to(root))] = (ours, theirs)
    assert differ == {}
    return len(files), sum(bool(reference(p)) for p in files)


def _materialise(name: str, root):
    dataset = LAYOUTS["datasets"][name]
    for rel in dataset["files"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).touch()
    for rel, content in dataset["json"].items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps(content))
    return root


@pytest.mark.parametrize("name", sorted(LAYOUTS["datasets"]))
def test_bids_examples_equal_pybids(name, tmp_path):
    n_files, n_with = _compare(_materialise(name, tmp_path / name))
    assert n_files >= 4 and n_with >= 3


def test_bids_examples_values(tmp_path):
    root = _materialise("synthetic", tmp_path / "synthetic")
    index = FileIndex.build(root)
    bold = root / "sub-01/ses-01/func/sub-01_ses-01_task-nback_run-01_bold.nii"
    assert index.metadata(bold) == {"TaskName": "N-Back", "RepetitionTime": 2.5}
    physio = bold.with_name("sub-01_ses-01_task-nback_run-01_physio.tsv.gz")
    assert index.metadata(physio) == LAYOUTS["datasets"]["synthetic"]["json"]["task-nback_physio.json"]


@pytest.mark.parametrize("name", ["haxby2001_sub1", "studyforrest_sub02"])
def test_real_datasets_equal_pybids(name):
    n_files, n_with = _compare(real_data(name))
    assert n_with >= 1


def _write(root, rel, content=None):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        path.touch()
    else:
        path.write_text(json.dumps(content))
    return path


@pytest.fixture
def tricky(tmp_path):
    """Sidecars at every level, competing candidates, nulls, lists, nested objects."""
    root = tmp_path / "tricky"
    _write(root, "dataset_description.json", {"Name": "tricky", "BIDSVersion": "1.9.0"})
    _write(root, "task-a_bold.json", {"RepetitionTime": 2.0, "SliceTiming": [0, 0.5, 1.0, 1.5],
                                      "Nested": {"x": 1}, "Dropped": "top"})
    _write(root, "task-a_run-1_bold.json", {"RepetitionTime": 2.5, "Flag": True})  # run-1 serves run-01
    _write(root, "task-a_acq-hi_bold.json", {"Acq": "hi"})
    _write(root, "task-b_bold.json", {"RepetitionTime": 1.0})
    _write(root, "sub-01/sub-01_task-a_bold.json", {"EchoTime": 0.03, "Dropped": None})
    _write(root, "sub-01/task-a_bold.json", {"EchoTime": 0.04, "Unprefixed": 1})  # same folder, no sub-
    _write(root, "sub-01/ses-1/sub-01_ses-1_bold.json", {"SessionLevel": "yes"})
    _write(root, "sub-01/ses-1/func/sub-01_ses-1_task-a_run-01_bold.json", {"RepetitionTime": 3.0,
                                                                             "task": "a", "suffix": "bold"})
    _write(root, "sub-01/ses-1/func/sub-01_ses-1_task-a_run-01_physio.json", {"SamplingFrequency": 100,
                                                                               "Columns": ["cardiac"]})
    _write(root, "sub-01/ses-1/func/sub-01_ses-1_task-a_foo-bar_bold.json", {"UnknownEntity": "ignored"})
    for rel in ["sub-01/ses-1/func/sub-01_ses-1_task-a_run-01_bold.nii.gz",
                "sub-01/ses-1/func/sub-01_ses-1_task-a_run-02_bold.nii.gz",
                "sub-01/ses-1/func/sub-01_ses-1_task-a_acq-hi_run-01_bold.nii.gz",
                "sub-01/ses-1/func/sub-01_ses-1_task-a_run-01_physio.tsv.gz",
                "sub-01/ses-1/func/sub-01_ses-1_task-a_run-01_events.tsv",
                "sub-01/ses-2/func/sub-01_ses-2_task-b_bold.nii.gz",
                "sub-02/func/sub-02_task-a_run-1_bold.nii.gz",
                "sub-02/func/sub-02_task-a_bold.nii"]:
        _write(root, rel)
    return root


def test_generated_corner_cases_equal_pybids(tricky):
    n_files, n_with = _compare(tricky)
    assert (n_files, n_with) == (8, 7)
    index = FileIndex.build(tricky)
    run1 = index.metadata(tricky / "sub-01/ses-1/func/sub-01_ses-1_task-a_run-01_bold.nii.gz")
    # deepest wins; of the two subject-level files the first in natural order ("sub-01_..." < "task-a_...");
    # null at the subject level removes the top-level value; keys that are the name's entities are left out
    assert run1 == {"RepetitionTime": 3.0, "SliceTiming": [0, 0.5, 1.0, 1.5], "Nested": {"x": 1}, "Flag": True,
                    "EchoTime": 0.03, "Unprefixed": 1, "SessionLevel": "yes", "UnknownEntity": "ignored"}
    run2 = index.metadata(tricky / "sub-01/ses-1/func/sub-01_ses-1_task-a_run-02_bold.nii.gz")
    assert run2["RepetitionTime"] == 2.0 and "Flag" not in run2


def test_metadata_are_copies(tricky):
    index = FileIndex.build(tricky)
    path = tricky / "sub-02/func/sub-02_task-a_bold.nii"
    index.metadata(path)["SliceTiming"].append(99)
    assert index.metadata(path)["SliceTiming"] == [0, 0.5, 1.0, 1.5]


def test_entity_key_that_contradicts_the_name(tricky):
    from bids.exceptions import BIDSConflictingValuesError

    _write(tricky, "sub-02/func/sub-02_task-a_run-1_bold.json", {"run": 2})
    with pytest.raises(InputDataError, match=r"sub-02_task-a_run-1_bold.nii.gz: its JSON sidecar\(s\) set 'run' to 2"):
        FileIndex.build(tricky).metadata(tricky / "sub-02/func/sub-02_task-a_run-1_bold.nii.gz")
    with pytest.raises(BIDSConflictingValuesError, match="Conflicting values found for entity 'run'"):  # pybids too
        _pybids_metadata(tricky)


def test_malformed_sidecar_named(tricky):
    (tricky / "task-b_bold.json").write_text("{not json")
    with pytest.raises(InputDataError, match="cannot read JSON sidecar .*task-b_bold.json"):
        FileIndex.build(tricky).metadata(tricky / "sub-02/func/sub-02_task-a_bold.nii")


def test_select_rules(tricky):
    """FileIndex.select: scalar, list, None (absent) and a column no file has."""
    (tricky / "derivatives" / "fmriprep" / "sub-02" / "func").mkdir(parents=True)
    preproc = tricky / "derivatives/fmriprep/sub-02/func/sub-02_task-a_desc-preproc_bold.nii.gz"
    preproc.touch()
    index = FileIndex.build(tricky)

    def names(**filters):
        return sorted(p.name for p in index.select(**filters)["path"])

    assert names(subject="02", suffix="bold", extension=[".nii.gz", ".nii"]) == [
        "sub-02_task-a_bold.nii", "sub-02_task-a_desc-preproc_bold.nii.gz", "sub-02_task-a_run-1_bold.nii.gz"]
    assert names(subject="02", is_raw=False) == [preproc.name]
    assert names(subject=["02"], run=None, desc=None, extension=".nii") == ["sub-02_task-a_bold.nii"]
    assert names(run=1, suffix="bold") == ["sub-02_task-a_run-1_bold.nii.gz", "task-a_run-1_bold.json"]  # as text
    assert names(session="2", extension=(".nii.gz",)) == ["sub-01_ses-2_task-b_bold.nii.gz"]
    assert names(echo="1") == [] and len(names(echo=None)) == len(index.files)


def test_index_sent_to_workers_without_sidecars(tricky):
    import pickle

    index = FileIndex.build(tricky)
    meta = index.metadata(tricky / "sub-02/func/sub-02_task-a_bold.nii")
    copy = pickle.loads(pickle.dumps(index))
    assert "_sidecars" in index.__dict__ and "_sidecars" not in copy.__dict__
    assert copy.metadata(tricky / "sub-02/func/sub-02_task-a_bold.nii") == meta


def test_entity_tables_are_pybids_configuration():
    """The entities (short keys), their pybids names and the derivative extras written in
    io/sidecars.py are those of pybids' 'bids' and 'derivatives' configurations, so that a
    pybids release adding or renaming an entity fails here instead of matching differently."""
    import re

    from bids.layout.models import Config

    from bids_app.io.sidecars import _PYBIDS_NAMES, PYBIDS_DERIVATIVE_ENTITIES, PYBIDS_ENTITIES

    def entities(config):
        found = {}
        for entity in Config.load(config).entities.values():
            key = re.search(r"([a-zA-Z]+)-\(", entity.pattern or "")
            if key:  # suffix, extension, datatype and the like have no key-value pattern
                found[key.group(1)] = entity.name
        return found

    raw, derivative = entities("bids"), entities("derivatives")
    assert set(raw) == PYBIDS_ENTITIES and len(raw) > 20
    assert set(derivative) == PYBIDS_DERIVATIVE_ENTITIES
    assert {short: _PYBIDS_NAMES.get(short, short) for short in {**raw, **derivative}} == {**raw, **derivative}


def test_an_unreadable_folder_stops_the_run_naming_it(tmp_path, monkeypatch):
    """A folder above a BOLD file that cannot be listed would silently drop its sidecars
    (the TR, the slice timing): an InputDataError names it instead."""
    import os

    from bids_app.io import sidecars

    func = tmp_path / "sub-01" / "func"
    func.mkdir(parents=True)
    (tmp_path / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.8.0"}')
    (tmp_path / "task-x_bold.json").write_text('{"RepetitionTime": 2.0}')
    bold = func / "sub-01_task-x_bold.nii.gz"
    bold.write_bytes(b"")
    index = FileIndex.build(tmp_path)
    assert index.metadata(bold) == {"RepetitionTime": 2.0}

    scandir = os.scandir

    def refuse(folder):
        if os.fspath(folder) == os.fspath(func):
            raise PermissionError(13, "Permission denied", os.fspath(folder))
        return scandir(folder)

    fresh = FileIndex.build(tmp_path)  # nothing listed yet: the first look-up lists the folders
    monkeypatch.setattr(sidecars.os, "scandir", refuse)
    with pytest.raises(InputDataError, match=r"cannot list the JSON sidecars in .*func.*Permission denied"):
        fresh.metadata(bold)

