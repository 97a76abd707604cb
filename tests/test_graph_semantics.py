"""Graph semantics end to end through the CLI, on simulated first-level maps.

Every test writes a small dataset of existing maps (``simulate_maps``), runs
``bids-stats`` on a model written here, and checks the output files against
numpy closed forms computed from the simulated arrays: inverse-variance
fixed effects (FSL / nilearn ``compute_fixed_effects``) and the OLS
one-sample / two-sample t.
"""
import json
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bids_app.graph.pipeline as pipeline
from bids_app.cli import main
from bids_app.report.html import WrittenReport
from simulate_maps import brain_mask, load, simulate_maps

SUBJECTS = [f"{i:02d}" for i in range(1, 7)]
SEX = dict(zip(SUBJECTS, "FMFFMF"))
BRAIN = brain_mask()
TASK = "sim"
SPACE_PART = "task-sim_space-MNI152NLin2009cAsym"


@pytest.fixture(autouse=True)
def _no_report(monkeypatch):
    # The HTML report plots every z map (about 1.5 s each on this machine);
    # it is tested on its own, and nothing here reads it.
    monkeypatch.setattr(pipeline, "write_report", lambda *args, **kwargs: WrittenReport(Path("report.html"), []))


# ---------------------------------------------------------------- helpers

def _participants():
    return pd.DataFrame({"participant_id": [f"sub-{s}" for s in SUBJECTS],
                         "sex": [SEX[s] for s in SUBJECTS]})


def _node(name, level, group_by, model_type="glm", x=(1,), **extra):
    return {"Level": level, "Name": name, "GroupBy": list(group_by),
            "Model": {"Type": model_type, "X": list(x)}, "DummyContrasts": {"Test": "t"}, **extra}


def _model(tmp_path, nodes, edges=None, name="sim"):
    model = {"Name": name, "BIDSModelVersion": "1.0.0", "Input": {"task": [TASK]}, "Nodes": nodes}
    if edges is not None:
        model["Edges"] = edges
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(model))
    return path


def _run(data, out, model, level="dataset", *extra):
    return main([str(data), str(out), level, "--model", str(model), *extra])


def _map(out, node, contrast, stat, subject=None, session=None):
    """Path of one output map; asserts it exists."""
    prefix = "_".join(p for p in (f"sub-{subject}" if subject else "",
                                  f"ses-{session}" if session else "") if p)
    folder = out / f"node-{node}"
    if subject:
        folder = folder / f"sub-{subject}"
        if session:
            folder = folder / f"ses-{session}"
    name = "_".join(p for p in (prefix, SPACE_PART, f"contrast-{contrast}", f"stat-{stat}_statmap.nii.gz") if p)
    path = folder / name
    assert path.exists(), f"missing {path}; have {sorted(p.name for p in folder.glob('*'))}"
    return path


def _sidecar(path):
    return json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())


def _prov(out):
    return json.loads((out / "provenance.json").read_text())


def _units(out, node):
    return [u for u in _prov(out)["Units"] if u["Node"] == node]


def _fixed_effects(maps):
    """Inverse-variance weighted mean, its variance and t (as nilearn's compute_fixed_effects)."""
    w = np.stack([1.0 / m.variance for m in maps])
    y = np.stack([m.effect for m in maps])
    variance = 1.0 / w.sum(axis=0)
    effect = (w * y).sum(axis=0) * variance
    return effect, variance, effect / np.sqrt(variance)


def _one_sample_t(y):
    y = np.asarray(y)
    return y.mean(axis=0) / (y.std(axis=0, ddof=1) / np.sqrt(len(y)))


def _close(ours, ref, rtol=1e-5, atol=1e-5):
    """Equal inside the brain, NaN outside."""
    np.testing.assert_allclose(ours[BRAIN], ref[BRAIN], rtol=rtol, atol=atol)
    assert np.isnan(ours[~BRAIN]).all()


def _select(maps, **ents):
    return [m for m in maps if all(m.entities.get(k) == v for k, v in ents.items())]


def _chain_model(tmp_path):
    return _model(tmp_path, [
        _node("subject", "Subject", ["subject", "contrast"], "meta"),
        _node("dataset", "Dataset", ["contrast"]),
    ])


@pytest.fixture
def runs_data(tmp_path):
    """6 subjects x 2 runs x contrasts a, b, with variances and dof 50."""
    data = tmp_path / "maps"
    maps = simulate_maps(data, task=TASK, subjects=SUBJECTS, contrasts=["a", "b"], runs=["1", "2"],
                         participants=_participants(), mean=lambda e: 0.8 if e["contrast"] == "a" else -0.3)
    return data, maps


# ---------------------------------------------------------------- chaining

def test_implicit_chain_fixed_effects_then_one_sample(tmp_path, runs_data):
    data, maps = runs_data
    out = tmp_path / "out"
    assert _run(data, out, _chain_model(tmp_path)) == 0

    subject_effects = {}
    for con in ("a", "b"):
        for sub in SUBJECTS:
            effect, variance, t = _fixed_effects(_select(maps, subject=sub, contrast=con))
            subject_effects.setdefault(con, []).append(effect)
            _close(load(_map(out, "subject", con, "effect", sub)), effect)
            _close(load(_map(out, "subject", con, "variance", sub)), variance)
            tpath = _map(out, "subject", con, "t", sub)
            _close(load(tpath), t)
            assert _sidecar(tpath)["DegreesOfFreedom"] == 100  # sum of the two runs' dofs
            assert _sidecar(tpath)["Estimator"] == "fixed-effects"
        tpath = _map(out, "dataset", con, "t")
        t = _one_sample_t(subject_effects[con])
        _close(load(tpath), t)
        assert _sidecar(tpath)["DegreesOfFreedom"] == len(SUBJECTS) - 1
        _close(load(_map(out, "dataset", con, "p")), stats.t.sf(t, len(SUBJECTS) - 1), atol=1e-6)
    # 2 inputs (runs) per subject unit, 6 per dataset unit
    assert sorted(u["NInputs"] for u in _units(out, "subject")) == [2] * 12
    assert sorted(u["NInputs"] for u in _units(out, "dataset")) == [6, 6]
    mask = load(out / "node-dataset" / f"{SPACE_PART}_contrast-a_mask.nii.gz") > 0
    np.testing.assert_array_equal(mask, BRAIN)


# ---------------------------------------------------------------- edges and filters

def test_edge_filters_on_an_entity_and_on_a_participants_column(tmp_path, runs_data):
    data, maps = runs_data
    out = tmp_path / "out"
    model = _model(tmp_path, [
        _node("subject", "Subject", ["subject", "contrast"], "meta"),
        _node("onlyA", "Dataset", ["contrast"]),
        _node("females", "Dataset", ["contrast"]),
    ], edges=[
        {"Source": "subject", "Destination": "onlyA", "Filter": {"contrast": ["a"]}},
        {"Source": "subject", "Destination": "females", "Filter": {"sex": ["F"]}},
    ])
    assert _run(data, out, model) == 0

    assert {p.name.split("_contrast-")[1].split("_")[0] for p in (out / "node-onlyA").glob("*stat-t_*.nii.gz")} \
        == {"a"}
    assert [u["NInputs"] for u in _units(out, "onlyA")] == [6]
    females = [s for s in SUBJECTS if SEX[s] == "F"]
    units = _units(out, "females")
    assert sorted(u["Entities"]["contrast"] for u in units) == ["a", "b"]
    assert [u["NInputs"] for u in units] == [len(females)] * 2
    for con in ("a", "b"):
        effects = [_fixed_effects(_select(maps, subject=s, contrast=con))[0] for s in females]
        tpath = _map(out, "females", con, "t")
        _close(load(tpath), _one_sample_t(effects))
        assert _sidecar(tpath)["DegreesOfFreedom"] == len(females) - 1
        design = json.loads((out / "node-females" / f"{SPACE_PART}_contrast-{con}_design.json").read_text())
        assert all(f"sub-{s}" in path for s, path in zip(females, design["Inputs"]))


def test_edge_filter_on_a_numeric_participants_column_with_missing_values(tmp_path):
    """A 0/1 column with an n/a is read as float: the Filter value 1 must still match 1.0."""
    data = tmp_path / "maps"
    participants = _participants().assign(patient=[1, 0, 1, None, 1, 0])
    maps = simulate_maps(data, task=TASK, subjects=SUBJECTS, contrasts=["a"], participants=participants)
    out = tmp_path / "out"
    model = _model(tmp_path, [_node("subject", "Subject", ["subject", "contrast"], "meta"),
                              _node("patients", "Dataset", ["contrast"])],
                   edges=[{"Source": "subject", "Destination": "patients", "Filter": {"patient": [1]}}])
    assert _run(data, out, model) == 0
    patients = ["01", "03", "05"]
    assert [u["NInputs"] for u in _units(out, "patients")] == [3]
    _close(load(_map(out, "patients", "a", "t")),
           _one_sample_t([_select(maps, subject=s)[0].effect for s in patients]))


def test_two_parents_feed_one_dataset_node_and_each_runs_once(tmp_path):
    """session (per run pair) -> subjectA (contrast a), subjectB (contrast b) -> dataset."""
    data = tmp_path / "maps"
    maps = simulate_maps(data, task=TASK, subjects=SUBJECTS, contrasts=["a", "b"], sessions=["1", "2"],
                         runs=["1", "2"], participants=_participants())
    out = tmp_path / "out"
    model = _model(tmp_path, [
        _node("session", "Session", ["subject", "session", "contrast"], "meta"),
        _node("subjectA", "Subject", ["subject", "contrast"], "meta"),
        _node("subjectB", "Subject", ["subject", "contrast"], "meta"),
        _node("dataset", "Dataset", ["contrast"]),
    ], edges=[
        {"Source": "session", "Destination": "subjectA", "Filter": {"contrast": ["a"]}},
        {"Source": "session", "Destination": "subjectB", "Filter": {"contrast": ["b"]}},
        {"Source": "subjectA", "Destination": "dataset"},
        {"Source": "subjectB", "Destination": "dataset"},
    ])
    assert _run(data, out, model) == 0

    units = _prov(out)["Units"]
    keys = [(u["Node"], json.dumps(u["Entities"], sort_keys=True)) for u in units]
    assert len(keys) == len(set(keys)), "a unit was fitted twice"
    assert len(_units(out, "session")) == 6 * 2 * 2
    assert [u["Entities"]["contrast"] for u in _units(out, "subjectA")] == ["a"] * 6
    assert [u["Entities"]["contrast"] for u in _units(out, "subjectB")] == ["b"] * 6
    assert sorted((u["Entities"]["contrast"], u["NInputs"]) for u in _units(out, "dataset")) \
        == [("a", 6), ("b", 6)]
    # the Session level writes one folder per session and combines that session's two runs
    for ses in ("1", "2"):
        _, _, t = _fixed_effects(_select(maps, subject="04", session=ses, contrast="b"))
        tpath = _map(out, "session", "b", "t", "04", ses)
        _close(load(tpath), t)
        assert _sidecar(tpath)["DegreesOfFreedom"] == 100
    # fixed effects of fixed effects = fixed effects over the four runs
    for con, node in (("a", "subjectA"), ("b", "subjectB")):
        effects = []
        for sub in SUBJECTS:
            effect = _fixed_effects(_select(maps, subject=sub, contrast=con))[0]
            _close(load(_map(out, node, con, "effect", sub)), effect)
            assert _sidecar(_map(out, node, con, "t", sub))["DegreesOfFreedom"] == 200
            effects.append(effect)
        _close(load(_map(out, "dataset", con, "t")), _one_sample_t(effects))


def test_f_contrasts_are_terminal(tmp_path, runs_data):
    data, maps = runs_data
    out = tmp_path / "out"
    subject = _node("subject", "Subject", ["subject", "contrast"], "meta",
                    Contrasts=[{"Name": "anyF", "ConditionList": [1], "Weights": [[1]], "Test": "F"}])
    model = _model(tmp_path, [subject, _node("dataset", "Dataset", ["contrast"])])
    assert _run(data, out, model) == 0

    _, _, t = _fixed_effects(_select(maps, subject="02", contrast="a"))
    fpath = _map(out, "subject", "aAnyF", "F", "02")
    _close(load(fpath), t**2)
    meta = _sidecar(fpath)
    assert (meta["Test"], meta["NumeratorDegreesOfFreedom"], meta["DegreesOfFreedom"]) == ("F", 1, 100)
    # only the t contrasts reach the dataset node
    assert sorted(u["Entities"]["contrast"] for u in _units(out, "dataset")) == ["a", "b"]
    assert not list((out / "node-dataset").glob("*AnyF*"))


def test_pass_contrasts_flow(tmp_path, runs_data):
    data, maps = runs_data
    out = tmp_path / "out"
    subject = _node("subject", "Subject", ["subject", "contrast"], "meta")
    subject["DummyContrasts"] = {"Test": "pass"}
    assert _run(data, out, _model(tmp_path, [subject, _node("dataset", "Dataset", ["contrast"])])) == 0
    effect, variance, _ = _fixed_effects(_select(maps, subject="01", contrast="b"))
    _close(load(_map(out, "subject", "b", "effect", "01")), effect)
    _close(load(_map(out, "subject", "b", "variance", "01")), variance)
    effects = [_fixed_effects(_select(maps, subject=s, contrast="b"))[0] for s in SUBJECTS]
    _close(load(_map(out, "dataset", "b", "t")), _one_sample_t(effects))


# ---------------------------------------------------------------- contrast names

def test_contrast_naming_rule_at_subject_and_dataset_levels(tmp_path, runs_data):
    data, maps = runs_data
    out = tmp_path / "out"
    subject = _node("subject", "Subject", ["subject", "contrast"], "meta",
                    Contrasts=[{"Name": "neg", "ConditionList": [1], "Weights": [-1], "Test": "t"}])
    pooled = _node("pooled", "Dataset", [], x=["a", "b"],
                   Contrasts=[{"Name": "a vs b", "ConditionList": ["a", "b"], "Weights": [1, -1], "Test": "t"}])
    model = _model(tmp_path, [subject, _node("dataset", "Dataset", ["contrast"]), pooled], edges=[
        {"Source": "subject", "Destination": "dataset"},
        {"Source": "subject", "Destination": "pooled", "Filter": {"contrast": ["a", "b"]}},
    ])
    assert _run(data, out, model) == 0

    # one incoming contrast c: the intercept dummy is c, every other contrast c_<name>
    effect = _fixed_effects(_select(maps, subject="05", contrast="b"))[0]
    _close(load(_map(out, "subject", "b", "effect", "05")), effect)
    neg = _map(out, "subject", "bNeg", "effect", "05")
    _close(load(neg), -effect)
    assert _sidecar(neg)["Contrast"] == "b_neg"
    # both flow on and keep their names through a GroupBy [contrast] node
    assert sorted(u["Entities"]["contrast"] for u in _units(out, "dataset")) == ["a", "a_neg", "b", "b_neg"]
    _close(load(_map(out, "dataset", "aNeg", "t")),
           -_one_sample_t([_fixed_effects(_select(maps, subject=s, contrast="a"))[0] for s in SUBJECTS]))
    # GroupBy [] with several incoming contrasts: names as written (dummies after their column)
    [unit] = _units(out, "pooled")
    assert unit["Contrasts"] == ["a", "b", "a vs b"] and unit["NInputs"] == 12
    ya = np.stack([_fixed_effects(_select(maps, subject=s, contrast="a"))[0] for s in SUBJECTS])
    yb = np.stack([_fixed_effects(_select(maps, subject=s, contrast="b"))[0] for s in SUBJECTS])
    n = len(SUBJECTS)
    pooled_var = (ya.var(axis=0, ddof=1) + yb.var(axis=0, ddof=1)) / 2
    prefix = out / "node-pooled" / SPACE_PART
    _close(load(f"{prefix}_contrast-a_stat-t_statmap.nii.gz"), ya.mean(0) / np.sqrt(pooled_var / n))
    t_diff = stats.ttest_ind(ya, yb, axis=0).statistic
    _close(load(f"{prefix}_contrast-aVsB_stat-t_statmap.nii.gz"), np.where(BRAIN, t_diff, np.nan))
    assert _sidecar(prefix.parent / f"{SPACE_PART}_contrast-aVsB_stat-t_statmap.nii.gz")["Contrast"] == "a vs b"


# ---------------------------------------------------------------- GroupBy

def test_group_by_key_absent_from_the_data_forms_one_group(tmp_path, runs_data):
    data, maps = runs_data
    out = tmp_path / "out"
    model = _model(tmp_path, [_node("subject", "Subject", ["subject", "session", "contrast"], "meta")])
    assert _run(data, out, model, "subject") == 0
    units = _units(out, "subject")
    assert len(units) == 12 and all(u["NInputs"] == 2 for u in units)
    assert not list(out.rglob("ses-*"))
    _, _, t = _fixed_effects(_select(maps, subject="06", contrast="a"))
    _close(load(_map(out, "subject", "a", "t", "06")), t)


# ---------------------------------------------------------------- analysis levels, labels, resume

def test_subject_level_stops_before_dataset_and_labels_restrict(tmp_path, runs_data):
    data, maps = runs_data
    out = tmp_path / "out"
    assert _run(data, out, _chain_model(tmp_path), "subject", "--participant-label", "01", "sub-03") == 0
    assert not (out / "node-dataset").exists()
    assert sorted(p.name for p in (out / "node-subject").iterdir()) == ["sub-01", "sub-03"]
    prov = _prov(out)
    assert {u["Node"] for u in prov["Units"]} == {"subject"}
    assert len(prov["Units"]) == 4
    assert not [p for p in prov["Inputs"] if "sub-02" in p["Path"]]


def test_dataset_after_subject_resumes_and_matches_a_fresh_run(tmp_path, runs_data):
    data, _ = runs_data
    model = _chain_model(tmp_path)
    out = tmp_path / "out"
    assert _run(data, out, model, "subject") == 0
    subject_t = _map(out, "subject", "a", "t", "02")
    stamp = subject_t.stat().st_mtime_ns
    assert _run(data, out, model, "dataset") == 0

    units = _prov(out)["Units"]
    assert [u.get("Reused", False) for u in units if u["Node"] == "subject"] == [True] * 12
    assert [u.get("Reused", False) for u in units if u["Node"] == "dataset"] == [False] * 2
    assert subject_t.stat().st_mtime_ns == stamp
    fresh = tmp_path / "fresh"
    assert _run(data, fresh, model, "dataset") == 0
    produced = sorted(p.relative_to(out) for p in out.glob("node-*/**/*") if p.is_file())
    assert produced == sorted(p.relative_to(fresh) for p in fresh.glob("node-*/**/*") if p.is_file())
    assert len([p for p in produced if p.match("node-dataset/*_stat-t_statmap.nii.gz")]) == 2
    for rel in produced:
        assert (fresh / rel).read_bytes() == (out / rel).read_bytes(), rel


def test_changed_covariate_in_participants_tsv_refits(tmp_path):
    data = tmp_path / "maps"
    participants = _participants().assign(age=[21, 34, 28, 45, 30, 25])
    maps = simulate_maps(data, task=TASK, subjects=SUBJECTS, contrasts=["a"], participants=participants)
    model = _model(tmp_path, [_node("age", "Dataset", ["contrast"], x=[1, "age"])])
    out = tmp_path / "out"
    assert _run(data, out, model) == 0
    participants.assign(age=[50, 22, 31, 27, 40, 36]).to_csv(data / "participants.tsv", sep="\t", index=False)
    assert _run(data, out, model) == 0

    assert [u.get("Reused", False) for u in _units(out, "age")] == [False]
    X = np.column_stack([np.ones(6), [50, 22, 31, 27, 40, 36]])
    Y = np.stack([m.effect[BRAIN] for m in maps])
    fit = np.linalg.lstsq(X, Y, rcond=None)
    sigma2 = fit[1] / (6 - 2)
    t_age = fit[0][1] / np.sqrt(sigma2 * np.linalg.inv(X.T @ X)[1, 1])
    np.testing.assert_allclose(load(_map(out, "age", "aAge", "t"))[BRAIN], t_age, rtol=1e-5, atol=1e-5)


def test_input_filter_on_run_number_matches_zero_padded_labels(tmp_path):
    data = tmp_path / "maps"
    maps = simulate_maps(data, task=TASK, subjects=SUBJECTS, contrasts=["a"], runs=["01", "02"])
    model = json.loads(_model(tmp_path, [_node("dataset", "Dataset", ["contrast"])]).read_text())
    model["Input"]["run"] = [1]
    path = tmp_path / "run1.json"
    path.write_text(json.dumps(model))
    out = tmp_path / "out"
    assert _run(data, out, path) == 0
    # the run is common to every input, so it stays in the output name
    tpath = out / "node-dataset" / "task-sim_run-01_space-MNI152NLin2009cAsym_contrast-a_stat-t_statmap.nii.gz"
    _close(load(tpath), _one_sample_t([m.effect for m in _select(maps, run="01")]))


# ---------------------------------------------------------------- errors and QC

def test_redundant_intercept_is_a_design_error_and_writes_nothing(tmp_path, capsys):
    data = tmp_path / "maps"
    simulate_maps(data, task=TASK, subjects=SUBJECTS, contrasts=["a", "b"], participants=_participants())
    out = tmp_path / "out"
    node = _node("paired", "Dataset", [], x=[1, "subject.*"], Transformations={
        "Transformer": "pybids-transforms-v1", "Instructions": [{"Name": "Factor", "Input": ["subject"]}]})
    assert _run(data, out, _model(tmp_path, [node])) == 20
    err = capsys.readouterr().err
    assert "redundant intercept" in err
    assert "'intercept' equals the sum of the subject.* columns" in err
    assert not out.exists()


def test_participant_listed_twice_is_an_input_error(tmp_path, capsys):
    data = tmp_path / "maps"
    participants = _participants()
    participants = pd.concat([participants, participants.iloc[[2]]])  # sub-03 twice
    simulate_maps(data, task=TASK, subjects=SUBJECTS, contrasts=["a"], participants=participants)
    out = tmp_path / "out"
    assert _run(data, out, _model(tmp_path, [_node("dataset", "Dataset", ["contrast"])])) == 19
    assert "participants.tsv lists sub-03 more than once" in capsys.readouterr().err
    assert not out.exists()


def _with_all_nan_map(tmp_path):
    data = tmp_path / "maps"
    maps = simulate_maps(data, task=TASK, subjects=SUBJECTS, contrasts=["a", "b"], participants=_participants())
    bad = _select(maps, subject="03", contrast="a")[0]
    img = nb.load(bad.path)
    nb.save(nb.Nifti1Image(np.full(img.shape, np.nan, np.float32), img.affine), bad.path)
    return data, maps, bad


def test_all_nan_map_is_excluded_with_a_recorded_warning(tmp_path):
    data, maps, bad = _with_all_nan_map(tmp_path)
    out = tmp_path / "out"
    model = _model(tmp_path, [_node("dataset", "Dataset", ["contrast"])])
    assert _run(data, out, model) == 0
    prov = _prov(out)
    [exclusion] = prov["Exclusions"]
    assert exclusion["Node"] == "dataset" and exclusion["File"].endswith(bad.path.name)
    assert exclusion["Reasons"] == ["all values are NaN"]
    assert any(bad.path.name in w for w in prov["Warnings"])
    assert sorted((u["Entities"]["contrast"], u["NInputs"]) for u in prov["Units"]) == [("a", 5), ("b", 6)]
    kept = [m.effect for m in _select(maps, contrast="a") if m is not bad]
    _close(load(_map(out, "dataset", "a", "t")), _one_sample_t(kept))


def test_all_nan_map_fails_the_run_with_qc_policy_fail(tmp_path, capsys):
    data, _, bad = _with_all_nan_map(tmp_path)
    out = tmp_path / "out"
    model = _model(tmp_path, [_node("dataset", "Dataset", ["contrast"])])
    assert _run(data, out, model, "dataset", "--qc-policy", "fail") == 19
    err = capsys.readouterr().err
    assert bad.path.name in err and "all values are NaN" in err
    assert not out.exists()
