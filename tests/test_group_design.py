"""Group-level designs: participants tables + Transformations/Formula -> matrix.

References: hand-built numpy matrices, formulaic's own model matrix, scipy's
paired t-test and statsmodels' OLS ANOVA (same model, different coding).
Covariates come from the real participants.tsv of ds000005 (age, sex),
ds000003 (subjects) and Wager et al. 2008 (X_RVLPFC).
"""
from __future__ import annotations

import copy
import dataclasses
import json

import formulaic
import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from bsmschema.models import BIDSStatsModel
from jsonschema import Draft202012Validator
from scipy import stats
from statsmodels.stats.anova import anova_lm

from bids_app.design.diagnostics import check_design
from bids_app.design.group import build_group_design, spec_column_name
from bids_app.errors import DesignError
from bids_app.spec.model import model_from_dict
from bids_app.spec.validate import validate_model
from conftest import MODELS, participants

CELLS = [f"gain{g}loss{l}" for g in (1, 2, 3) for l in (1, 2, 3)]


def _maps(participants: pd.DataFrame, contrasts) -> pd.DataFrame:
    """One row per (subject, contrast), as the graph builds the inputs table."""
    rows = [dict(row, contrast=c) for c in contrasts for row in participants.to_dict("records")]
    # a shuffled index: the design must keep the table's own row labels
    return pd.DataFrame(rows).set_axis(np.arange(len(rows))[::-1] + 100)


def _node(model: dict, instructions=None, **extra):
    node = {"Level": "Dataset", "Name": "group", "GroupBy": [],
            "Model": {"Type": "glm", **model}, **extra}
    if instructions is not None:
        node["Transformations"] = {"Transformer": "pybids-transforms-v1",
                                   "Instructions": instructions}
    return model_from_dict({"Name": "m", "BIDSModelVersion": "1.0.0", "Nodes": [node]}).nodes[0]


def _design(model, table, instructions=None):
    return build_group_design(_node(model, instructions), table)


# --- one-sample, covariates ------------------------------------------------------------

def test_one_sample_is_a_column_of_ones_on_the_table_index():
    table = _maps(participants("wager2008_emoreg"), ["reappNegVsLookNeg"])
    design = _design({"X": [1]}, table)
    assert list(design.matrix.columns) == ["intercept"]
    assert design.matrix.index.equals(table.index)
    assert design.matrix.dtypes.eq(np.float64).all()
    np.testing.assert_array_equal(design.matrix.to_numpy(), np.ones((30, 1)))


def test_demeaned_covariate_matches_numpy_and_is_logged():
    table = _maps(participants("wager2008_emoreg"), ["reappNegVsLookNeg"])
    x = table["X_RVLPFC"].to_numpy()
    design = _design({"X": [1, "X_RVLPFC"]}, table, [{"Name": "Demean", "Input": ["X_RVLPFC"]}])
    np.testing.assert_allclose(design.matrix["X_RVLPFC"], x - x.mean(), rtol=0, atol=1e-12)
    assert design.info["transformations"][0]["centring"]["X_RVLPFC"]["mean"] == \
        pytest.approx(x.mean(), rel=1e-12)
    json.dumps(design.info)


@pytest.mark.parametrize("options, expected", [
    ({}, lambda v: (v - v.mean()) / v.std(ddof=1)),            # pybids' defaults
    ({"Rescale": False}, lambda v: v - v.mean()),
    ({"Demean": False}, lambda v: v / v.std(ddof=1)),
])
def test_scale_options_match_closed_forms(options, expected):
    table = _maps(participants("wager2008_emoreg"), ["reappNegVsLookNeg"])
    design = _design({"X": ["succ"]}, table, [
        {"Name": "Scale", "Input": "Y_Reappraisal_Success", "Output": "succ", **options}])
    np.testing.assert_allclose(design.matrix["succ"],
                               expected(table["Y_Reappraisal_Success"].to_numpy()), atol=1e-12)


# --- two-sample ------------------------------------------------------------------------

def test_two_sample_cell_means_factor_equals_hand_built_and_formula():
    table = _maps(participants("events_only/ds005"), ["gain"])
    sex = table["sex"].to_numpy()
    by_factor = _design({"X": ["sex.*"]}, table, [{"Name": "Factor", "Input": ["sex"]}])
    assert list(by_factor.matrix.columns) == ["sex.0", "sex.1"]
    np.testing.assert_array_equal(by_factor.matrix.to_numpy(),
                                  np.c_[sex == 0, sex == 1].astype(float))
    by_formula = _design({"X": ["sex"], "Formula": "0 + C(sex)"}, table)
    pd.testing.assert_frame_equal(by_formula.matrix, by_factor.matrix)


def test_two_sample_intercept_plus_dummy_matches_formulaic():
    table = _maps(participants("events_only/ds005"), ["gain"])
    design = _design({"X": [1, "sex"], "Formula": "1 + C(sex)"}, table)
    reference = formulaic.model_matrix("1 + C(sex)", table)
    assert list(design.matrix.columns) == ["intercept", "sex.1"]
    assert design.info["formula_columns"] == {"intercept": "Intercept", "sex.1": "C(sex)[T.1]"}
    np.testing.assert_array_equal(design.matrix.to_numpy(), np.asarray(reference, dtype=float))


def test_factor_drop_one_with_intercept_equals_treatment_coding():
    table = _maps(participants("events_only/ds000003"), ["word"])
    design = _design({"X": [1, "sex.*"]}, table,
                     [{"Name": "Factor", "Input": "sex", "Constraint": "drop_one"}])
    assert list(design.matrix.columns) == ["intercept", "sex.M"]
    np.testing.assert_array_equal(design.matrix["sex.M"], (table["sex"] == "M").astype(float))


# --- paired and repeated measures -------------------------------------------------------

def _paired_table():
    return _maps(participants("events_only/ds000003"), ["word", "pseudoword"])


def test_paired_design_matches_hand_built_and_gives_scipy_paired_t():
    table = _paired_table()
    n = table["subject"].nunique()
    design = _design({"X": ["contrast.word", "contrast.pseudoword", "subject.*"]}, table,
                     [{"Name": "Factor", "Input": ["contrast", "subject"]}])
    word = (table["contrast"] == "word").to_numpy(float)
    subjects = sorted(table["subject"].unique())
    expected = np.c_[word, 1 - word,
                     (table["subject"].to_numpy()[:, None] == np.array(subjects)).astype(float)]
    assert list(design.matrix.columns) == ["contrast.word", "contrast.pseudoword",
                                           *(f"subject.{s}" for s in subjects)]
    np.testing.assert_array_equal(design.matrix.to_numpy(), expected)

    c = np.r_[1.0, -1.0, np.zeros(n)]
    diag = check_design(design.matrix, [("wordVsPseudoword", c)])
    assert diag.rank == n + 1 and diag.n_columns == n + 2
    # OLS on the rank-deficient design (pseudo-inverse) == scipy's paired t-test
    y = np.random.default_rng(7).normal(size=len(table)) + word * 0.3
    X = design.matrix.to_numpy()
    beta = np.linalg.pinv(X) @ y
    dof = len(y) - diag.rank
    sigma2 = np.sum((y - X @ beta) ** 2) / dof
    t = c @ beta / np.sqrt(sigma2 * c @ np.linalg.pinv(X.T @ X) @ c)
    pairs = pd.DataFrame({"y": y, "s": table["subject"].to_numpy(), "c": table["contrast"]})
    wide = pairs.pivot(index="s", columns="c", values="y")
    ref = stats.ttest_rel(wide["word"], wide["pseudoword"])
    assert dof == ref.df
    assert t == pytest.approx(ref.statistic, rel=1e-10)


def test_implicit_contrast_indicator_columns_like_pybids():
    table = _paired_table()
    design = _design({"X": ["word", "pseudoword"]}, table)
    np.testing.assert_array_equal(design.matrix["word"],
                                  (table["contrast"] == "word").astype(float))
    assert design.info["implicit_contrast_columns"] == ["word", "pseudoword"]


def test_anova_3x3_with_subject_columns_matches_statsmodels_f():
    people = participants("events_only/ds005")
    table = _maps(people, CELLS)
    assert len(table) == 144
    node = _node({"X": ["contrast.gain*", "subject.*"]},
                 [{"Name": "Factor", "Input": ["contrast", "subject"]}])
    design = build_group_design(node, table)
    X = design.matrix.to_numpy()
    subjects = sorted(people["subject"])
    assert list(design.matrix.columns) == [f"contrast.{c}" for c in CELLS] + \
        [f"subject.{s}" for s in subjects]
    cells = (table["contrast"].to_numpy()[:, None] == np.array(CELLS)).astype(float)
    subj = (table["subject"].to_numpy()[:, None] == np.array(subjects)).astype(float)
    np.testing.assert_array_equal(X, np.c_[cells, subj])

    gain = np.zeros((2, X.shape[1]))
    gain[:, :9] = [[1, 1, 1, -1, -1, -1, 0, 0, 0], [0, 0, 0, 1, 1, 1, -1, -1, -1]]
    diag = check_design(design.matrix, [("gain", gain)])
    assert diag.rank == 24
    assert diag.dependencies == [
        "the sum of the contrast.* columns equals the sum of the subject.* columns"]

    # pooled-error F of the gain main effect == statsmodels' ANOVA of the same model
    rng = np.random.default_rng(3)
    g = table["contrast"].str[4].astype(int).to_numpy()
    y = rng.normal(size=144) + 0.2 * g + subj @ rng.normal(size=16)
    beta = np.linalg.pinv(X) @ y
    dof = 144 - diag.rank
    sigma2 = np.sum((y - X @ beta) ** 2) / dof
    cb = gain @ beta
    f = cb @ np.linalg.solve(gain @ np.linalg.pinv(X.T @ X) @ gain.T, cb) / (2 * sigma2)
    frame = pd.DataFrame({"y": y, "g": g, "l": table["contrast"].str[-1].astype(int).to_numpy(),
                          "s": table["subject"].to_numpy()})
    ref = anova_lm(smf.ols("y ~ C(g) * C(l) + C(s)", frame).fit(), typ=2)
    assert f == pytest.approx(ref.loc["C(g)", "F"], rel=1e-9)
    assert dof == ref.loc["Residual", "df"]


# --- formula ----------------------------------------------------------------------------

def test_group_by_covariate_interaction_via_formula():
    table = _maps(participants("events_only/ds005"), ["gain"])
    design = _design({"X": [1, "sex", "age"], "Formula": "1 + C(sex) * age"}, table,
                     [{"Name": "Demean", "Input": "age"}])
    age = table["age"].to_numpy(float) - table["age"].mean()
    sex1 = (table["sex"] == 1).to_numpy(float)
    assert list(design.matrix.columns) == ["intercept", "sex.1", "age", "sex.1:age"]
    np.testing.assert_allclose(design.matrix.to_numpy(),
                               np.c_[np.ones(16), sex1, age, sex1 * age], atol=1e-12)
    assert design.info["x_mode"] == "all"


def test_x_selects_among_formula_columns():
    table = _maps(participants("events_only/ds005"), ["gain"])
    design = _design({"X": [1, "sex.1:age", "age"], "Formula": "1 + C(sex) * age"}, table)
    assert list(design.matrix.columns) == ["intercept", "sex.1:age", "age"]
    assert design.info["x_mode"] == "selected"
    np.testing.assert_array_equal(design.matrix["sex.1:age"],
                                  (table["sex"] == 1) * table["age"].astype(float))


@pytest.mark.parametrize("formulaic_name, ours", [
    ("Intercept", "intercept"),
    ("group[T.1]:sex[T.M]", "group.1:sex.M"),
    ("group[A]", "group.A"),
    ("C(group)[T.patient]", "group.patient"),
    ("C(g, contr.treatment(base=1))[T.0]:age", "g.0:age"),
    ("age", "age"),
    ("center(age)", "center(age)"),
])
def test_formulaic_names_become_spec_names(formulaic_name, ours):
    assert spec_column_name(formulaic_name) == ours


@pytest.mark.parametrize("model, message", [
    ({"X": ["sex"], "Formula": "C(sex)"}, "explicit 1"),
    ({"X": ["sex"], "Formula": "y ~ 1 + C(sex)"}, "right-hand side"),
    ({"X": [1], "Formula": "1 + age"}, "'age', not listed in Model.X"),
    ({"X": [1, "sex"], "Formula": "0 + C(sex)"}, "removes the intercept"),
    ({"X": ["sex", "bogus"], "Formula": "1 + C(sex)"}, "'bogus'"),
    ({"X": [1, "group"]}, "'group'"),
])
def test_formula_and_x_errors_are_named(model, message):
    table = _maps(participants("events_only/ds005"), ["gain"])
    with pytest.raises(DesignError, match=message):
        _design(model, table)


def test_categorical_column_without_factor_is_refused():
    table = _maps(participants("events_only/ds000003"), ["word"])
    with pytest.raises(DesignError, match="'sex' is not numeric.*Factor"):
        _design({"X": [1, "sex"]}, table)


# --- transformations --------------------------------------------------------------------

def test_product_threshold_copy_rename_replace_match_numpy():
    table = _maps(participants("events_only/ds005"), ["gain"])
    design = _design({"X": ["sexAge", "old", "years", "sex.female", "sex.male"]}, table, [
        {"Name": "Product", "Input": ["sex", "age"], "Output": "sexAge"},
        {"Name": "Threshold", "Input": "age", "Threshold": 25, "Binarize": True, "Output": "old"},
        {"Name": "Copy", "Input": "age", "Output": "agecopy"},
        {"Name": "Rename", "Input": "agecopy", "Output": "years"},
        # JSON keys are strings; they must still match the integer column
        {"Name": "Replace", "Input": "sex", "Replace": {"0": "female", "1": "male"}},
        {"Name": "Factor", "Input": "sex"},
    ])
    age, sex = table["age"].to_numpy(float), table["sex"].to_numpy(float)
    np.testing.assert_array_equal(design.matrix["sexAge"], sex * age)
    np.testing.assert_array_equal(design.matrix["old"], (age >= 25).astype(float))
    np.testing.assert_array_equal(design.matrix["years"], age)
    np.testing.assert_array_equal(design.matrix["sex.male"], sex)
    assert [r["name"] for r in design.info["transformations"]] == [
        "Product", "Threshold", "Copy", "Rename", "Replace", "Factor"]


@pytest.mark.parametrize("instruction, message", [
    ({"Name": "Frobnicate", "Input": "age"}, "unknown transformation 'Frobnicate'"),
    ({"Name": "Convolve", "Input": "age"}, "Convolve cannot run on a group-level node"),
    ({"Name": "Scale", "Input": "age", "Bogus": 1}, r"Instructions\[0\] \(Scale\).*bogus"),
    ({"Name": "Factor", "Input": "agee"}, "Input 'agee' matches no column"),
])
def test_bad_instructions_are_named(instruction, message):
    table = _maps(participants("events_only/ds005"), ["gain"])
    with pytest.raises(DesignError, match=message):
        _design({"X": [1]}, table, [instruction])


def test_other_transformer_is_refused():
    table = _maps(participants("events_only/ds005"), ["gain"])
    node = dataclasses.replace(_node({"X": [1]}),
                               transformations={"Transformer": "mine", "Instructions": []})
    with pytest.raises(DesignError, match="'mine' is not supported"):
        build_group_design(node, table)


# --- missing values ---------------------------------------------------------------------

@pytest.mark.parametrize("model, instructions", [
    ({"X": [1, "age"]}, None),
    ({"X": [1, "age"]}, [{"Name": "Demean", "Input": "age"}]),
    ({"X": [1, "age"], "Formula": "1 + age"}, None),
    ({"X": ["age.*"]}, [{"Name": "Factor", "Input": "age"}]),
    ({"X": ["p"]}, [{"Name": "Product", "Input": ["age", "sex"], "Output": "p"}]),
])
def test_missing_covariate_names_the_subjects(model, instructions):
    table = _maps(participants("events_only/ds005"), ["gain", "loss"])
    table.loc[table["subject"].isin(["03", "11"]), "age"] = np.nan
    with pytest.raises(DesignError) as err:
        _design(model, table, instructions)
    assert "'age'" in str(err.value)
    assert "sub-03, sub-11" in str(err.value)
    assert "never filled with 0" in str(err.value)


# --- model files ------------------------------------------------------------------------

def _strict(schema):
    """bsmschema's JSON schema with unknown keys forbidden (its pydantic config misspells it)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if "properties" in out:
        out["additionalProperties"] = False
    return out


def _tables():
    ds005 = participants("events_only/ds005")
    wager = participants("wager2008_emoreg")
    return {
        "group_one_sample": _maps(wager, ["reappNegVsLookNeg"]),
        "group_covariate": _maps(wager, ["reappNegVsLookNeg"]),
        "group_two_sample": _maps(ds005, ["gain"]),
        "group_two_sample_formula": _maps(ds005, ["gain"]),
        "group_interaction": _maps(ds005, ["gain"]),
        "group_paired": _paired_table(),
        "group_anova_3x3": _maps(ds005, CELLS),
    }


MODEL_FILES = sorted(MODELS.glob("group_*.json"))


def test_every_design_has_a_model_file():
    assert {p.stem for p in MODEL_FILES} == {
        "group_one_sample", "group_covariate", "group_two_sample", "group_two_sample_formula",
        "group_interaction", "group_paired", "group_anova_3x3"}


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_model_file_validates_and_its_design_is_estimable(path):
    raw = json.loads(path.read_text())
    BIDSStatsModel.model_validate(raw)
    errors = list(Draft202012Validator(_strict(BIDSStatsModel.model_json_schema()))
                  .iter_errors(raw))
    assert errors == [], [e.message for e in errors]
    assert validate_model(copy.deepcopy(raw)) == []

    node = model_from_dict(raw).nodes[0]
    design = build_group_design(node, _tables()[path.stem])
    columns = list(design.matrix.columns)
    contrasts = []
    for c in node.contrasts:
        idx = [columns.index("intercept" if cond in (1, "1") else cond) for cond in c.conditions]
        w = np.zeros((np.atleast_2d(c.weights).shape[0], len(columns)))
        w[:, idx] = np.atleast_2d(c.weights)
        contrasts.append((c.name, w))
    check_design(design.matrix, contrasts)
