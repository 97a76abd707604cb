"""Model JSON loading and validation (bids_app.spec).

Invalid models are built by mutating one small valid model; each case names
the JSON path that must be reported and a phrase its message must contain.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from bsmschema.models import BIDSStatsModel
from jsonschema import Draft202012Validator

from bids_app.errors import ModelError
from bids_app.spec import (
    check_conditions,
    load_model,
    load_model_dict,
    resolve_condition,
    strict_schema,
    validate_model,
)
from bids_app.spec.validate import formula_terms

MODELS = Path(__file__).resolve().parents[1] / "models"

BASE = {
    "Name": "base",
    "BIDSModelVersion": "1.0.0",
    "Input": {"task": ["stroop"]},
    "Nodes": [
        {
            "Level": "Run",
            "Name": "run",
            "GroupBy": ["run", "subject"],
            "Transformations": {
                "Transformer": "pybids-transforms-v1",
                "Instructions": [{"Name": "Factor", "Input": ["trial_type"]}],
            },
            "Model": {
                "Type": "glm",
                "X": ["congruent", "incongruent", "trans_*", 1],
                "HRF": {"Variables": ["congruent", "incongruent"], "Model": "spm"},
                "Options": {"HighPassFilterCutoffHz": 0.008},
            },
            "Contrasts": [
                {"Name": "incVsCon", "ConditionList": ["incongruent", "congruent"],
                 "Weights": [1, -1], "Test": "t"},
                {"Name": "effects", "ConditionList": ["incongruent", "congruent"],
                 "Weights": [[1, 0], [0, 1]], "Test": "F"},
            ],
            "DummyContrasts": {"Contrasts": ["congruent", "incongruent"], "Test": "t"},
        },
        {
            "Level": "Subject",
            "Name": "subject",
            "GroupBy": ["subject", "contrast"],
            "Model": {"Type": "meta", "X": [1]},
            "DummyContrasts": {"Test": "t"},
        },
        {
            "Level": "Dataset",
            "Name": "dataset",
            "GroupBy": ["contrast"],
            "Model": {"Type": "glm", "X": [1, "age"], "Formula": "1 + age"},
            "Contrasts": [
                {"Name": "mean", "ConditionList": [1], "Weights": [1], "Test": "t"},
                {"Name": "age", "ConditionList": ["age"], "Weights": [1], "Test": "t"},
            ],
        },
    ],
    "Edges": [
        {"Source": "run", "Destination": "subject"},
        {"Source": "subject", "Destination": "dataset"},
    ],
}

RUN = ["Nodes", 0]
C0 = [*RUN, "Contrasts", 0]
C1 = [*RUN, "Contrasts", 1]
DS = ["Nodes", 2]


def _parent(d, path):
    for key in path[:-1]:
        d = d[key]
    return d


def mutate(*ops) -> dict:
    """A copy of BASE with ops applied: ("set", path, value), ("del", path),
    ("rename", path, new_key), ("append", path, value)."""
    d = copy.deepcopy(BASE)
    for op, path, *arg in ops:
        parent = _parent(d, path)
        if op == "set":
            parent[path[-1]] = arg[0]
        elif op == "del":
            del parent[path[-1]]
        elif op == "rename":
            parent[arg[0]] = parent.pop(path[-1])
        elif op == "append":
            parent[path[-1]].append(arg[0])
    return d


# (id, ops, expected json path, phrase in its message)
INVALID = [
    ("typo-key", [("rename", [*RUN, "Contrasts"], "Contrats")],
     "Nodes[0].Contrats", "unknown key 'Contrats' (did you mean 'Contrasts'?)"),
    ("typo-nested-key", [("rename", [*RUN, "Model", "HRF", "Model"], "Modle")],
     "Nodes[0].Model.HRF.Modle", "did you mean 'Model'"),
    ("typo-top-key", [("set", ["Edgess"], [])], "Edgess", "did you mean 'Edges'"),
    ("missing-version", [("del", ["BIDSModelVersion"])], "", "missing required key 'BIDSModelVersion'"),
    ("missing-groupby", [("del", [*RUN, "GroupBy"])], "Nodes[0]", "missing required key 'GroupBy'"),
    ("node-not-object", [("set", ["Nodes", 1], "subject")], "Nodes[1]", "expected an object"),
    ("level-lowercase", [("set", [*RUN, "Level"], "run")], "Nodes[0].Level", "did you mean 'Run'"),
    ("level-unknown", [("set", [*RUN, "Level"], "Group")], "Nodes[0].Level", "use one of 'Run'"),
    ("model-type-case", [("set", [*RUN, "Model", "Type"], "GLM")],
     "Nodes[0].Model.Type", "did you mean 'glm'"),
    ("test-case", [("set", [*C0, "Test"], "T")], "Nodes[0].Contrasts[0].Test", "did you mean 't'"),
    ("x-bad-number", [("set", [*RUN, "Model", "X", 3], 2)], "Nodes[0].Model.X[3]", "expected 1 or a string"),
    ("x-duplicate", [("append", [*RUN, "Model", "X"], "congruent")], "Nodes[0].Model.X[4]", "listed twice"),
    ("transformer-unknown", [("set", [*RUN, "Transformations", "Transformer"], "fitlins")],
     "Nodes[0].Transformations.Transformer", "use one of 'pybids-transforms-v1'"),
    ("duplicate-node", [("set", [*DS, "Name"], "run")], "Nodes[2].Name", "duplicate node name 'run'"),
    ("empty-node-name", [("set", [*DS, "Name"], " ")], "Nodes[2].Name", "empty name"),
    ("duplicate-contrast", [("set", [*C1, "Name"], "incVsCon")],
     "Nodes[0].Contrasts[1].Name", "duplicate contrast name 'incVsCon'"),
    ("contrast-vs-dummy-name", [("set", [*C0, "Name"], "congruent")],
     "Nodes[0].Contrasts[0].Name", "also Nodes[0].DummyContrasts.Contrasts[0]"),
    ("contrast-vs-implicit-dummy", [
        ("set", [*DS, "DummyContrasts"], {"Test": "t"}), ("del", [*DS, "Model", "Formula"])],
     "Nodes[2].Contrasts[1].Name", "duplicate contrast name 'age' (also Nodes[2].Model.X[1])"),
    ("edge-unknown-node", [("set", ["Edges", 1, "Destination"], "datset")],
     "Edges[1].Destination", "no node is named 'datset' (did you mean 'dataset'?)"),
    ("edge-self-loop", [("set", ["Edges", 1], {"Source": "subject", "Destination": "subject"})],
     "Edges[1]", "self-loop on 'subject'"),
    ("edge-duplicate", [("append", ["Edges"], {"Source": "run", "Destination": "subject"})],
     "Edges[2]", "duplicate of Edges[0]"),
    ("edge-cycle", [("append", ["Edges"], {"Source": "dataset", "Destination": "subject"})],
     "Edges", "cycle through 'subject', 'dataset'"),
    ("two-roots", [("del", ["Edges", 1])], "Edges", "exactly one root"),
    ("empty-edges", [("set", ["Edges"], [])], "Edges", "found 3: 'run', 'subject', 'dataset'"),
    ("t-2d-weights", [("set", [*C0, "Weights"], [[1, -1]])],
     "Nodes[0].Contrasts[0].Weights", "takes a flat list of 2 weights"),
    ("pass-2d-weights", [("set", [*C0, "Test"], "pass"), ("set", [*C0, "Weights"], [[1, -1]])],
     "Nodes[0].Contrasts[0].Weights", "'pass' contrast takes a flat list"),
    ("weights-count", [("set", [*C0, "Weights"], [1])],
     "Nodes[0].Contrasts[0].Weights", "expected 2 weights (one per ConditionList entry), got 1"),
    ("f-row-length", [("set", [*C1, "Weights"], [[1, 0], [0]])],
     "Nodes[0].Contrasts[1].Weights[1]", "expected 2 weights"),
    ("weight-not-number", [("set", [*C0, "Weights"], [1, "abc"])],
     "Nodes[0].Contrasts[0].Weights[1]", "'abc' is not a number"),
    ("weight-div-zero", [("set", [*C0, "Weights"], ["1/0", -1])],
     "Nodes[0].Contrasts[0].Weights[0]", "divides by zero"),
    ("weight-boolean", [("set", [*C0, "Weights"], [True, -1])],
     "Nodes[0].Contrasts[0].Weights[0]", "expected a number or a string"),
    ("weights-all-zero", [("set", [*C0, "Weights"], [0, "0/3"])],
     "Nodes[0].Contrasts[0].Weights", "all weights are zero"),
    ("f-dependent-rows", [("set", [*C1, "Weights"], [[1, 0], ["2", 0]])],
     "Nodes[0].Contrasts[1].Weights", "linearly dependent (rank 1)"),
    ("conditions-empty", [("set", [*C0, "ConditionList"], [])],
     "Nodes[0].Contrasts[0].ConditionList", "empty list"),
    ("conditions-duplicate", [("set", [*C0, "ConditionList"], ["incongruent", "incongruent"])],
     "Nodes[0].Contrasts[0].ConditionList[1]", "listed twice"),
    ("condition-not-in-x", [("set", [*C0, "ConditionList"], ["incongruent", "congruentt"])],
     "Nodes[0].Contrasts[0].ConditionList[1]", "not in Model.X (did you mean 'congruent'?)"),
    ("condition-glob-miss", [("set", [*C0, "ConditionList"], ["incongruent", "rot_x"])],
     "Nodes[0].Contrasts[0].ConditionList[1]", "match an X pattern"),
    ("intercept-without-1", [("set", [*RUN, "Model", "X"], ["congruent", "incongruent"]),
                             ("set", [*C0, "ConditionList"], ["incongruent", "intercept"])],
     "Nodes[0].Contrasts[0].ConditionList[1]", "add 1 to X"),
    ("formula-term-missing", [("set", [*DS, "Contrasts", 1, "ConditionList"], ["sex"])],
     "Nodes[2].Contrasts[1].ConditionList[0]", "does not name a term of the Formula"),
    ("formula-interaction-missing", [
        ("set", [*DS, "Model"], {"Type": "glm", "X": [1, "group", "sex"], "Formula": "1 + group + sex"}),
        ("set", [*DS, "Contrasts", 1, "ConditionList"], ["group.1:sex.M"])],
     "Nodes[2].Contrasts[1].ConditionList[0]", "does not name a term"),
    ("formula-no-intercept-term", [("set", [*DS, "Model", "Formula"], "age")],
     "Nodes[2].Model.Formula", "explicit 1"),
    ("formula-var-not-in-x", [("set", [*DS, "Model", "Formula"], "1 + age + sex")],
     "Nodes[2].Model.Formula", "uses 'sex', which is not in Model.X"),
    ("formula-syntax", [("set", [*DS, "Model", "Formula"], "1 + age +")],
     "Nodes[2].Model.Formula", "cannot parse the Formula"),
    ("formula-lhs", [("set", [*DS, "Model", "Formula"], "y ~ 1 + age")],
     "Nodes[2].Model.Formula", "right-hand side"),
    ("formula-drops-intercept", [("set", [*DS, "Model", "Formula"], "0 + age")],
     "Nodes[2].Contrasts[0].ConditionList[0]", "the Formula removes it"),
    ("dummy-not-in-x", [("set", [*RUN, "DummyContrasts", "Contrasts"], ["congruent", "neutral"])],
     "Nodes[0].DummyContrasts.Contrasts[1]", "'neutral' is not in Model.X"),
    ("hrf-variable-not-in-x", [("set", [*RUN, "Model", "HRF", "Variables"], ["congruent", "neutral"])],
     "Nodes[0].Model.HRF.Variables[1]", "only X variables can be convolved"),
    ("hrf-unknown", [("set", [*RUN, "Model", "HRF", "Model"], "canonical")],
     "Nodes[0].Model.HRF.Model", "use one of 'spm', 'spm + derivative'"),
    ("hrf-afni", [("set", [*RUN, "Model", "HRF", "Model"], "afni")],
     "Nodes[0].Model.HRF.Model", "not implemented"),
    ("fir-no-delays", [("set", [*RUN, "Model", "HRF", "Model"], "fir")],
     "Nodes[0].Model.HRF.Parameters", "needs Parameters.fir_delays"),
    ("fir-bad-delays", [("set", [*RUN, "Model", "HRF", "Model"], "fir"),
                        ("set", [*RUN, "Model", "HRF", "Parameters"], {"fir_delays": [0, 1.5]})],
     "Nodes[0].Model.HRF.Parameters", "whole delays in scans"),
    ("noise-model-unknown", [("set", [*RUN, "Model", "Software"], {"bids-stats": {"NoiseModel": "arma"}})],
     'Nodes[0].Model.Software["bids-stats"].NoiseModel', "not one of 'ols', 'ar1', 'ar2'"),
    ("meta-at-run", [("set", [*RUN, "Model", "Type"], "meta")],
     "Nodes[0].Model.Type", "'meta' combines maps"),
    ("aggregate-case", [("set", [*RUN, "Model", "Options", "Aggregate"], "Mean")],
     "Nodes[0].Model.Options.Aggregate", "did you mean 'mean'"),
    ("highpass-zero", [("set", [*RUN, "Model", "Options", "HighPassFilterCutoffHz"], 0)],
     "Nodes[0].Model.Options.HighPassFilterCutoffHz", "must be > 0 Hz"),
    ("highpass-string", [("set", [*RUN, "Model", "Options", "HighPassFilterCutoffHz"], "128s")],
     "Nodes[0].Model.Options.HighPassFilterCutoffHz", "expected a number"),
    ("lowpass-below-highpass", [("set", [*RUN, "Model", "Options", "LowPassFilterCutoffHz"], 0.001)],
     "Nodes[0].Model.Options.LowPassFilterCutoffHz", "must be above HighPassFilterCutoffHz"),
    ("input-filter-object", [("set", ["Input", "task"], {"name": "stroop"})],
     "Input.task", "expected a list"),
    ("input-filter-empty", [("set", ["Input", "task"], [])], "Input.task", "selects nothing"),
    ("edge-filter-nested", [("set", ["Edges", 0, "Filter"], {"contrast": [["incVsCon"]]})],
     "Edges[0].Filter.contrast[0]", "expected a string or a number"),
    ("edge-filter-empty", [("set", ["Edges", 0, "Filter"], {"contrast": []})],
     "Edges[0].Filter.contrast", "selects nothing"),
    ("no-nodes", [("set", ["Nodes"], []), ("del", ["Edges"])], "Nodes", "at least one node"),
]


def test_base_model_is_valid():
    assert validate_model(BASE) == []
    # The specification's own pydantic models accept it too.
    BIDSStatsModel.model_validate(BASE)


@pytest.mark.parametrize(("ops", "path", "phrase"), [c[1:] for c in INVALID],
                         ids=[c[0] for c in INVALID])
def test_invalid_model_reports_path_and_fix(ops, path, phrase):
    issues = validate_model(mutate(*ops))
    matching = [msg for p, msg in issues if p == path]
    assert matching, f"no issue at {path!r}; got {issues}"
    assert any(phrase in msg for msg in matching), f"{phrase!r} not in {matching}"
    with pytest.raises(ModelError) as err:
        load_model_dict(mutate(*ops), source="mutated.json")
    assert (path, next(m for m in matching if phrase in m)) in err.value.issues
    assert err.value.exit_code == 3


def test_at_least_30_invalid_cases_with_distinct_ids():
    ids = [c[0] for c in INVALID]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)


def test_unknown_key_passes_bsmschema_but_not_us():
    # bsmschema's config spells "extras", so pydantic ignores the typo ...
    typo = mutate(("rename", [*RUN, "Contrasts"], "Contrats"))
    BIDSStatsModel.model_validate(typo)
    # ... while the strict schema forbids unknown keys everywhere.
    errors = list(Draft202012Validator(strict_schema()).iter_errors(typo))
    assert [e.validator for e in errors] == ["additionalProperties"]


def test_strict_schema_forbids_extra_keys_on_every_object_and_is_cached():
    schema = strict_schema()
    objects = [d for d in schema["$defs"].values() if "properties" in d] + [schema]
    assert len(objects) == 9  # 8 bsmschema definitions + the root
    assert all(d["additionalProperties"] is False for d in objects)
    schema["$defs"].clear()  # a caller's copy: validation is unaffected
    assert strict_schema()["$defs"]
    assert validate_model(BASE) == []


def test_several_errors_reported_together():
    bad = mutate(
        ("set", [*RUN, "Level"], "run"),
        ("set", [*C0, "Weights"], [1]),
        ("set", ["Edges", 1, "Destination"], "datset"),
        ("rename", [*DS, "Contrasts"], "Contrats"),
    )
    with pytest.raises(ModelError) as err:
        load_model_dict(bad, source="bad.json")
    paths = [p for p, _ in err.value.issues]
    assert paths == ["Nodes[0].Level", "Nodes[2].Contrats", "Nodes[0].Contrasts[0].Weights",
                     "Edges[1].Destination"]
    text = str(err.value)
    assert text.startswith("Invalid model bad.json: 4 problem(s)")
    assert "Nodes[0].Contrasts[0].Weights: expected 2 weights" in text


def _valid(d: dict):
    issues = validate_model(d)
    assert issues == []
    return load_model_dict(d)


def test_spec_example_model_is_accepted():
    # models/spec_example.json is bids-standard/stats-models
    # specification/examples/model-example_smdl.json, unchanged.
    model = load_model(MODELS / "spec_example.json")
    assert [n.name for n in model.topological_order()] == ["run", "subject", "dataset"]
    assert model.input == {"task": ("stroop",)}  # the spec writes a scalar filter value
    assert model.root.name == "run"
    assert model.node("subject").dummy_all_columns
    np.testing.assert_array_equal(model.nodes[0].contrasts[0].weights, [1.0, -1.0])


def test_fraction_weights():
    d = mutate(("set", [*RUN, "Model", "X"], ["a", "b", "c", 1]),
               ("set", [*RUN, "Model", "HRF", "Variables"], ["a"]),
               ("set", [*RUN, "DummyContrasts", "Contrasts"], ["a"]),
               ("set", [*C0, "ConditionList"], ["a", "b", "c"]),
               ("set", [*C0, "Weights"], [1, "-1/2", " -0.5 "]),
               ("set", [*C1, "ConditionList"], ["a", "b", "c"]),
               ("set", [*C1, "Weights"], [["1/3", "1/3", "1/3"], [1, -1, 0]]))
    model = _valid(d)
    c0, c1 = model.nodes[0].contrasts
    np.testing.assert_allclose(c0.weights, [1.0, -0.5, -0.5], rtol=0, atol=0)
    assert c1.weights.dtype == np.float64 and c1.weights.shape == (2, 3)
    assert c1.weights[0, 0] == 1 / 3


def test_glob_and_intercept_conditions():
    model = _valid(mutate(("set", [*C0, "ConditionList"], ["trans_x", "intercept"]),
                          ("set", [*C1, "ConditionList"], ["trans_rot_y", 1])))
    assert model.nodes[0].contrasts[1].conditions == ("trans_rot_y", 1)
    issues = validate_model(mutate(("set", [*C0, "ConditionList"], ["Trans_x", "congruent"])))
    assert [p for p, _ in issues] == ["Nodes[0].Contrasts[0].ConditionList[0]"]  # case-sensitive


@pytest.mark.parametrize(("formula", "x", "conditions"), [
    ("1 + group*sex", [1, "group", "sex"], ["group.1:sex.M", "sex.M", "Intercept"]),
    ("0 + group:sex", ["group", "sex"], ["sex.F:group.2"]),
    ("0 + C(group)", [1, "group"], ["C(group)[T.equalRange]", "C(group)[equalIndifference]"]),
    ("1 + poly(age, 2)", ["age", 1], ["poly(age, 2)[1]", "1"]),
    ("0 + trial_type.word + RT", ["trial_type.*", "RT"], ["trial_type.word", "RT"]),
    ("1 + age + `reaction time`", ["age", "reaction time"], ["reaction time", "intercept"]),
])
def test_formula_conditions_accepted(formula, x, conditions):
    d = mutate(("set", [*DS, "Model"], {"Type": "glm", "X": x, "Formula": formula}),
               ("set", [*DS, "Contrasts"], [
                   {"Name": f"c{i}", "ConditionList": [c], "Weights": [1], "Test": "t"}
                   for i, c in enumerate(conditions)]))
    _valid(d)


def test_formula_terms_variable_sets():
    assert formula_terms("1 + group*sex") == [
        frozenset(), {"group"}, {"sex"}, {"group", "sex"}]
    assert formula_terms("0 + C(group, Treatment('a')) + np.log(rt)") == [{"group"}, {"rt"}]


def test_edges_with_filters_and_implicit_chaining():
    with_filter = _valid(mutate(("set", ["Edges", 0, "Filter"],
                                 {"contrast": ["incVsCon"], "session": "01", "run": [1, 2]})))
    assert with_filter.edges[0].filter == {
        "contrast": ("incVsCon",), "session": ("01",), "run": (1, 2)}
    chained = _valid(mutate(("del", ["Edges"])))
    assert [(e.source, e.destination) for e in chained.edges] == [
        ("run", "subject"), ("subject", "dataset")]
    branching = _valid(mutate(("set", ["Edges", 1, "Source"], "run")))
    assert [n.name for n in branching.topological_order()] == ["run", "subject", "dataset"]
    assert branching.root.name == "run"


def test_spec_permitted_forms():
    d = mutate(
        # The spec allows a flat weight list for F: one row.
        ("set", [*C1, "Weights"], [1, -1]),
        # Case and spacing of HRF names are free.
        ("set", [*RUN, "Model", "HRF", "Model"], "SPM+Derivative"),
        # Optional keys may be null.
        ("set", ["Nodes", 1, "Contrasts"], None),
        ("set", ["Description"], None),
        # An explicit empty dummy list means no dummy contrasts.
        ("set", [*RUN, "DummyContrasts", "Contrasts"], []),
    )
    model = _valid(d)
    run = model.nodes[0]
    assert run.contrasts[1].weights.shape == (1, 2)
    assert run.dummy_contrasts is None and not run.has_dummy_contrasts
    # A meta (fixed-effects) node takes any design: weighted least squares.
    meta = _valid(mutate(("set", ["Nodes", 1, "Model", "X"], [1, "late"]),
                         ("set", ["Nodes", 1, "Model", "Formula"], "1 + late")))
    assert meta.nodes[1].model.type == "meta" and meta.nodes[1].model.formula == "1 + late"
    fir = mutate(("set", [*RUN, "Model", "HRF"],
                  {"Variables": ["congruent"], "Model": "fir", "Parameters": {"fir_delays": [0, 1, 2]}}))
    assert _valid(fir).nodes[0].model.hrf.parameters == {"fir_delays": [0, 1, 2]}


def test_validation_never_crashes_on_wrong_types():
    def paths(d, prefix=()):
        yield prefix
        if isinstance(d, dict):
            for k, v in d.items():
                yield from paths(v, (*prefix, k))
        elif isinstance(d, list):
            for i, v in enumerate(d):
                yield from paths(v, (*prefix, i))

    n_checked = 0
    for path in list(paths(BASE))[1:]:
        for value in (None, 7, "x", [], {}, [[]], True):
            d = copy.deepcopy(BASE)
            _parent(d, path)[path[-1]] = value
            issues = validate_model(d)
            assert all(isinstance(p, str) and isinstance(m, str) and m for p, m in issues)
            n_checked += 1
    assert n_checked > 500


def test_not_json_file_reports_line_and_column(tmp_path):
    bad = tmp_path / "bad_smdl.json"
    bad.write_text('{\n  "Name": "x",\n  "Nodes": [\n    {"Level": "Run",}\n  ]\n}\n')
    with pytest.raises(ModelError) as err:
        load_model(bad)
    assert err.value.source == str(bad)
    [(path, msg)] = err.value.issues
    json_err = None
    try:
        json.loads(bad.read_text())
    except json.JSONDecodeError as e:
        json_err = e
    assert path == "" and f"line {json_err.lineno}, column {json_err.colno}" in msg
    assert json_err.lineno == 4


def test_missing_file_duplicate_keys_and_nan(tmp_path):
    with pytest.raises(ModelError, match="file not found"):
        load_model(tmp_path / "absent.json")
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps(BASE)[:-1] + ', "Name": "again"}')
    with pytest.raises(ModelError) as err:
        load_model(dup)
    assert err.value.issues == [("Name", "key 'Name' appears 2 times with different values "
                                         '("base", "again"); JSON keeps only the last: keep the one you mean')]
    same = tmp_path / "same.json"
    same.write_text(json.dumps(BASE)[:-1] + ', "Name": "base"}')
    model = load_model(same)
    assert model.name == "base"
    assert model.notes == ("Name: key 'Name' appears 2 times with the same value; remove the repeats",)
    nan = tmp_path / "nan.json"
    nan.write_text(json.dumps(BASE).replace('"Weights": [1, -1]', '"Weights": [NaN, -1]'))
    with pytest.raises(ModelError, match="NaN is not a JSON value"):
        load_model(nan)


def test_unknown_key_typo_in_file(tmp_path):
    f = tmp_path / "typo_smdl.json"
    f.write_text(json.dumps(mutate(("rename", [*RUN, "DummyContrasts"], "DummyContrast"))))
    with pytest.raises(ModelError) as err:
        load_model(f)
    assert err.value.issues == [(
        "Nodes[0].DummyContrast",
        "unknown key 'DummyContrast' (did you mean 'DummyContrasts'?); allowed keys: "
        "Contrasts, Description, DummyContrasts, GroupBy, Level, Model, Name, Transformations",
    )]


def test_check_conditions_against_design_columns():
    model = load_model_dict(BASE)
    run = model.nodes[0]
    columns = ["congruent", "incongruent", "trans_x", "intercept", "drift_1"]
    assert check_conditions(run, columns, "Nodes[0]") == []
    issues = check_conditions(run, ["congruent", "incongrunt", "intercept"], "Nodes[0]")
    assert [p for p, _ in issues] == [
        "Nodes[0].Contrasts[0].ConditionList[0]",
        "Nodes[0].Contrasts[1].ConditionList[0]",
        "Nodes[0].DummyContrasts.Contrasts[1]",
    ]
    assert "did you mean 'incongrunt'" in issues[0][1]
    ds = model.nodes[2]
    assert [p for p, _ in check_conditions(ds, ["age"], "Nodes[2]")] == [
        "Nodes[2].Contrasts[0].ConditionList[0]"]
    assert "no intercept column" in check_conditions(ds, ["age"], "Nodes[2]")[0][1]
    assert resolve_condition(1, ["a", "Intercept"]) == "Intercept"
    assert resolve_condition("intercept", ["a", "intercept"]) == "intercept"
    assert resolve_condition("b", ["a"]) is None


def test_every_model_in_models_folder_validates():
    files = sorted(MODELS.glob("*.json"))
    assert files, f"no JSON models in {MODELS}"
    for f in files:
        model = load_model(f)
        assert model.nodes, f.name
