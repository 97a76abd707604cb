"""Models as people write them: names without Factor, names matching nothing, the whole language.

Designs built from names users write (``trial_type.word`` without a Factor
step, the bare ``word``) must equal the ones the explicit pybids Factor
builds, on the real ds003 events; names matching nothing anywhere stop the
run before anything is written; ``validate`` catches what it can without
data, and ``validate --bids-dir`` plans the model on a dataset.
"""
import json

import numpy as np
import pandas as pd
import pytest

from bids_app.cli import main
from bids_app.design import build_run_design
from bids_app.design.group import build_group_design
from bids_app.errors import DesignError, ModelError
from bids_app.io.events import read_events
from bids_app.spec import load_model, model_from_dict, validate_model
from bids_sim import dataset_spec, write_dataset
from conftest import real_data



def _ds003_events():
    return read_events(real_data("events_only/ds000003") / "sub-01/func/sub-01_task-rhymejudgment_events.tsv")


def _model(nodes, **extra):
    return {"Name": "m", "BIDSModelVersion": "1.0.0", "Nodes": nodes, **extra}


def _run_node(x, conditions=(), transformations=None, hrf=True, **extra):
    node = {"Level": "Run", "Name": "run", "GroupBy": ["run", "subject"],
            "Model": {"Type": "glm", "X": list(x)}, **extra}
    if hrf:
        node["Model"]["HRF"] = {"Variables": [v for v in x if v != 1 and not str(v).startswith("trans")],
                                "Model": "spm"}
    if conditions:
        node["Contrasts"] = [{"Name": "c", "ConditionList": list(conditions),
                              "Weights": [1] + [-1] * (len(conditions) - 1), "Test": "t"}]
    if transformations:
        node["Transformations"] = {"Transformer": "pybids-transforms-v1", "Instructions": transformations}
    return node


def _design(node, events):
    run = model_from_dict(_model([node])).nodes[0]
    return build_run_design(run, events, tr=2.0, n_vols=160, source="sub-01_task-rhymejudgment_bold.nii.gz")


# ---------------------------------------------------------------- names as users write them

def test_column_value_names_without_factor_equal_explicit_factor():
    events = _ds003_events()
    x = ["trial_type.word", "trial_type.pseudoword", 1]
    implicit = _design(_run_node(x, x[:2]), events)
    explicit = _design(_run_node(x, x[:2], [{"Name": "Factor", "Input": ["trial_type"]}]), events)
    pd.testing.assert_frame_equal(implicit.matrix, explicit.matrix)
    assert implicit.matrix["trial_type.word"].abs().sum() > 1  # a real convolved regressor
    assert [r["name"] for r in implicit.info.resolved] == ["trial_type.word", "trial_type.pseudoword"]
    assert all(r["column"] == "trial_type" for r in implicit.info.resolved)
    assert explicit.info.resolved == []


def test_bare_trial_type_values_are_their_indicators():
    """The specification's own example writes X: ["congruent", "incongruent", ...]."""
    events = _ds003_events()
    bare = _design(_run_node(["word", "pseudoword", 1], ["word", "pseudoword"]), events)
    dotted = _design(_run_node(["trial_type.word", "trial_type.pseudoword", 1]), events)
    np.testing.assert_array_equal(bare.matrix["word"], dotted.matrix["trial_type.word"])
    np.testing.assert_array_equal(bare.matrix["pseudoword"], dotted.matrix["trial_type.pseudoword"])
    assert {r["name"]: r["column"] for r in bare.info.resolved} == {"word": "trial_type",
                                                                       "pseudoword": "trial_type"}
    assert "Factor(trial_type)" in bare.info.resolved[0]["how"]


def test_bare_value_of_two_columns_is_ambiguous():
    events = pd.DataFrame({"onset": [0.0, 10, 20, 30], "duration": [1.0] * 4,
                           "trial_type": ["a", "b", "a", "b"], "cue": ["a", "c", "c", "a"]})
    with pytest.raises(DesignError, match=r"'a' is a value of several columns \(trial_type, cue\).*"
                                          r"trial_type\.a, cue\.a"):
        _design(_run_node(["a", 1]), events)


def test_transformation_inputs_resolve_column_value_names():
    events = _ds003_events()
    node = _run_node(["trial_type.word", 1], hrf=False,
                     transformations=[{"Name": "Convolve", "Input": ["trial_type.word"], "Model": "spm"}])
    convolved = _design(node, events)
    reference = _design(_run_node(["trial_type.word", 1]), events)
    np.testing.assert_allclose(convolved.matrix["trial_type.word"], reference.matrix["trial_type.word"])
    assert convolved.info.resolved[0]["name"] == "trial_type.word"


def test_numeric_replace_and_group_at_run_level():
    from bids_app.design.transforms import apply_transformations, make_collection
    events = pd.DataFrame({"onset": [0.0, 20, 40, 60], "duration": [2.0, 2, 4, 2],
                           "trial_type": ["a", "b", "a", "b"], "resp": [1, 2, 1, 2], "rt": [0.5, 0.7, 0.6, 0.9]})
    collection = make_collection(events, None, tr=2.0, n_vols=50)
    outcome = apply_transformations(collection, {"Transformer": "pybids-transforms-v1", "Instructions": [
        {"Name": "Replace", "Input": ["resp"], "Replace": {"1": "0.5", "2": 3}},
        {"Name": "Replace", "Input": ["rt"], "Replace": {"4": 1}, "Attribute": "duration"},
        {"Name": "Group", "Input": ["resp", "rt"], "Output": "both"},
        {"Name": "Scale", "Input": ["both"], "Rescale": False}]}, times=np.arange(50) * 2.0, tr=2.0)
    variables = outcome.collection.variables
    # resp 1 -> 0.5, 2 -> 3 (pybids compares "1" with 1 and would change nothing), then demeaned
    np.testing.assert_allclose(variables["resp"].values, [-1.25, 1.25, -1.25, 1.25])
    np.testing.assert_allclose(variables["rt"].values, [-0.175, 0.025, -0.075, 0.225])
    np.testing.assert_array_equal(variables["rt"].duration, [2, 2, 1, 2])
    assert outcome.collection.groups == {"both": ["resp", "rt"]}


# ---------------------------------------------------------------- group-level names

def _table(**columns):
    n = len(next(iter(columns.values())))
    return pd.DataFrame({"subject": [f"{i:02d}" for i in range(n)], "contrast": ["faces"] * n, **columns})


def _group_node(x, contrasts, level="Dataset", group_by=("contrast",)):
    return model_from_dict(_model([
        {"Level": "Run", "Name": "run", "GroupBy": ["run", "subject"], "Model": {"Type": "glm", "X": [1]},
         "DummyContrasts": {"Test": "t"}},
        {"Level": level, "Name": "group", "GroupBy": list(group_by), "Model": {"Type": "glm", "X": x},
         "Contrasts": contrasts}])).nodes[1]


def test_bidspm_group_levels_without_factor():
    """X: [1, "group"] with conditions group.B / group.I (bidspm): cell means, intercept left out."""
    table = _table(group=["B", "B", "I", "I", "B"])
    node = _group_node([1, "group"], [{"Name": "BvI", "ConditionList": ["group.B", "group.I"],
                                       "Weights": [1, -1], "Test": "t"}])
    design = build_group_design(node, table)
    assert list(design.matrix.columns) == ["group.B", "group.I"]
    np.testing.assert_array_equal(design.matrix["group.B"], [1, 1, 0, 0, 1])
    hows = " ".join(r["how"] for r in design.info["resolved"])
    assert "intercept left out" in hows and "Factor(group)" in hows


def test_bare_session_levels_name_their_columns():
    from bids_app.design.contrasts import plan_contrasts
    table = _table(session=["test", "retest"] * 2)
    node = _group_node(["session"], [{"Name": "tvr", "ConditionList": ["test", "retest"],
                                      "Weights": [1, -1], "Test": "t"}], level="Subject",
                       group_by=("subject", "contrast"))
    design = build_group_design(node, table)
    planned, warnings = plan_contrasts(node, list(design.matrix.columns), list(design.matrix.columns), "faces")
    assert warnings == []
    assert planned[0].columns == ("session.test", "session.retest")
    np.testing.assert_array_equal(planned[0].weights, [-1, 1] if design.matrix.columns[0] == "session.retest"
                                  else [1, -1])


# ---------------------------------------------------------------- the language

def test_formula_with_leading_tilde_is_accepted():
    node = _group_node(["group", 1], [{"Name": "g", "ConditionList": ["group.B"], "Weights": [1], "Test": "t"}])
    raw = _model([{"Level": "Dataset", "Name": "d", "GroupBy": [],
                   "Model": {"Type": "glm", "X": [1, "group"], "Formula": "~ 1 + group"},
                   "Contrasts": [{"Name": "g", "ConditionList": ["group.I"], "Weights": [1], "Test": "t"}]}])
    assert validate_model(raw) == []
    model = model_from_dict(raw)
    assert model.nodes[0].model.formula == "1 + group"
    design = build_group_design(model.nodes[0], _table(group=["B", "I", "B", "I"]))
    assert list(design.matrix.columns) == ["intercept", "group.I"]
    assert node.model.formula is None
    bad = _model([{**raw["Nodes"][0], "Model": {**raw["Nodes"][0]["Model"], "Formula": "y ~ 1 + group"}}])
    assert any("right-hand side" in m for _, m in validate_model(bad))


@pytest.mark.parametrize("name, message", [
    ("Demaen", "unknown transformation 'Demaen' (did you mean 'Demean'?)"),
    ("AND", "unknown transformation 'AND' (did you mean 'And'?)"),
])
def test_unknown_transformation_names(name, message):
    model = _model([_run_node(["trial_type.a"], transformations=[{"Name": name, "Input": ["x"]}])])
    issues = validate_model(model)
    assert issues[0][0] == "Nodes[0].Transformations.Instructions[0].Name"
    assert issues[0][1].startswith(message)


def test_transformation_arguments_are_checked():
    model = _model([_run_node(["trial_type.a"], transformations=[
        {"Name": "Factor", "Input": ["trial_type"], "RefLevl": "a"},
        {"Name": "Scale", "Input": ["rt"], "Demean": True, "Rescale": False, "ReplaceNa": "before"},
        {"Name": "Group", "Input": ["a", "b"]},
    ])])
    issues = dict(validate_model(model))
    assert "Factor takes no argument 'RefLevl' (did you mean 'RefLevel'?)" in \
        issues["Nodes[0].Transformations.Instructions[0].RefLevl"]
    assert not any("Instructions[1]" in p for p in issues)
    assert "Group names its group with Output" in issues["Nodes[0].Transformations.Instructions[2]"]


# ---------------------------------------------------------------- planning on a dataset

def _dataset(tmp_path, model):
    return write_dataset(tmp_path / "data", dataset_spec(model))


def _validate(tmp_path, model, capsys):
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model))
    bids, deriv = _dataset(tmp_path, model)
    code = main(["validate", str(path), "--bids-dir", str(bids), "--derivatives", str(deriv)])
    return code, capsys.readouterr()


BIDSPM_STYLE = _model([
    {"Level": "Run", "Name": "run", "GroupBy": ["run", "subject"],
     "Model": {"Type": "glm", "X": ["trial_type.faces", "trial_type.houses", "trans_?", 1],
               "HRF": {"Variables": ["trial_type.faces", "trial_type.houses"], "Model": "spm"}},
     "DummyContrasts": {"Test": "t", "Contrasts": ["trial_type.faces", "trial_type.houses"]},
     "Contrasts": [{"Name": "faces_gt_houses", "ConditionList": ["trial_type.faces", "trial_type.houses"],
                    "Weights": [1, -1], "Test": "t"}]},
    {"Level": "Subject", "Name": "subject", "GroupBy": ["subject", "contrast"],
     "Model": {"Type": "meta", "X": [1]}, "DummyContrasts": {"Test": "t"}},
    {"Level": "Dataset", "Name": "dataset", "GroupBy": ["contrast"], "Model": {"Type": "glm", "X": [1]},
     "DummyContrasts": {"Test": "t", "Contrasts": ["faces_gt_houses"]}},
], Input={"task": ["loc"]})


def test_validate_bids_dir_prints_units_and_columns(tmp_path, capsys):
    code, out = _validate(tmp_path, BIDSPM_STYLE, capsys)
    assert code == 0, out.err
    lines = out.out.splitlines()
    assert "node 'run' (Run): 3 unit(s) to fit: 3 run(s)" in out.out
    columns = next(line for line in lines if "design columns" in line)
    assert columns.split(": ", 1)[1] == "trial_type.faces, trial_type.houses, trans_x, trans_y, trans_z, " \
                                       "intercept, drift_1"
    assert "node 'subject' (Subject): 9 unit(s) to fit: 9 group(s) of 9 incoming map(s)" in out.out
    assert "node 'dataset' (Dataset): 3 unit(s)" in out.out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, expected", [
    (lambda m: m["Nodes"][0]["Model"]["X"].append("trial_type.huoses"),
     r"Model.X entry 'trial_type.huoses'.*nothing in any of the 3 run\(s\).*trial_type \(faces, houses\)"),
    (lambda m: m["Nodes"][1].__setitem__("GroupBy", ["subjet", "contrast"]),
     r"GroupBy entry 'subjet' matches nothing \(did you mean 'subject'\?\)"),
    (lambda m: m["Nodes"][2]["DummyContrasts"].__setitem__("Contrasts", ["faces_gt_hosues"]),
     r"contrast 'faces_gt_hosues'.*cannot be computed in any of its 3 unit\(s\).*Incoming contrasts: "
     r"faces_gt_houses, trial_type.faces, trial_type.houses"),
])
def test_names_matching_nothing_stop_before_anything_is_written(tmp_path, capsys, change, expected):
    model = json.loads(json.dumps(BIDSPM_STYLE))
    change(model)
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model))
    bids, deriv = _dataset(tmp_path, BIDSPM_STYLE)
    out = tmp_path / "out"
    code = main([str(bids), str(out), "dataset", "--model", str(path), "--derivatives", str(deriv)])
    err = capsys.readouterr().err
    assert code == 20, err
    import re
    assert re.search(expected, err), err
    assert not out.exists()


def test_a_design_no_data_can_estimate_stops_before_anything_is_written(tmp_path, capsys):
    """A Subject glm over single-run subjects has no residual: refused when planning, not after the
    run level has been fitted and written; the message names the node, its groups and the fix,
    and the fix it names (fixed effects) runs."""
    model = json.loads(json.dumps(BIDSPM_STYLE))
    model["Nodes"][1]["Model"]["Type"] = "glm"
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model))
    bids, deriv = _dataset(tmp_path, BIDSPM_STYLE)  # one run per subject
    out = tmp_path / "out"
    code = main([str(bids), str(out), "dataset", "--model", str(path), "--derivatives", str(deriv)])
    err = capsys.readouterr().err
    assert code == 20, err
    assert "node 'subject': the design cannot be estimated in 9 of its 9 group(s)" in err
    assert "no residual degrees of freedom: 1 maps for 1 independent columns" in err
    assert "subject-01_contrast-faces_gt_houses" in err
    assert 'use "Type": "meta"' in err
    assert not out.exists()
    # validate --bids-dir says the same without fitting
    assert main(["validate", str(path), "--bids-dir", str(bids), "--derivatives", str(deriv)]) == 20
    assert "node 'subject': the design cannot be estimated" in capsys.readouterr().err
    # the fix named: fixed effects pass each single run on, and the same data run through
    path.write_text(json.dumps(BIDSPM_STYLE))
    # a dataset-level glm over one participant: the fix is more participants
    assert main([str(bids), str(out), "dataset", "--model", str(path), "--derivatives", str(deriv),
                 "--participant-label", "01"]) == 20
    err = capsys.readouterr().err
    assert "node 'dataset': the design cannot be estimated in 3 of its 3 group(s)" in err
    assert "select more participants (--participant-label), or run up to the subject level only" in err
    assert not out.exists()
    assert main([str(bids), str(out), "dataset", "--model", str(path), "--derivatives", str(deriv)]) == 0
    assert len(list((out / "node-dataset").rglob("*_stat-t_statmap.nii.gz"))) == 1


def test_a_run_without_events_file_is_named_as_the_cause(tmp_path, capsys):
    """A BOLD run whose events file is missing: its dropped conditions (a warning in provenance) and a
    transformation's missing input (an error) say that the run has no events file."""
    bids, deriv = _dataset(tmp_path, BIDSPM_STYLE)
    events = sorted(bids.rglob("sub-01_*_events.tsv"))[0]
    events.unlink()
    path, out = tmp_path / "model.json", tmp_path / "out"
    path.write_text(json.dumps(BIDSPM_STYLE))
    assert main([str(bids), str(out), "dataset", "--model", str(path), "--derivatives", str(deriv)]) == 0
    warnings = json.loads((out / "provenance.json").read_text())["Warnings"]
    assert any("sub-01" in w and "this run has no events file (no *_events.tsv with its entities in BIDS_DIR), so "
               "its event conditions ('trial_type.faces', 'trial_type.houses') are absent" in w for w in warnings)
    capsys.readouterr()
    model = json.loads(json.dumps(BIDSPM_STYLE))
    model["Nodes"][0]["Transformations"] = {"Transformer": "pybids-transforms-v1",
                                            "Instructions": [{"Name": "Factor", "Input": ["trial_type"]}]}
    path.write_text(json.dumps(model))
    assert main([str(bids), str(tmp_path / "out2"), "dataset", "--model", str(path), "--derivatives",
                 str(deriv)]) == 20
    err = capsys.readouterr().err
    assert "Input names column 'trial_type', which is not in this run; this run has no events file" in err


def test_bidspm_style_model_runs_end_to_end(tmp_path, capsys):
    """Fit, not just plan: every named condition reaches the dataset level."""
    path = tmp_path / "model.json"
    path.write_text(json.dumps(BIDSPM_STYLE))
    bids, deriv = _dataset(tmp_path, BIDSPM_STYLE)
    out = tmp_path / "out"
    code = main([str(bids), str(out), "dataset", "--model", str(path), "--derivatives", str(deriv)])
    assert code == 0, capsys.readouterr().err
    run_maps = sorted(p.name for p in (out / "node-run").rglob("*stat-effect_statmap.nii.gz"))
    assert len(run_maps) == 9 and sum("contrast-trialTypeFaces_" in p for p in run_maps) == 3
    sidecar = json.loads(next((out / "node-run").rglob("*_design.json")).read_text())
    assert [r["Name"] for r in sidecar["Resolved"]] == ["trial_type.faces", "trial_type.houses"]
    group = sorted(p.name for p in (out / "node-dataset").rglob("*stat-t_statmap.nii.gz"))
    assert group == ["task-loc_space-MNI152NLin2009cAsym_contrast-facesGtHouses_stat-t_statmap.nii.gz"]


def test_duplicate_equal_keys_warn_in_validate(tmp_path, capsys):
    path = tmp_path / "m.json"
    text = json.dumps(BIDSPM_STYLE)
    path.write_text(text[:-1] + ', "Name": "m"}')
    assert main(["validate", str(path)]) == 0
    assert "warning: Name: key 'Name' appears 2 times with the same value" in capsys.readouterr().out
    path.write_text(text[:-1] + ', "Name": "other"}')
    with pytest.raises(ModelError, match="different values"):
        load_model(path)


def test_default_model_without_model_option(tmp_path, capsys):
    """No --model: one regressor per trial type, runs -> subject fixed effects -> dataset t per condition."""
    bids, deriv = _dataset(tmp_path, BIDSPM_STYLE)
    out = tmp_path / "out"
    assert main([str(bids), str(out), "dataset", "--derivatives", str(deriv)]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "no --model given: using a default model (2 condition(s): trial_type.faces, trial_type.houses" in printed
    copy = out / "model-defaultLoc_smdl.json"
    assert f"written beside the outputs as {copy.name}" in printed
    model = json.loads(copy.read_text())
    events = pd.concat([pd.read_csv(p, sep="\t") for p in bids.rglob("*_events.tsv")])
    levels = [f"trial_type.{v}" for v in sorted(events["trial_type"].unique())]
    assert model["Nodes"][0]["Model"]["X"] == [*levels, 1]
    assert [n["Level"] for n in model["Nodes"]] == ["Run", "Subject", "Dataset"]
    assert [n["Model"]["Type"] for n in model["Nodes"]] == ["glm", "meta", "glm"]
    for level in levels:
        label = "trialType" + level.split(".")[1].capitalize()
        assert len(list((out / "node-dataset").glob(f"*contrast-{label}_stat-t_statmap.nii.gz"))) == 1
    assert len(list((out / "node-subject").rglob("*stat-effect_statmap.nii.gz"))) == 3 * len(levels)


def test_json_key_is_pybids_key_rule():
    from bids.utils import convert_JSON

    from bids_app.spec.transformations import json_key, transformation_arguments

    keys = ["RefLevel", "OutputPrefix", "GroupBy", "Input", "ref_level", "HRF", "ABCDef", "x1Y", "Demean"]
    keys += ["".join(w.capitalize() for w in a.split("_")) for args in transformation_arguments().values()
             for a in args]
    assert len(keys) > 20
    for key in keys:
        assert json_key(key) == next(iter(convert_JSON({key: None}))), key
