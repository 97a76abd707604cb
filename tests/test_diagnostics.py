"""Design diagnostics: rank deficiency with its cause, estimability, collinearity.

References: numpy rank/condition number, VIF as the diagonal of the inverse
correlation matrix (a closed form independent of statsmodels' regressions),
and the real participants tables of ds000003 / ds000005.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bids_app.design.diagnostics import (CONDITION_WARN, VIF_WARN, check_design, diagnose,
                                         describe_dependencies, variance_inflation)
from bids_app.design.group import build_group_design
from bids_app.errors import DesignError
from bids_app.spec.model import model_from_dict
from conftest import participants



def _paired(x: list) -> pd.DataFrame:
    """ds000003's 13 subjects x (word, pseudoword), design built by the group code."""
    p = participants("events_only/ds000003")
    table = pd.concat([p.assign(contrast="word"), p.assign(contrast="pseudoword")],
                      ignore_index=True)
    node = model_from_dict({"Name": "m", "BIDSModelVersion": "1.0.0", "Nodes": [{
        "Level": "Dataset", "Name": "d", "GroupBy": [], "Model": {"Type": "glm", "X": x},
        "Transformations": {"Transformer": "pybids-transforms-v1", "Instructions": [
            {"Name": "Factor", "Input": ["contrast", "subject"]}]}}]}).nodes[0]
    return build_group_design(node, table).matrix


def _unit(matrix: pd.DataFrame, column: str) -> np.ndarray:
    return (matrix.columns == column).astype(float)


def test_redundant_intercept_with_subject_columns_fails_with_its_cause():
    # the forum case: 1 in X next to one regressor per subject
    X = _paired([1, "contrast.word", "subject.*"])
    contrasts = [("word", _unit(X, "contrast.word"))]
    diag = diagnose(X, contrasts)
    assert diag.non_estimable == []  # the condition effect itself is estimable...
    with pytest.raises(DesignError) as err:  # ...but the design is still refused
        check_design(X, contrasts)
    message = str(err.value)
    assert "redundant intercept" in message
    assert "'intercept' equals the sum of the subject.* columns" in message
    assert "Remove 1 from Model.X" in message
    assert diag.rank == np.linalg.matrix_rank(X.to_numpy()) == X.shape[1] - 1


def test_paired_spm_design_is_rank_deficient_but_accepted_with_a_warning():
    X = _paired(["contrast.word", "contrast.pseudoword", "subject.*"])
    diff = _unit(X, "contrast.word") - _unit(X, "contrast.pseudoword")
    diag = check_design(X, [("wordVsPseudoword", diff)])
    assert diag.problems == []
    assert diag.dependencies == [
        "the sum of the contrast.* columns equals the sum of the subject.* columns"]
    assert any("every requested contrast is estimable" in w for w in diag.warnings)
    assert diag.condition_number == np.inf


def test_non_estimable_contrasts_are_listed_by_name():
    X = _paired(["contrast.word", "contrast.pseudoword", "subject.*"])
    word = _unit(X, "contrast.word")
    f_rows = np.vstack([word - _unit(X, "contrast.pseudoword"), _unit(X, "subject.01")])
    diag = diagnose(X, [("word", word), ("ok", word - _unit(X, "contrast.pseudoword")),
                        ("F", f_rows)])
    assert diag.non_estimable == ["word", "F"]
    with pytest.raises(DesignError, match="contrast 'word' is not estimable"):
        check_design(X, [("word", word)])


def _random(n=40, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3))


def test_multiple_of_another_column_is_named_with_the_factor():
    a = 20 + 3 * _random()[:, 0]
    X = pd.DataFrame({"intercept": 1.0, "age": a, "age_months": 12 * a})
    diag = diagnose(X, [("age", [0, 1, 0])])
    assert diag.dependencies == ["'age_months' is a multiple of 'age' ('age_months' = 12*'age')"]
    assert diag.non_estimable == ["age"]


def test_generic_dependency_is_written_as_an_equation():
    r = _random()
    X = pd.DataFrame({"a": r[:, 0], "b": r[:, 1], "c": 0.5 * r[:, 0] + r[:, 1], "d": r[:, 2]})
    assert diagnose(X).dependencies == ["'c' = 0.5*'a' + 'b'"]


def test_all_zero_column_and_two_independent_dependencies():
    r = _random()
    X = pd.DataFrame({"a": r[:, 0], "empty": 0.0, "b": r[:, 1], "b_copy": r[:, 1]})
    diag = diagnose(X)
    assert diag.rank == 2
    assert sorted(diag.dependencies) == ["'b_copy' and 'b' are identical", "'empty' is all zeros"]


def test_describe_dependencies_in_original_units():
    names = ["x", "y"]
    null = np.array([[3.0], [-1.0]])  # 3 x - y = 0  <=>  y = 3 x
    assert describe_dependencies(null, names) == ["'y' is a multiple of 'x' ('y' = 3*'x')"]


def test_rank_condition_number_and_vif_match_closed_forms():
    p = participants("events_only/ds005")
    age = p["age"].to_numpy(float)
    X = pd.DataFrame({"intercept": 1.0, "age": age - age.mean(), "sex": p["sex"].astype(float),
                      "ageSex": (age - age.mean()) * p["sex"]})
    diag = diagnose(X)
    A = X.to_numpy()
    assert diag.rank == np.linalg.matrix_rank(A) == 4
    assert diag.condition_number == pytest.approx(np.linalg.cond(A / np.linalg.norm(A, axis=0)),
                                                  rel=1e-10)
    # with an intercept, VIF_j is the j-th diagonal element of the inverse correlation matrix
    inv_corr = np.diag(np.linalg.inv(np.corrcoef(A[:, 1:], rowvar=False)))
    assert diag.vif["intercept"] is None
    np.testing.assert_allclose([diag.vif[c] for c in ("age", "sex", "ageSex")], inv_corr,
                               rtol=1e-8)


def test_collinearity_warnings_use_the_stated_thresholds():
    r = _random(n=50, seed=4)
    close = r[:, 0] + 0.15 * r[:, 1]  # correlation ~0.99 with r[:, 0]
    X = pd.DataFrame({"intercept": 1.0, "x": r[:, 0], "x_noisy": close})
    diag = check_design(X)  # warnings never raise
    expected_vif = np.diag(np.linalg.inv(np.corrcoef(r[:, 0], close)))
    assert diag.vif["x"] == pytest.approx(expected_vif[0], rel=1e-8)
    assert diag.vif["x"] > VIF_WARN
    assert any(f"'x' is {diag.vif['x']:.1f} > 10" in w for w in diag.warnings)
    fine = check_design(X[["intercept", "x"]])
    assert fine.warnings == [] and fine.condition_number < CONDITION_WARN

    # an uncentred covariate far from 0 is nearly collinear with the intercept
    X = pd.DataFrame({"intercept": 1.0, "year": 2000 + r[:, 2]})
    diag = check_design(X)
    assert diag.condition_number > CONDITION_WARN
    assert any("condition number" in w and "> 30" in w for w in diag.warnings)
    centred = check_design(X.assign(year=X["year"] - X["year"].mean()))
    assert centred.condition_number == pytest.approx(1.0) and centred.warnings == []


def test_cell_means_coding_has_no_collinearity_warning():
    p = participants("events_only/ds005")
    X = pd.DataFrame({"sex.0": (p["sex"] == 0).astype(float),
                      "sex.1": (p["sex"] == 1).astype(float)})
    diag = check_design(X, [("diff", [-1, 1])])
    assert diag.vif == {"sex.0": 1.0, "sex.1": 1.0}  # orthogonal columns
    assert diag.warnings == []


def _vif_designs():
    """Designs whose VIF differ in kind: explicit, implicit (cell means) and no constant; a zero
    column; near and exact collinearity; a paired design with subject columns; real covariates."""
    r = _random(n=24, seed=11)
    group = (np.arange(24) % 2).astype(float)
    ds005 = participants("events_only/ds005")
    age = ds005["age"].to_numpy(float)
    return {
        "intercept + covariates": np.column_stack([np.ones(24), r[:, 0], r[:, 1] + 0.5 * r[:, 0]]),
        "cell means + covariate": np.column_stack([group, 1 - group, r[:, 2]]),
        "no constant": np.column_stack([r[:, 0] + 3, r[:, 1] - 2, r[:, 2]]),
        "zero column": np.column_stack([np.zeros(24), r[:, 0], r[:, 1]]),
        "nearly collinear": np.column_stack([np.ones(24), r[:, 0], r[:, 0] + 1e-4 * r[:, 1]]),
        "exactly collinear": np.column_stack([np.ones(24), r[:, 0], 2 * r[:, 0]]),
        "uncentred year": np.column_stack([np.ones(24), 2000 + r[:, 2]]),
        # word column and 13 subject columns (the intercept dropped: it is their sum)
        "paired": _paired([1, "contrast.word", "subject.*"]).to_numpy(float)[:, 1:],
        "ds005 age x sex": np.column_stack([np.ones(len(age)), age, ds005["sex"].astype(float),
                                            age * ds005["sex"]]),
    }


@pytest.mark.parametrize("name", ["intercept + covariates", "cell means + covariate", "no constant",
                                  "zero column", "nearly collinear", "exactly collinear", "uncentred year",
                                  "paired", "ds005 age x sex"])
def test_variance_inflation_equals_statsmodels(name):
    """Our 1 / (1 - R^2) against statsmodels' variance_inflation_factor (standardize=False),
    which the diagnostics used before (its import cost ~1 s of every covariate run)."""
    import inspect
    import warnings

    from statsmodels.stats.outliers_influence import variance_inflation_factor

    # statsmodels 0.15 standardizes by default; 0.14 has no such option and does not
    raw = {"standardize": False} if "standardize" in inspect.signature(variance_inflation_factor).parameters else {}

    X = _vif_designs()[name]
    for j in range(X.shape[1]):
        if np.ptp(X[:, j]) == 0:
            continue
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            expected = variance_inflation_factor(X, j, **raw)
        ours = variance_inflation(X, j)
        assert ours >= 1.0
        if expected >= 1e10:   # a column in the span of the others: both reach the clip (1e15)
            assert ours >= 1e10, (name, j, ours, expected)
        else:
            assert ours == pytest.approx(expected, rel=1e-7), (name, j)


@pytest.mark.parametrize("X, contrasts, kwargs, message", [
    (pd.DataFrame({"intercept": np.ones(3), "a": [1.0, 2.0, np.nan]}), [], {}, "non-finite"),
    (pd.DataFrame({"intercept": np.ones(2), "a": [1.0, 2.0]}), [], {},
     "no residual degrees of freedom"),
    (pd.DataFrame({"intercept": np.ones(4), "a": [1.0, 2.0, 3.0, 5.0]}), [("c", [1, 0, 0])], {},
     "3 weights for 2 design columns"),
])
def test_problems_raise(X, contrasts, kwargs, message):
    with pytest.raises(DesignError, match=message):
        check_design(X, contrasts, **kwargs)


def test_zero_residual_dof_allowed_for_fixed_effects():
    X = pd.DataFrame({"intercept": np.ones(1)})
    assert check_design(X, [("mean", [1])], require_residual_dof=False).rank == 1


def test_to_dict_is_strict_json():
    X = _paired(["contrast.word", "contrast.pseudoword", "subject.*"])
    out = diagnose(X).to_dict()
    text = json.dumps(out, allow_nan=False)
    assert json.loads(text)["condition_number"] == "inf"
    assert out["rank"] == 14 and out["n_columns"] == 15
