"""Real fMRIPrep confounds tables: globs, missing values, missing columns."""
import fnmatch
import numpy as np
import pandas as pd
import pytest

from bids_app.design import build_run_design
from bids_app.io.confounds import read_confounds
from bids_app.design.confounds import prepare_confounds
from bids_app.errors import DesignError, InputDataError
from bids_app.spec.model import model_from_dict
from conftest import real_data

TABLES = ["test-v21_desc-confounds_timeseries.tsv", "test_desc-confounds_regressors.tsv",
          "no_nonsteady_desc-confounds_regressors.tsv"]
TR, N_VOLS = 2.0, 30  # the example tables are truncated to 30 rows
GLOBS = ["trans_*", "rot_*", "a_comp_cor_0[0-4]", "motion_outlier*"]



def table_path(name: str):
    """One of the real fMRIPrep confounds tables (the test skips without them)."""
    return real_data(f"fmriprep_confounds_examples/{name}")

# a short block design inside the 60 s run
EVENTS = pd.DataFrame({"onset": [4.0, 24.0, 44.0], "duration": [8.0, 8.0, 8.0],
                       "trial_type": ["task", "task", "task"]})


def run_node(x, options=None):
    node = {"Level": "Run", "Name": "run", "GroupBy": ["run", "subject"],
            "Transformations": {"Transformer": "pybids-transforms-v1",
                                "Instructions": [{"Name": "Factor", "Input": ["trial_type"]}]},
            "Model": {"Type": "glm", "X": ["trial_type.task", 1, *x],
                      "HRF": {"Variables": ["trial_type.task"], "Model": "spm"},
                      "Options": options or {"HighPassFilterCutoffHz": 0}}}
    return model_from_dict({"Name": "m", "BIDSModelVersion": "1.0.0", "Nodes": [node]}).nodes[0]


@pytest.mark.parametrize("name", TABLES)
def test_globs_select_fmriprep_columns(name):
    path = table_path(name)
    table = read_confounds(path)
    design = build_run_design(run_node([*GLOBS, "framewise_displacement"]), EVENTS, tr=TR,
                              n_vols=N_VOLS, confounds=table)
    expected = ["trial_type.task", "intercept"]
    for pattern in [*GLOBS, "framewise_displacement"]:
        expected += [c for c in table.columns if fnmatch.fnmatchcase(c, pattern)]
    assert list(design.matrix.columns) == expected
    for col in expected[2:]:
        raw = table[col].to_numpy(float)
        ours = design.matrix[col].to_numpy()
        ok = ~np.isnan(raw)
        np.testing.assert_array_equal(ours[ok], raw[ok])  # untouched where present
        if not ok.all():  # fMRIPrep leaves row 0 of derivatives/FD empty
            assert not ok[0] and ok[1:].all()
            assert ours[0] == raw[1]  # nilearn load_confounds: first row takes the second's value
    filled = design.info.nan_policy["filled"]
    assert filled["framewise_displacement"] == {"leading": 1, "other": 0}
    assert "trans_x" not in filled
    has_outliers = any(fnmatch.fnmatchcase(c, "motion_outlier*") for c in table.columns)
    assert (design.info.dropped == []) == has_outliers
    if not has_outliers:  # older fMRIPrep: no spike columns -> dropped with a warning
        assert design.info.dropped == [{"entry": "motion_outlier*", "kind": "confound",
                                           "reason": "no such confound column"}]
        assert any("motion_outlier*" in w and path.name in w for w in design.info.warnings)


def test_missing_confound_policy_error_names_file_and_column():
    path = table_path(TABLES[1])
    with pytest.raises(DesignError) as err:
        build_run_design(run_node(["trans_x", "motion_outlier*"]), EVENTS, tr=TR, n_vols=N_VOLS,
                         confounds=read_confounds(path), missing_confounds="error")
    assert path.name in str(err.value) and "'motion_outlier*'" in str(err.value)
    with pytest.raises(DesignError, match=r"'trans_q'.*did you mean .*'trans_x'"):
        build_run_design(run_node(["trans_q"]), EVENTS, tr=TR, n_vols=N_VOLS,
                         confounds=read_confounds(path), missing_confounds="error")


def test_missing_confounds_file_follows_policy():
    design = build_run_design(run_node(["trans_x"]), EVENTS, tr=TR, n_vols=N_VOLS)
    assert design.info.dropped[0]["reason"] == "the run has no confounds file"
    with pytest.raises(DesignError, match="no confounds file"):
        build_run_design(run_node(["trans_x"]), EVENTS, tr=TR, n_vols=N_VOLS,
                         missing_confounds="error")


def test_gaps_all_na_and_interior():
    table = read_confounds(table_path(TABLES[0]))
    table["rot_x"] = np.nan
    table.loc[10:11, "trans_y"] = np.nan
    design = build_run_design(run_node(["trans_y", "rot_x"]), EVENTS, tr=TR, n_vols=N_VOLS,
                              confounds=table)
    assert "rot_x" not in design.matrix.columns
    assert design.info.dropped == [{"entry": "rot_x", "kind": "confound",
                                       "reason": "the confound column is all n/a"}]
    np.testing.assert_array_equal(design.matrix["trans_y"].to_numpy()[10:12],
                                  table["trans_y"].to_numpy()[[9, 9]])
    assert design.info.nan_policy["filled"]["trans_y"] == {"leading": 0, "other": 2}
    assert any("non-leading" in w and "trans_y" in w for w in design.info.warnings)


def test_row_count_mismatch_is_an_input_error():
    table = read_confounds(table_path(TABLES[0]))
    with pytest.raises(InputDataError, match=rf"{TABLES[0]}: 30 rows but the run has 31"):
        build_run_design(run_node(["trans_x"]), EVENTS, tr=TR, n_vols=31, confounds=table)


def test_prepare_confounds_reports_unusable_columns():
    table = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"], "c": [np.nan] * 3})
    prepared = prepare_confounds(table, 3, source="t.tsv")
    assert list(prepared.table.columns) == ["a"]
    assert prepared.unusable == {"b": "not numeric", "c": "all n/a"}


def test_fmriprep_cosines_with_our_drift_warn():
    table = read_confounds(table_path(TABLES[1]))
    design = build_run_design(run_node(["cosine*"], options={"HighPassFilterCutoffHz": 0.01}),
                              EVENTS, tr=TR, n_vols=N_VOLS, confounds=table)
    assert any("cosine" in w and "HighPassFilterCutoffHz to 0" in w
               for w in design.info.warnings)
