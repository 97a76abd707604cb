"""Clear errors, naming the file and the column, for bad inputs and models."""
import numpy as np
import pandas as pd
import pytest

from bids_app.design import build_run_design, expand_x
from bids_app.io.events import read_events
from bids_app.design.hrf import parse_hrf_model
from bids_app.errors import DesignError, InputDataError
from bids_app.spec.model import model_from_dict
from conftest import real_data

EVENTS = "haxby2001_sub1/sub-1/func/sub-1_task-objectviewing_run-01_events.tsv"
TR, N_VOLS = 2.5, 121

def run_node(instructions=(), x=("trial_type.*", 1), hrf="spm", level="Run"):
    model = {"Type": "glm", "X": list(x), "Options": {"HighPassFilterCutoffHz": 0.01}}
    if hrf:
        model["HRF"] = {"Variables": ["trial_type.*"], "Model": hrf}
    node = {"Level": level, "Name": "run", "GroupBy": ["run", "subject"], "Model": model,
            "Transformations": {"Transformer": "pybids-transforms-v1",
                                "Instructions": [{"Name": "Factor", "Input": ["trial_type"]},
                                                 *instructions]}}
    return model_from_dict({"Name": "m", "BIDSModelVersion": "1.0.0", "Nodes": [node]}).nodes[0]


def edited_events(tmp_path, edit):
    table = pd.read_csv(real_data(EVENTS), sep="\t")
    path = tmp_path / "sub-1_task-objectviewing_run-01_events.tsv"
    edit(table).to_csv(path, sep="\t", index=False, na_rep="n/a")
    return path


@pytest.mark.parametrize("column", ["onset", "duration"])
def test_missing_required_column(tmp_path, column):
    path = edited_events(tmp_path, lambda t: t.drop(columns=column))
    with pytest.raises(InputDataError, match=rf"{path.name}: missing required column\(s\) '{column}'"):
        read_events(path)


def test_negative_duration_names_file_column_and_row(tmp_path):
    path = edited_events(tmp_path, lambda t: t.assign(duration=np.r_[t.duration[:2], -1.0,
                                                                     t.duration[3:]]))
    with pytest.raises(InputDataError, match=rf"{path.name}: column 'duration' is negative in row\(s\) 3$"):
        read_events(path)


def test_na_onset_and_text_onset(tmp_path):
    path = edited_events(tmp_path, lambda t: t.assign(onset=[np.nan, *t.onset[1:]]))
    with pytest.raises(InputDataError, match=rf"{path.name}: column 'onset' is n/a in row\(s\) 1$"):
        read_events(path)
    path = edited_events(tmp_path, lambda t: t.assign(onset=["soon", *t.onset[1:]]))
    with pytest.raises(InputDataError, match="column 'onset' has non-numeric values in row"):
        read_events(path)


def test_unreadable_events_file(tmp_path):
    with pytest.raises(InputDataError, match="cannot read events file"):
        read_events(tmp_path / "nope_events.tsv")


def test_na_duration_is_valid_until_convolved(tmp_path):
    path = edited_events(tmp_path, lambda t: t.assign(duration=[np.nan, *t.duration[1:]]))
    events = read_events(path)  # valid BIDS
    with pytest.raises(DesignError, match=r"'trial_type.scissors' has 1 event\(s\) with n/a duration"):
        build_run_design(run_node(), events, tr=TR, n_vols=N_VOLS)


def test_transformation_naming_missing_column():
    events = read_events(real_data(EVENTS))
    bad = {"Name": "Scale", "Input": ["trial_type.fcae"]}
    with pytest.raises(DesignError) as err:
        build_run_design(run_node([bad]), events, tr=TR, n_vols=N_VOLS)
    message = str(err.value)
    assert message.startswith("Transformations.Instructions[1] (Scale): Input names column "
                              "'trial_type.fcae', which is not in this run")
    assert "'trial_type.face'" in message  # close match
    other = {"Name": "Orthogonalize", "Input": ["trial_type.face"], "Other": ["nope*"]}
    with pytest.raises(DesignError, match=r"Instructions\[1\] \(Orthogonalize\): Other names column 'nope\*'"):
        build_run_design(run_node([other]), events, tr=TR, n_vols=N_VOLS)


def test_unknown_transformation_and_transformer():
    events = read_events(real_data(EVENTS))
    with pytest.raises(DesignError, match=r"Instructions\[1\]: unknown transformation 'Smooth'"):
        build_run_design(run_node([{"Name": "Smooth", "Input": ["trial_type.face"]}]), events,
                         tr=TR, n_vols=N_VOLS)
    node = run_node()
    node.transformations["Transformer"] = "fitlins-v9"
    with pytest.raises(DesignError, match="Transformer 'fitlins-v9' is not supported"):
        build_run_design(node, events, tr=TR, n_vols=N_VOLS)


def test_pybids_failure_is_reported_with_instruction_index():
    events = read_events(real_data(EVENTS))
    no_output = {"Name": "Copy", "Input": ["trial_type.face"]}  # Copy needs an Output
    with pytest.raises(DesignError, match=r"Instructions\[1\] \(Copy\): ValueError: .*requires output"):
        build_run_design(run_node([no_output]), events, tr=TR, n_vols=N_VOLS)


def test_unknown_hrf_model():
    events = read_events(real_data(EVENTS))
    with pytest.raises(DesignError, match=r"Model.HRF: unknown HRF model 'afni'; known models: spm,"):
        build_run_design(run_node(hrf="afni"), events, tr=TR, n_vols=N_VOLS)


def test_hrf_spellings_and_fir_parameters():
    assert parse_hrf_model("SPM + Derivative")[0].name == "spm + derivative"
    assert parse_hrf_model("glover+derivative+dispersion")[0].name == "glover + derivative + dispersion"
    assert parse_hrf_model("spm", derivative=True, dispersion=True)[0].name == \
        "spm + derivative + dispersion"
    assert parse_hrf_model("fir", {"FIRDelays": [0, 1.0, 2]})[0].fir_delays == (0, 1, 2)
    assert parse_hrf_model("fir", {"Delays": [3]})[0].fir_delays == (3,)
    _, notes = parse_hrf_model("spm", {"fir_delays": [1]})
    assert notes == ["Model.HRF: parameter 'fir_delays' is not used by the spm model"]
    with pytest.raises(DesignError, match="needs Parameters.fir_delays"):
        parse_hrf_model("fir")
    with pytest.raises(DesignError, match="FIR delay 1.5 is not a non-negative whole number"):
        parse_hrf_model("fir", {"fir_delays": [0, 1.5]})


def test_text_variable_needs_factor():
    events = read_events(real_data(EVENTS))
    node = model_from_dict({"Name": "m", "BIDSModelVersion": "1.0.0", "Nodes": [{
        "Level": "Run", "Name": "run", "GroupBy": ["run"],
        "Model": {"Type": "glm", "X": ["trial_type", 1],
                  "HRF": {"Variables": ["trial_type"], "Model": "spm"}}}]}).nodes[0]
    with pytest.raises(DesignError, match=r"'trial_type' holds text values \('scissors', 'face', 'cat'\); .*Factor"):
        build_run_design(node, events, tr=TR, n_vols=N_VOLS)


def test_non_run_node_and_bad_timing():
    events = read_events(real_data(EVENTS))
    with pytest.raises(DesignError, match="at level Subject, not Run"):
        build_run_design(run_node(level="Subject"), events, tr=TR, n_vols=N_VOLS)
    with pytest.raises(DesignError, match="repetition time must be positive"):
        build_run_design(run_node(), events, tr=0, n_vols=N_VOLS)
    with pytest.raises(DesignError, match="slice_time_ref"):
        build_run_design(run_node(), events, tr=TR, n_vols=N_VOLS, slice_time_ref=1.5)


def test_expand_x():
    columns = ["trial_type.face", "trial_type.house", "trans_x", "trans_y", "rot_x"]
    assert expand_x([1, "trial_type.*", "trans_x", "trans_*"], columns) == [
        "intercept", "trial_type.face", "trial_type.house", "trans_x", "trans_y"]
    assert expand_x(["a_comp_cor_0[0-1]"], ["a_comp_cor_00", "a_comp_cor_01", "a_comp_cor_02"]) \
        == ["a_comp_cor_00", "a_comp_cor_01"]
    with pytest.raises(DesignError, match=r"Model.X column 'trial_type.hose' matches no column "
                                          r"\(did you mean 'trial_type.house'"):
        expand_x(["trial_type.hose"], columns)
    with pytest.raises(DesignError, match=r"Model.X pattern 'motion_outlier\*' matches no column$"):
        expand_x(["motion_outlier*"], columns)
