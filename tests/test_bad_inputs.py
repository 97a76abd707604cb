"""Hostile input, misuse and faults: one test per case.

Each case asserts the exit code and the message, that nothing is left
half-written (a failed fresh run leaves no output folder), that no user file
is changed or removed and that nothing lands outside OUTPUT_DIR (a snapshot
of the whole test folder, outputs excluded, is equal before and after).
Datasets are tiny: first-level maps on a 10 x 12 x 10 grid
(``simulate_maps``), and BOLD runs of 8 x 8 x 6 voxels (``_bold_dataset``).
"""
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

import bids_app.graph.pipeline as pipeline
from bids_app.cli import main
from bids_app.report.html import WrittenReport
from bids_app.derivatives.atomic import strict_json, write_json
from simulate_maps import simulate_maps

SUBJECTS = ["01", "02", "03", "04"]
TR = 2.0
N_VOLS = 40
AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
BRAIN = np.zeros((8, 8, 6), dtype=bool)
BRAIN[1:7, 1:7, 1:5] = True  # the runs' brain mask: 144 voxels


@pytest.fixture(autouse=True)
def _no_report(monkeypatch):
    # the HTML report plots every z map; nothing here reads it
    monkeypatch.setattr(pipeline, "write_report", lambda *args, **kwargs: WrittenReport(Path("report.html"), []))


# ---------------------------------------------------------------- datasets and models

def _maps(tmp_path, subjects=SUBJECTS, runs=("1", "2"), **kwargs) -> Path:
    data = tmp_path / "maps"
    participants = pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects], "age": range(20, 20 + len(subjects))})
    simulate_maps(data, task="sim", subjects=subjects, contrasts=["a"], runs=runs, participants=participants,
                  **kwargs)
    return data


def _model(tmp_path, nodes, name="sim", **extra) -> Path:
    path = tmp_path / f"model-{len(list(tmp_path.glob('model-*')))}.json"
    path.write_text(json.dumps({"Name": name, "BIDSModelVersion": "1.0.0", "Input": {"task": ["sim"]},
                                "Nodes": nodes, **extra}))
    return path


def _node(name, level, group_by, model_type="glm", **extra):
    return {"Level": level, "Name": name, "GroupBy": list(group_by),
            "Model": {"Type": model_type, "X": [1]}, "DummyContrasts": {"Test": "t"}, **extra}


def _subject_model(tmp_path, **extra):
    return _model(tmp_path, [_node("subject", "Subject", ["subject", "contrast"], "meta")], **extra)


def _dataset_model(tmp_path, name="sim"):
    return _model(tmp_path, [_node("dataset", "Dataset", ["contrast"])], name=name)


def _bold_dataset(tmp_path, subjects=("01", "02"), n_vols=N_VOLS, seed=0) -> Path:
    """Raw BIDS: per subject one run of 8 x 8 x 6 voxels, block events, TR 2 s."""
    root = tmp_path / "bids"
    rng = np.random.default_rng(seed)
    (root).mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.9.0"}))
    (root / "task-loc_bold.json").write_text(json.dumps({"RepetitionTime": TR, "TaskName": "loc"}))
    pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects]}).to_csv(
        root / "participants.tsv", sep="\t", index=False)
    onsets = np.arange(4.0, n_vols * TR - 10, 16.0)
    events = pd.DataFrame({"onset": onsets, "duration": 8.0, "trial_type": "task"})
    frames = np.arange(n_vols) * TR
    box = ((frames[:, None] >= onsets) & (frames[:, None] < onsets + 8)).any(axis=1).astype(float)
    fmriprep = root / "derivatives" / "fmriprep"
    fmriprep.mkdir(parents=True)
    (fmriprep / "dataset_description.json").write_text(json.dumps(
        {"Name": "masks", "BIDSVersion": "1.9.0", "DatasetType": "derivative"}))
    for s in subjects:
        func = root / f"sub-{s}" / "func"
        func.mkdir(parents=True)
        data = 1000 + 10 * rng.standard_normal((8, 8, 6, n_vols)) + 8 * box
        nb.save(nb.Nifti1Image(data.astype(np.float32), AFFINE), func / f"sub-{s}_task-loc_bold.nii.gz")
        events.to_csv(func / f"sub-{s}_task-loc_events.tsv", sep="\t", index=False)
        (fmriprep / f"sub-{s}" / "func").mkdir(parents=True)
        nb.save(nb.Nifti1Image(BRAIN.astype(np.uint8), AFFINE),
                fmriprep / f"sub-{s}" / "func" / f"sub-{s}_task-loc_desc-brain_mask.nii.gz")
    return root


def _bold_model(tmp_path, levels=("Run",)):
    nodes = [{"Level": "Run", "Name": "run", "GroupBy": ["run", "subject"],
              "Transformations": {"Transformer": "pybids-transforms-v1",
                                  "Instructions": [{"Name": "Factor", "Input": ["trial_type"]}]},
              "Model": {"Type": "glm", "X": ["trial_type.task", 1],
                        "HRF": {"Variables": ["trial_type.task"], "Model": "glover"},
                        "Options": {"HighPassFilterCutoffHz": 0.01}},
              "DummyContrasts": {"Contrasts": ["trial_type.task"], "Test": "t"}}]
    if "Subject" in levels:
        nodes.append(_node("subject", "Subject", ["subject", "contrast"], "meta"))
    path = tmp_path / "bold-model.json"
    path.write_text(json.dumps({"Name": "tiny", "BIDSModelVersion": "1.0.0", "Input": {"task": ["loc"]},
                                "Nodes": nodes}))
    return path


def _bold(bids, subject="01"):
    return bids / f"sub-{subject}" / "func" / f"sub-{subject}_task-loc_bold.nii.gz"


def _rewrite_bold(path, edit):
    img = nb.load(path)
    data = np.asarray(img.dataobj, dtype=np.float32).copy()
    edit(data)
    path.unlink()
    nb.save(nb.Nifti1Image(data, img.affine), path)


# ---------------------------------------------------------------- assertions

def _snapshot(root: Path, skip=()) -> dict:
    """Every file under ``root`` (outside ``skip``) with its size and modification time."""
    skip = [Path(s).resolve() for s in skip]
    out = {}
    for path in sorted(Path(root).rglob("*")):
        real = path.resolve()
        if any(real == s or s in real.parents for s in skip) or path.is_dir():
            continue
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def _cli(*args) -> int:
    return main([str(a) for a in args])


def _fails(tmp_path, capsys, args, code, *phrases, out=None):
    """Run the CLI, expect ``code`` and every phrase in stderr, and no trace of the run."""
    out = Path(out or args[1])
    existed = out.exists()
    before = _snapshot(tmp_path, skip=[out])
    inside = _snapshot(out) if existed else None
    assert _cli(*args) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in err, f"{phrase!r} not in {err!r}"
    assert _snapshot(tmp_path, skip=[out]) == before, "a user file changed, or something landed outside OUTPUT_DIR"
    if existed:
        assert _snapshot(out) == inside, "a failed run changed the output folder"
    else:
        assert not out.exists(), f"half-written output left: {sorted(p.name for p in out.rglob('*'))}"
    assert not list(tmp_path.rglob(".tmp-*"))
    return err


def _files(out: Path) -> dict:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _statmaps(out: Path) -> dict:
    return {k: v for k, v in _files(out).items() if k.endswith("_statmap.nii.gz")}


def _no_nonfinite_json(out: Path):
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")
    for path in out.rglob("*.json"):
        json.loads(path.read_text(), parse_constant=refuse)


# ---------------------------------------------------------------- command line values

@pytest.mark.parametrize("option, value, phrase", [
    ("--alpha", "5", "between 0 and 1"), ("--alpha", "0", "between 0 and 1"), ("--alpha", "nan", "finite"),
    ("--n-perm", "-5", ">= 0"), ("--n-perm", "ten", "whole number"), ("--n-procs", "0", ">= 1"),
    ("--seed", "-1", ">= 0"), ("--cluster-threshold", "-2", "> 0"), ("--cluster-min-size", "-1", ">= 0"),
    ("--smoothing", "inf", "finite"),
])
def test_bad_cli_value_is_exit_2(tmp_path, capsys, option, value, phrase):
    data, model = _maps(tmp_path), _dataset_model(tmp_path)
    err = _fails(tmp_path, capsys, [data, tmp_path / "out", "dataset", "--model", model, option, value], 2,
                 option, phrase)
    assert value in err


# ---------------------------------------------------------------- the output folder

def test_output_dir_equal_to_bids_dir_is_refused(tmp_path, capsys):
    data, model = _maps(tmp_path), _dataset_model(tmp_path)
    before = _snapshot(data)
    assert _cli(data, data, "dataset", "--model", model) == 21
    err = capsys.readouterr().err
    assert "is the BIDS_DIR" in err and "derivatives" in err
    assert _snapshot(data) == before


def test_output_dir_containing_bids_dir_is_refused(tmp_path, capsys):
    data, model = _maps(tmp_path), _dataset_model(tmp_path)
    before = _snapshot(tmp_path)
    assert _cli(data, tmp_path, "dataset", "--model", model) == 21
    assert "contains the BIDS_DIR" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before


def test_output_dir_inside_a_derivatives_input_is_refused(tmp_path, capsys):
    data, model = _maps(tmp_path), _dataset_model(tmp_path)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "dataset_description.json").write_text("{}")
    _fails(tmp_path, capsys, [raw, data / "out", "dataset", "--model", model, "--derivatives", data], 21,
           "is inside the --derivatives folder")


def test_output_dir_that_is_a_file_is_refused(tmp_path, capsys):
    data, model = _maps(tmp_path), _dataset_model(tmp_path)
    out = tmp_path / "out"
    out.write_text("a user's file")
    _fails(tmp_path, capsys, [data, out, "dataset", "--model", model], 21, "is a file, not a folder")
    assert out.read_text() == "a user's file"


def test_unwritable_output_dir_is_refused_before_reading_data(tmp_path, capsys, monkeypatch):
    data, model = _maps(tmp_path), _dataset_model(tmp_path)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # root may write anywhere: answer as the folder's owner would, from its mode bits
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: (
            (os.stat(path).st_mode >> 6) & mode) == mode)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        _fails(tmp_path, capsys, [data, locked / "out", "dataset", "--model", model], 21, "permission denied")
    finally:
        locked.chmod(0o700)


def test_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    """ENOSPC on the third file written: exit 21 naming the file, every file written so far removed."""
    import bids_app.derivatives.atomic as atomic

    data, model = _maps(tmp_path), _dataset_model(tmp_path)
    real_replace, calls = os.replace, []

    def full(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", full)
    err = _fails(tmp_path, capsys, [data, tmp_path / "out", "dataset", "--model", model], 21,
                 "No space left on device", "free space")
    assert Path(calls[2]).name in err


def test_output_under_bids_derivatives_is_never_read_back(tmp_path):
    """OUTPUT_DIR inside BIDS_DIR/derivatives: the second run fits the same inputs, not its own maps too."""
    data, model = _maps(tmp_path), _dataset_model(tmp_path)
    out = data / "derivatives" / "bids-stats"
    assert _cli(data, out, "dataset", "--model", model) == 0
    first = _statmaps(out)
    design = next(out.rglob("*_design.json"))
    n_inputs = len(json.loads(design.read_text())["Inputs"])
    assert n_inputs == len(SUBJECTS) * 2
    shutil.rmtree(out / ".bids-stats" / "units")  # force a refit, reading inputs again
    assert _cli(data, out, "dataset", "--model", model) == 0
    assert len(json.loads(design.read_text())["Inputs"]) == n_inputs
    assert _statmaps(out) == first


def test_copied_output_folder_resumes_from_its_own_files(tmp_path):
    data, model = _maps(tmp_path), _subject_model(tmp_path)
    out = tmp_path / "out"
    assert _cli(data, out, "subject", "--model", model) == 0
    maps = _statmaps(out)
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    shutil.rmtree(out)
    assert _cli(data, moved, "subject", "--model", model) == 0
    units = json.loads((moved / "provenance.json").read_text())["Units"]
    assert len(units) == len(SUBJECTS) and all(u.get("Reused") for u in units)
    assert _statmaps(moved) == maps
    assert not out.exists()
    for record in (moved / ".bids-stats").rglob("*_unit.json"):
        saved = json.loads(record.read_text())
        assert all(not Path(p).is_absolute() for p in saved["files"])


def test_a_different_model_cannot_write_into_a_used_folder(tmp_path, capsys):
    data = _maps(tmp_path)
    out = tmp_path / "out"
    assert _cli(data, out, "subject", "--model", _subject_model(tmp_path), "--participant-label", "01") == 0
    # a shard of the same model shares the folder
    assert _cli(data, out, "subject", "--model", _subject_model(tmp_path), "--participant-label", "02") == 0
    other = _model(tmp_path, [_node("subject", "Subject", ["subject", "contrast"])], name="other")
    _fails(tmp_path, capsys, [data, out, "subject", "--model", other], 21,
           "holds the outputs of model 'sim'", "new OUTPUT_DIR")
    _fails(tmp_path, capsys, [data, out, "subject", "--model", _subject_model(tmp_path), "--estimator", "mixed"],
           21, "Estimator: 'ols' there, 'mixed' here")


# ---------------------------------------------------------------- names from the model

def test_node_name_with_path_parts_stays_inside_output_dir(tmp_path):
    data = _maps(tmp_path)
    model = _model(tmp_path, [_node("x/../../../tmp/ESCAPED", "Subject", ["subject", "contrast"], "meta")])
    out = tmp_path / "deep" / "out"
    before = _snapshot(tmp_path)
    assert _cli(data, out, "subject", "--model", model) == 0
    after = _snapshot(tmp_path, skip=[out])
    assert after == before
    assert (out / "node-xTmpESCAPED").is_dir()
    assert (out / ".bids-stats" / "units" / "node-xTmpESCAPED").is_dir()
    assert not Path("/tmp/ESCAPED").exists()


@pytest.mark.parametrize("nodes, name, phrase", [
    ([_node("sub ject", "Subject", ["subject", "contrast"], "meta"),
      _node("sub_ject", "Dataset", ["contrast"])], "sim", "both become 'subJect'"),
    ([_node("!!", "Subject", ["subject", "contrast"], "meta")], "sim", "has no letter or digit"),
    ([_node("subject", "Subject", ["subject", "contrast"], "meta")], "...", "model name '...'"),
])
def test_names_that_sanitise_alike_or_to_nothing_are_model_errors(tmp_path, capsys, nodes, name, phrase):
    data, model = _maps(tmp_path), _model(tmp_path, nodes, name=name)
    _fails(tmp_path, capsys, [data, tmp_path / "out", "subject", "--model", model], 3, phrase)


def test_contrast_names_that_sanitise_alike_are_model_errors(tmp_path, capsys):
    data = _maps(tmp_path)
    node = _node("subject", "Subject", ["subject", "contrast"], "meta")
    node["Contrasts"] = [{"Name": n, "ConditionList": [1], "Weights": [1], "Test": "t"} for n in ("a b", "a_b")]
    model = _model(tmp_path, [node])
    _fails(tmp_path, capsys, [data, tmp_path / "out", "subject", "--model", model], 3, "both become 'aB'")


# ---------------------------------------------------------------- malformed tables and sidecars

def test_malformed_participants_tsv(tmp_path, capsys):
    data, model = _maps(tmp_path), _subject_model(tmp_path)
    (data / "participants.tsv").write_text("participant_id\tage\nsub-01\t20\t99\textra\nsub-02\t21\n")
    _fails(tmp_path, capsys, [data, tmp_path / "out", "subject", "--model", model], 19,
           "participants.tsv, line 2", "4 tab-separated field(s), the header has 2")


def test_participants_tsv_without_participant_id(tmp_path, capsys):
    data, model = _maps(tmp_path), _subject_model(tmp_path)
    (data / "participants.tsv").write_text("subject,age\nsub-01,20\n")
    _fails(tmp_path, capsys, [data, tmp_path / "out", "subject", "--model", model], 19,
           "no participant_id column")


@pytest.mark.parametrize("subject, content, phrase", [
    ("sub-02", '{"DegreesOfFreedom": 50,', "cannot read JSON sidecar {sidecar}"),
    ("sub-01", "[50]", "JSON sidecar {sidecar} holds a list"),
], ids=["malformed", "not an object"])
def test_bad_json_sidecar_of_a_map(tmp_path, capsys, subject, content, phrase):
    data, model = _maps(tmp_path), _subject_model(tmp_path)
    sidecar = next(data.rglob(f"{subject}_*_stat-effect_statmap.json"))
    sidecar.write_text(content)
    _fails(tmp_path, capsys, [data, tmp_path / "out", "subject", "--model", model], 19,
           phrase.format(sidecar=sidecar))


def test_four_d_group_map(tmp_path, capsys):
    data, model = _maps(tmp_path), _subject_model(tmp_path)
    path = next(data.rglob("sub-03_*run-2*_stat-effect_statmap.nii.gz"))
    img = nb.load(path)
    nb.save(nb.Nifti1Image(np.stack([np.asarray(img.dataobj)] * 3, axis=-1), img.affine), path)
    _fails(tmp_path, capsys, [data, tmp_path / "out", "subject", "--model", model], 19,
           f"statistical map {path} is 4-D", "one 3-D volume")


@pytest.mark.parametrize("tr, phrase", [("2.0s", "'2.0s'"), (-2, "-2"), (None, "missing")])
def test_bad_repetition_time(tmp_path, capsys, tr, phrase):
    bids = _bold_dataset(tmp_path)
    sidecar = bids / "task-loc_bold.json"
    meta = json.loads(sidecar.read_text())
    meta.pop("RepetitionTime")
    if tr is not None:
        meta["RepetitionTime"] = tr
    sidecar.write_text(json.dumps(meta))
    _fails(tmp_path, capsys, [bids, tmp_path / "out", "run", "--model", _bold_model(tmp_path)], 19,
           "RepetitionTime", phrase, "sub-01_task-loc_bold.nii.gz")


def test_malformed_raw_json_sidecar(tmp_path, capsys):
    bids = _bold_dataset(tmp_path)
    (bids / "task-loc_bold.json").write_text('{"RepetitionTime": 2.0')
    _fails(tmp_path, capsys, [bids, tmp_path / "out", "run", "--model", _bold_model(tmp_path)], 19,
           "cannot read JSON sidecar", "task-loc_bold.json")


# ---------------------------------------------------------------- strict JSON

def test_non_finite_numbers_are_null_with_the_reason(tmp_path):
    path = write_json(tmp_path / "x.json", {"A": float("inf"), "B": [1.0, np.float64("nan")], "C": 2})
    saved = json.loads(path.read_text(), parse_constant=lambda t: pytest.fail(f"token {t}"))
    assert saved["A"] is None and saved["B"] == [1.0, None] and saved["C"] == 2
    assert set(saved["NonFiniteValues"]) == {"A", "B[1]"} and "Infinity" in saved["NonFiniteValues"]["A"]
    assert strict_json({"A": 1.5}) == {"A": 1.5}


def test_fixed_effects_without_input_dof_write_null_dof_with_a_note(tmp_path):
    data = _maps(tmp_path, dof=None)
    out = tmp_path / "out"
    assert _cli(data, out, "subject", "--model", _subject_model(tmp_path)) == 0
    _no_nonfinite_json(out)
    side = json.loads(next(out.rglob("*_stat-t_statmap.json")).read_text())
    assert side["DegreesOfFreedom"] is None and "z = t" in side["DegreesOfFreedomNote"]


# ---------------------------------------------------------------- concurrency

def test_hpc_array_failing_job_keeps_the_other_jobs_files(tmp_path, monkeypatch):
    """Job B (sub-02) creates the fresh folder; job A (sub-01, another process) writes and finishes;
    then B fails before finishing a unit. Forced order: A runs inside B's first unit. B's clean-up
    removes only its own files (before: the whole folder it had created)."""
    import bids_app.graph.executor as executor

    data, model = _maps(tmp_path, subjects=["01", "02"]), _subject_model(tmp_path)
    out = tmp_path / "out"
    real_unit = executor.run_group
    done = {}

    def interleaved(ctx, plan):
        if not done:
            job_a = subprocess.run([sys.executable, "-m", "bids_app", str(data), str(out), "subject",
                                    "--model", str(model), "--participant-label", "01"],
                                   capture_output=True, text=True)
            assert job_a.returncode == 0, job_a.stderr
            done["a"] = _files(out)
        raise RuntimeError("job B killed (simulated)")

    monkeypatch.setattr(executor, "run_group", interleaved)
    with pytest.raises(RuntimeError, match="simulated"):
        _cli(data, out, "subject", "--model", model, "--participant-label", "02")
    after = _files(out)
    lost = {k for k in done["a"] if k not in after or after[k] != done["a"][k]}
    assert not lost, f"job B removed or changed job A's files: {sorted(lost)}"
    assert after == done["a"] and any("node-subject/sub-01" in k for k in after)

    monkeypatch.setattr(executor, "run_group", real_unit)
    assert _cli(data, out, "subject", "--model", model, "--participant-label", "02") == 0
    assert {k: v for k, v in _files(out).items() if "sub-01" in k} == {k: v for k, v in done["a"].items()
                                                                        if "sub-01" in k}
    # each job keeps its own record (with the software that ran it); provenance.json describes the folder
    runs = [json.loads(p.read_text()) for p in sorted((out / ".bids-stats" / "calls").glob("*.json"))]
    assert sorted(r["Settings"]["ParticipantLabel"][0] for r in runs) == ["01", "02"]
    assert all(r["Software"]["bids-stats"] for r in runs)


def test_failing_run_removes_only_its_own_files_from_an_existing_folder(tmp_path, monkeypatch):
    """A user's file in OUTPUT_DIR, a finished unit, and a crash in the middle of the next unit's writing."""
    import bids_app.graph.space as space

    data, model = _maps(tmp_path, subjects=["01", "02"]), _subject_model(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    real_write, writes = space.write_map, []

    def crash_on_the_second_unit(*args, **kwargs):
        writes.append(args[0])
        if any("sub-02" in str(w) for w in writes):
            raise KeyboardInterrupt
        return real_write(*args, **kwargs)

    monkeypatch.setattr(space, "write_map", crash_on_the_second_unit)
    with pytest.raises(KeyboardInterrupt):
        _cli(data, out, "subject", "--model", model)
    assert (out / "notes.txt").read_text() == "mine"
    assert list((out / "node-subject").glob("sub-01/*_statmap.nii.gz"))  # the finished unit stays
    assert not (out / "node-subject" / "sub-02").exists()  # the unfinished one is gone


def test_a_bad_group_stops_its_node_before_any_group_writes(tmp_path, capsys):
    """Every group of a node is planned (read, QC'd, designed) before the first writes: sub-03's maps
    are all n/a, so nothing of sub-01 or sub-02 (planned before it) is written either."""
    data, model = _maps(tmp_path), _subject_model(tmp_path)
    bad = sorted(data.rglob("sub-03_*stat-effect_statmap.nii.gz"))
    assert len(bad) == 2
    for path in bad:
        img = nb.load(path)
        nb.save(nb.Nifti1Image(np.full(img.shape, np.nan, dtype=np.float32), img.affine), path)
    out = tmp_path / "out"
    assert _cli(data, out, "subject", "--model", model) != 0
    assert "sub-03_task-sim_run-2_space-MNI152NLin2009cAsym_contrast-a_stat-effect_statmap.nii.gz: all values are NaN" \
        in capsys.readouterr().err
    assert not list(out.rglob("*_statmap.nii.gz")) and not list(out.rglob("*_unit.json"))


# ---------------------------------------------------------------- BOLD data, read in full while planning

def _prov(out):
    return json.loads((out / "provenance.json").read_text())


def _z(out, subject):
    return np.asarray(nb.load(next((out / "node-run").rglob(f"sub-{subject}_*contrast-trialTypeTask_stat-z_statmap.nii.gz")))
                      .dataobj, dtype=np.float64)


def test_a_run_whose_file_is_a_link_to_missing_content_is_a_warning_in_provenance(tmp_path):
    """A DataLad dataset whose content was not all retrieved: sub-03's BOLD is a link to nothing.
    The other runs are fitted, and the run left out is a warning in provenance (so in the report),
    not only a line on stderr."""
    bids = _bold_dataset(tmp_path, subjects=("01", "02"))
    missing = bids / "sub-03" / "func" / "sub-03_task-loc_bold.nii.gz"
    missing.parent.mkdir(parents=True)
    missing.symlink_to(tmp_path / "annex" / "MD5E-s1234--abc.nii.gz")
    out = tmp_path / "out"
    assert _cli(bids, out, "run", "--model", _bold_model(tmp_path)) == 0
    [warning] = [w for w in _prov(out)["Warnings"] if "links to missing content" in w]
    assert warning.startswith("inputs: 1 file(s) under") and "sub-03_task-loc_bold.nii.gz" in warning
    assert "datalad get" in warning
    assert "sub-03_task-loc_bold.nii.gz are links to missing content" not in warning  # the count leads
    assert sorted(p.name.split("_")[0] for p in (out / "node-run").rglob("*_stat-z_statmap.nii.gz")) == \
        ["sub-01", "sub-02"]


@pytest.mark.parametrize("value, count, kind", [(np.nan, 8, "8 with NaN/inf values"),
                                                (np.inf, 8, "8 with NaN/inf values"),
                                                (0.0, 8, "0 with NaN/inf values, 8 constant over time")])
def test_bad_voxels_are_excluded_and_counted(tmp_path, value, count, kind):
    bids = _bold_dataset(tmp_path)

    def spoil(data):
        data[2:4, 2:4, 2:4, :] = value  # 8 voxels inside the brain mask
        if np.isnan(value):
            data[0, 0, 0, 3] = np.nan  # outside the mask: not counted
    _rewrite_bold(_bold(bids, "02"), spoil)
    out = tmp_path / "out"
    assert _cli(bids, out, "run", "--model", _bold_model(tmp_path)) == 0
    warnings = [w for w in _prov(out)["Warnings"] if "unusable" in w]
    assert len(warnings) == 1 and "sub-02_task-loc_bold.nii.gz" in warnings[0]
    assert f"{count} of the 144 mask voxels are unusable ({kind}" in warnings[0]
    [excl] = _prov(out)["Exclusions"]
    assert excl["Voxels"] == count and excl["Run"] == "sub-02 task-loc"
    z = _z(out, "02")
    assert np.isnan(z[2:4, 2:4, 2:4]).all()
    assert np.isfinite(z[BRAIN]).sum() == BRAIN.sum() - count
    assert np.isfinite(_z(out, "01")[BRAIN]).all()


def test_bad_voxels_stop_the_run_under_qc_policy_fail(tmp_path, capsys):
    bids = _bold_dataset(tmp_path)
    _rewrite_bold(_bold(bids, "02"), lambda d: d.__setitem__((slice(2, 4), slice(2, 4), 2, slice(None)), np.nan))
    _fails(tmp_path, capsys, [bids, tmp_path / "out", "run", "--model", _bold_model(tmp_path), "--qc-policy", "fail"],
           19, "sub-02_task-loc_bold.nii.gz (sub-02 task-loc)", "4 of the 144 mask voxels are unusable",
           "--qc-policy exclude")


@pytest.mark.parametrize("spoil, phrase", [
    (lambda d: d.__setitem__((Ellipsis, 5), np.nan), "volume 5 (0-based): no finite value"),
    (lambda d: d.__setitem__((Ellipsis, 7), 0.0), "volume 7 (0-based): every voxel is 0"),
    (lambda d: d.__setitem__(Ellipsis, np.nan), f"{N_VOLS} of {N_VOLS} volumes are unusable"),
    (lambda d: d.__setitem__(Ellipsis, 0.0), f"{N_VOLS} of {N_VOLS} volumes are unusable"),
])
def test_unusable_volumes_stop_before_writing(tmp_path, capsys, spoil, phrase):
    bids = _bold_dataset(tmp_path)
    _rewrite_bold(_bold(bids, "02"), spoil)
    _fails(tmp_path, capsys, [bids, tmp_path / "out", "run", "--model", _bold_model(tmp_path)], 19,
           "sub-02_task-loc_bold.nii.gz (sub-02 task-loc)", phrase, "check the preprocessing")


@pytest.mark.parametrize("procs", [[], ["--n-procs", "2"]], ids=["serial", "procs"])
def test_damaged_gzip_stream_is_found(tmp_path, capsys, procs):
    """Bytes flipped in the middle of the compressed stream; the header still reads. With --n-procs
    the scans run in worker processes: the same error, and still nothing written."""
    bids = _bold_dataset(tmp_path, subjects=("01", "02", "03"))
    path = _bold(bids, "02")
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 16] = bytes(b ^ 0x5A for b in raw[middle:middle + 16])
    path.write_bytes(bytes(raw))
    nb.load(path).shape  # the header is fine
    _fails(tmp_path, capsys, [bids, tmp_path / "out", "run", "--model", _bold_model(tmp_path), *procs], 19,
           f"cannot read BOLD image {path}", "damaged")


@pytest.mark.parametrize("procs", [[], ["--n-procs", "2"]], ids=["serial", "procs"])
def test_truncated_gzip_is_found(tmp_path, capsys, procs):
    bids = _bold_dataset(tmp_path, subjects=("01", "02", "03"))
    path = _bold(bids, "02")
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    _fails(tmp_path, capsys, [bids, tmp_path / "out", "run", "--model", _bold_model(tmp_path), *procs], 19,
           f"cannot read BOLD image {path}", "truncated")


def test_too_few_volumes_for_the_design(tmp_path, capsys):
    bids = _bold_dataset(tmp_path)
    events = bids / "sub-02" / "func" / "sub-02_task-loc_events.tsv"
    table = pd.read_csv(events, sep="\t")
    pd.concat([pd.DataFrame({"onset": [0.0], "duration": 2.0, "trial_type": "task"}), table]).to_csv(
        events, sep="\t", index=False)
    img = nb.load(_bold(bids, "02"))
    short = np.asarray(img.dataobj)[..., :2]
    _bold(bids, "02").unlink()
    nb.save(nb.Nifti1Image(short, img.affine), _bold(bids, "02"))
    _fails(tmp_path, capsys, [bids, tmp_path / "out", "run", "--model", _bold_model(tmp_path)], 20,
           "sub-02_task-loc_bold.nii.gz (sub-02 task-loc): 2 volumes for", "degrees of freedom", "BOLD complete")


def test_condition_whose_events_all_fall_after_the_run(tmp_path, capsys):
    bids = _bold_dataset(tmp_path)
    events = bids / "sub-02" / "func" / "sub-02_task-loc_events.tsv"
    table = pd.read_csv(events, sep="\t")
    table["onset"] += N_VOLS * TR
    table.to_csv(events, sep="\t", index=False)
    _fails(tmp_path, capsys, [bids, tmp_path / "out", "run", "--model", _bold_model(tmp_path)], 19,
           f"{events} (sub-02 task-loc): every event of 'task' starts after the run ends (40 volumes x 2 s = 80 s)")


def test_events_partly_after_the_run_are_counted(tmp_path):
    bids = _bold_dataset(tmp_path)
    events = bids / "sub-02" / "func" / "sub-02_task-loc_events.tsv"
    table = pd.read_csv(events, sep="\t")
    pd.concat([table, pd.DataFrame({"onset": [200.0, 300.0], "duration": 8.0, "trial_type": "task"})]).to_csv(
        events, sep="\t", index=False)
    out = tmp_path / "out"
    assert _cli(bids, out, "run", "--model", _bold_model(tmp_path)) == 0
    assert any("sub-02" in w and "2 event(s) start after the run ends (80 s)" in w for w in _prov(out)["Warnings"])


def test_probabilistic_mask_is_thresholded_at_one_half(tmp_path):
    bids = _bold_dataset(tmp_path)
    mask = bids / "derivatives/fmriprep/sub-01/func/sub-01_task-loc_desc-brain_mask.nii.gz"
    prob = np.where(BRAIN, 0.9, 0.2)
    prob[1, 1, 1] = 0.4  # inside the box but below one half
    mask.unlink()
    nb.save(nb.Nifti1Image(prob.astype(np.float32), AFFINE), mask)
    out = tmp_path / "out"
    assert _cli(bids, out, "run", "--model", _bold_model(tmp_path), "--participant-label", "01") == 0
    written = np.asarray(nb.load(next(out.rglob("sub-01_*_mask.nii.gz"))).dataobj) > 0
    expected = BRAIN.copy()
    expected[1, 1, 1] = False
    np.testing.assert_array_equal(written, expected)
    design = json.loads(next(out.rglob("sub-01_*_design.json")).read_text())
    assert ">= 0.5" in json.dumps(design)


# ---------------------------------------------------------------- entities, variants and masks

def _fmriprep_variants(tmp_path, variants, subjects=("01", "02")):
    """The tiny dataset with its BOLD also as fMRIPrep outputs, one per entity string in ``variants``."""
    bids = _bold_dataset(tmp_path, subjects=subjects)
    for s in subjects:
        func = bids / "derivatives" / "fmriprep" / f"sub-{s}" / "func"
        for variant in variants:
            stem = f"sub-{s}_task-loc_{variant}"
            shutil.copy(_bold(bids, s), func / f"{stem}_desc-preproc_bold.nii.gz")
            (func / f"{stem}_desc-preproc_bold.json").write_text(json.dumps({"RepetitionTime": TR}))
            shutil.copy(func / f"sub-{s}_task-loc_desc-brain_mask.nii.gz", func / f"{stem}_desc-brain_mask.nii.gz")
    return bids


def test_two_resolutions_of_one_run_must_be_selected(tmp_path, capsys):
    bids = _fmriprep_variants(tmp_path, ["space-MNI_res-1", "space-MNI_res-2"])
    _fails(tmp_path, capsys, [bids, tmp_path / "out", "run", "--model", _bold_model(tmp_path)], 19,
           "sub-01 task-loc is present in 2 versions that differ in resolution",
           '"Input": {"resolution": ["1"]}')


def test_the_models_input_selects_resolution_and_names_keep_it(tmp_path):
    bids = _fmriprep_variants(tmp_path, ["space-MNI_res-1", "space-MNI_res-2"])
    model = _bold_model(tmp_path)
    spec = json.loads(model.read_text())
    spec["Input"]["resolution"] = ["2"]
    model.write_text(json.dumps(spec))
    out = tmp_path / "out"
    assert _cli(bids, out, "run", "--model", model) == 0
    names = sorted(p.name for p in out.rglob("*_stat-z_statmap.nii.gz"))
    assert names == [f"sub-{s}_task-loc_space-MNI_res-2_contrast-trialTypeTask_stat-z_statmap.nii.gz"
                     for s in ("01", "02")]


def test_the_models_input_selects_the_space(tmp_path, capsys):
    bids = _fmriprep_variants(tmp_path, ["space-MNI", "space-T1w"])
    _fails(tmp_path, capsys, [bids, tmp_path / "out", "run", "--model", _bold_model(tmp_path)], 19,
           "several spaces", "--space")
    model = _bold_model(tmp_path)
    spec = json.loads(model.read_text())
    spec["Input"]["space"] = "T1w"
    model.write_text(json.dumps(spec))
    out = tmp_path / "out"
    assert _cli(bids, out, "run", "--model", model) == 0
    assert {p.name.split("_contrast")[0] for p in out.rglob("*_stat-z_statmap.nii.gz")} == {
        "sub-01_task-loc_space-T1w", "sub-02_task-loc_space-T1w"}


def test_acquisitions_and_echoes_are_kept_apart(tmp_path, capsys):
    """acq- tells runs apart (both fitted, both named); echo- versions of one run must be selected."""
    bids = _fmriprep_variants(tmp_path, ["acq-fast_space-MNI", "acq-slow_space-MNI"], subjects=("01",))
    out = tmp_path / "out"
    assert _cli(bids, out, "run", "--model", _bold_model(tmp_path)) == 0
    assert sorted(p.name.split("_contrast")[0] for p in out.rglob("*_stat-z_statmap.nii.gz")) == [
        "sub-01_task-loc_acq-fast_space-MNI", "sub-01_task-loc_acq-slow_space-MNI"]
    bids2 = _fmriprep_variants(tmp_path / "echo", ["echo-1_space-MNI", "echo-2_space-MNI"], subjects=("01",))
    _fails(tmp_path, capsys, [bids2, tmp_path / "out2", "run", "--model", _bold_model(tmp_path)], 19,
           "differ in echo")


def test_options_mask_matches_anatomical_and_template_masks(tmp_path):
    """Options.Mask: a subject's anatomical mask (no task/run) in the run's space, and a template mask
    with no subject; never a mask in another space."""
    bids = _fmriprep_variants(tmp_path, ["space-MNI"])
    deriv = bids / "derivatives" / "fmriprep"
    small = np.zeros(BRAIN.shape, dtype=np.uint8)
    small[2:6, 2:6, 2:4] = 1
    nb.save(nb.Nifti1Image(small, AFFINE), deriv / "sub-01" / "func" / "sub-01_space-MNI_label-GM_mask.nii.gz")
    nb.save(nb.Nifti1Image(1 - small, AFFINE), deriv / "sub-01" / "func" / "sub-01_space-T1w_label-GM_mask.nii.gz")
    nb.save(nb.Nifti1Image(BRAIN.astype(np.uint8), AFFINE), deriv / "tpl-MNI_label-GM_mask.nii.gz")
    model = _bold_model(tmp_path)
    spec = json.loads(model.read_text())
    spec["Nodes"][0]["Model"]["Options"]["Mask"] = {"label": ["GM"], "suffix": ["mask"]}
    model.write_text(json.dumps(spec))
    out = tmp_path / "out"
    assert _cli(bids, out, "run", "--model", model) == 0
    mask1 = np.asarray(nb.load(next(out.rglob("sub-01_*_mask.nii.gz"))).dataobj) > 0
    mask2 = np.asarray(nb.load(next(out.rglob("sub-02_*_mask.nii.gz"))).dataobj) > 0
    np.testing.assert_array_equal(mask1, small > 0)  # the subject's own, in its space
    np.testing.assert_array_equal(mask2, BRAIN)  # the template's: sub-02 has no mask of its own


def test_symlinked_folders_are_indexed_without_looping(tmp_path):
    """A DataLad-like tree: subject folders are links to elsewhere, and a link loops back to the root."""
    real = _bold_dataset(tmp_path / "store")
    bids = tmp_path / "linked"
    bids.mkdir()
    for item in real.iterdir():
        (bids / item.name).symlink_to(item, target_is_directory=item.is_dir())
    (real / "sub-01" / "loop").symlink_to(bids, target_is_directory=True)
    out = tmp_path / "out"
    assert _cli(bids, out, "run", "--model", _bold_model(tmp_path)) == 0
    assert len(list(out.rglob("*_stat-z_statmap.nii.gz"))) == 2


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find worker processes")
def test_workers_die_with_a_killed_parent(tmp_path):
    """--n-procs 2, each run fit held for 60 s in its worker; kill -9 the parent: the workers end at once
    and write nothing."""
    import signal
    import time

    bids = _bold_dataset(tmp_path, subjects=("01", "02", "03"))
    out = tmp_path / "out"
    script = ("import sys, time\n"
              "import bids_app.graph.runs as ru\n"
              "ru.run_unit = lambda *a, **k: (time.sleep(60), [])[1]\n"
              "from bids_app.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    parent = subprocess.Popen([sys.executable, "-c", script, str(bids), str(out), "run", "--model",
                               str(_bold_model(tmp_path)), "--n-procs", "2"])
    try:
        deadline = time.monotonic() + 120
        while len(workers := _children(parent.pid)) < 2:
            assert time.monotonic() < deadline, "workers never started"
            assert parent.poll() is None, "the run ended early"
            time.sleep(0.2)
        time.sleep(0.5)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        while any(Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1][:3]
                  for w in workers):
            assert time.monotonic() < deadline, f"workers {workers} outlived their killed parent"
            time.sleep(0.1)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert not list(out.rglob("*_statmap.nii.gz"))


def test_sidecars_are_strict_json_with_camel_case_keys(tmp_path):
    """Every JSON sidecar of a run + subject model: no NaN/Infinity, CamelCase keys (BIDS), except
    inside fields keyed by data names (design columns, entities)."""
    import re

    from bids_app.derivatives.naming import DATA_KEYED

    bids = _bold_dataset(tmp_path)
    out = tmp_path / "out"
    assert _cli(bids, out, "subject", "--model", _bold_model(tmp_path, levels=("Run", "Subject"))) == 0
    _no_nonfinite_json(out)
    snake = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
    bad = []

    def walk(obj, where):
        if isinstance(obj, list):
            for v in obj:
                walk(v, where)
        elif isinstance(obj, dict):
            for k, v in obj.items():
                if snake.match(k):
                    bad.append(f"{where}.{k}")
                if k in DATA_KEYED or k.lower() in DATA_KEYED or k == "VIF":
                    for inner in (v.values() if isinstance(v, dict) else []):
                        walk(inner, f"{where}.{k}[]")
                else:
                    walk(v, f"{where}.{k}")

    sidecars = [p for p in out.rglob("*.json") if ".bids-stats" not in p.parts
                and p.name not in ("provenance.json", "dataset_description.json") and "_smdl" not in p.name]
    assert len(sidecars) > 10 and any(p.name.endswith("_design.json") for p in sidecars)
    for path in sidecars:
        walk(json.loads(path.read_text()), path.name)
    walk(_prov(out)["Settings"], "provenance.json:Settings")
    assert not bad, bad[:10]
    assert _prov(out)["Settings"]["QCPolicy"] == "exclude" and "NPerm" in _prov(out)["Settings"]["Inference"]


def test_maps_that_differ_only_in_desc_are_not_both_used(tmp_path, capsys):
    """Two versions of one subject's map would enter the group as two subjects."""
    data, model = _maps(tmp_path, runs=(None,)), _dataset_model(tmp_path)
    path = next(data.rglob("sub-02_*_stat-effect_statmap.nii.gz"))
    shutil.copy(path, path.with_name(path.name.replace("_stat-effect", "_desc-smoothed_stat-effect")))
    _fails(tmp_path, capsys, [data, tmp_path / "out", "dataset", "--model", model], 19,
           "sub-02 task-sim", "would write the same outputs", "desc")


def test_kill_and_resume_is_exact(tmp_path):
    """SIGKILL right after the second finished unit; the rerun resumes and its maps equal an
    uninterrupted run's, byte for byte."""
    data, model = _maps(tmp_path), _subject_model(tmp_path)
    killed, fresh = tmp_path / "killed", tmp_path / "fresh"
    script = ("import os, signal, sys\n"
              "import bids_app.graph.records as records\n"
              "real, saved = records.save, []\n"
              "def save(*a, **k):\n"
              "    real(*a, **k)\n"
              "    saved.append(1)\n"
              "    if len(saved) == 2:\n"
              "        os.kill(os.getpid(), signal.SIGKILL)\n"
              "records.save = save\n"
              "import bids_app.graph.groups as gu\n"
              "gu.save = save\n"
              "from bids_app.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", script, str(data), str(killed), "subject", "--model", str(model)])
    assert proc.returncode == -9
    assert len(list((killed / ".bids-stats" / "units").rglob("*_unit.json"))) == 2
    assert not list(killed.rglob(".tmp-*"))
    assert _cli(data, killed, "subject", "--model", model) == 0
    units = _prov(killed)["Units"]
    assert sum(bool(u.get("Reused")) for u in units) == 2 and len(units) == len(SUBJECTS)
    assert _cli(data, fresh, "subject", "--model", model) == 0
    assert _statmaps(killed) == _statmaps(fresh)


@pytest.mark.parametrize("code, text", [(errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only file system"),
                                        (errno.EDQUOT, "Disk quota exceeded")])
def test_unwritable_output_is_a_clear_error(tmp_path, capsys, monkeypatch, code, text):
    """The file system refuses the first write (permissions, read-only mount, quota): exit 21, not a traceback."""
    import bids_app.derivatives.atomic as atomic

    data, model = _maps(tmp_path), _dataset_model(tmp_path)

    def refuse(*args, **kwargs):
        raise OSError(code, text)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    _fails(tmp_path, capsys, [data, tmp_path / "out", "dataset", "--model", model], 21, text, "writable")


def test_work_dir_that_is_a_file(tmp_path, capsys):
    data, model = _maps(tmp_path), _dataset_model(tmp_path)
    scratch = tmp_path / "scratch"
    scratch.write_text("not a folder")
    _fails(tmp_path, capsys, [data, tmp_path / "out", "dataset", "--model", model, "--work-dir", scratch / "x"],
           2, "--work-dir")


@pytest.mark.parametrize("name, content, phrase", [
    ("events", "onset\tduration\ttrial_type\n4\t8\ttask\textra\n", "line 2: 4 tab-separated field(s), the header has 3"),
    ("events", "", "events file is empty"),
    ("events", b"\xff\xfe\x00garbage", "cannot read events file"),
])
def test_malformed_events_tsv(tmp_path, capsys, name, content, phrase):
    bids = _bold_dataset(tmp_path)
    events = bids / "sub-02" / "func" / "sub-02_task-loc_events.tsv"
    if isinstance(content, bytes):
        events.write_bytes(content)
    else:
        events.write_text(content)
    _fails(tmp_path, capsys, [bids, tmp_path / "out", "run", "--model", _bold_model(tmp_path)], 19,
           str(events), phrase)


def test_empty_brain_mask(tmp_path, capsys):
    bids = _bold_dataset(tmp_path)
    mask = bids / "derivatives/fmriprep/sub-02/func/sub-02_task-loc_desc-brain_mask.nii.gz"
    mask.unlink()
    nb.save(nb.Nifti1Image(np.zeros(BRAIN.shape, np.uint8), AFFINE), mask)
    _fails(tmp_path, capsys, [bids, tmp_path / "out", "run", "--model", _bold_model(tmp_path)], 19,
           "sub-02_task-loc_bold.nii.gz (sub-02 task-loc): its mask", "has no voxel", "same space")
