"""Transformations on real events: pybids' implementations plus our fixes."""
import numpy as np
import pytest
from nilearn.glm.first_level import compute_regressor

from bids_app.design import build_run_design
from bids_app.io.confounds import read_confounds
from bids_app.io.events import read_events
from bids_app.spec.model import model_from_dict
from conftest import real_data, run_node

DS005 = "events_only/ds005/sub-01/func/sub-01_task-mixedgamblestask_run-01_events.tsv"
HAXBY = "haxby2001_sub1/sub-1/func/sub-1_task-objectviewing_run-02_events.tsv"
CONFOUNDS = "fmriprep_confounds_examples/test-v21_desc-confounds_timeseries.tsv"
TR, N_VOLS = 2.0, 240
SOURCE = "sub-01_task-mixedgamblestask_run-01_bold.nii.gz"


@pytest.fixture(scope="module")
def events():
    return read_events(real_data(DS005))


def design(events, instructions, x, hrf=None, **kw):
    kw.setdefault("tr", TR)
    kw.setdefault("n_vols", N_VOLS)
    return build_run_design(run_node(instructions, x, hrf), events, source=SOURCE, **kw)


def spm(events, amplitudes, model="spm"):
    reg, _ = compute_regressor(np.vstack([events["onset"], events["duration"], amplitudes]),
                               model, TR * np.arange(N_VOLS))
    return reg


def boxcar(events, amplitudes, times):
    """Closed form: sum of amplitudes of the events covering each time."""
    on, off = events["onset"].to_numpy(), (events["onset"] + events["duration"]).to_numpy()
    return ((times[:, None] >= on) & (times[:, None] < off)) @ np.asarray(amplitudes, float)


@pytest.mark.parametrize("key", ["GroupBy", "Groupby"])
def test_groupby_spellings(events, key):
    plain = design(events, [{"Name": "Demean", "Input": ["gain"]}], ["gain"],
                   {"Variables": ["gain"], "Model": "spm"})
    grouped = design(events, [{"Name": "Demean", "Input": ["gain"], key: ["run"]}], ["gain"],
                     {"Variables": ["gain"], "Model": "spm"})
    gain = events["gain"].to_numpy(float)
    np.testing.assert_allclose(grouped.matrix["gain"], spm(events, gain - gain.mean())[:, 0],
                               atol=1e-10)
    np.testing.assert_array_equal(grouped.matrix.to_numpy(), plain.matrix.to_numpy())


def test_convolve_flags_and_no_double_convolution(events):
    instr = [{"Name": "Convolve", "Input": ["gain"], "Model": "spm", "Derivative": True,
              "Output": ["gain_hrf"]}]
    d = design(events, instr, ["gain_hrf*"], {"Variables": ["gain_hrf"], "Model": "spm"})
    assert list(d.matrix.columns) == ["gain_hrf", "gain_hrf_derivative"]
    np.testing.assert_allclose(d.matrix.to_numpy(), spm(events, events["gain"], "spm + derivative"),
                               atol=1e-10)
    assert any("already convolved" in w for w in d.info.warnings)
    assert d.info.convolved["gain_hrf"]["model"] == "spm + derivative"


def test_convolve_fir(events):
    instr = [{"Name": "Convolve", "Input": ["RT"], "Model": "fir", "FIRDelays": [0, 2]}]
    d = design(events, instr, ["RT_delay_*"])
    reg, names = compute_regressor(np.vstack([events["onset"], events["duration"], events["RT"]]),
                                   "fir", TR * np.arange(N_VOLS), fir_delays=[0, 2])
    assert names == ["cond_delay_0", "cond_delay_2"]
    np.testing.assert_allclose(d.matrix[["RT_delay_0", "RT_delay_2"]].to_numpy(), reg, atol=1e-12)


def test_orthogonalize_threshold_product_sum(events):
    instr = [
        {"Name": "Orthogonalize", "Input": ["loss"], "Other": ["gain"], "Output": ["loss_o"]},
        {"Name": "Threshold", "Input": ["RT"], "Threshold": 1.5, "Binarize": True, "Output": ["slow"]},
        {"Name": "Product", "Input": ["gain", "loss"], "Output": "gxl"},
        {"Name": "Sum", "Input": ["gain", "loss"], "Weights": [1, -2], "Output": "g_2l"},
    ]
    cols = ["loss_o", "slow", "gxl", "g_2l"]
    d = design(events, instr, cols, {"Variables": cols, "Model": "spm"})
    gain, loss, rt = (events[c].to_numpy(float) for c in ("gain", "loss", "RT"))
    X = np.c_[np.ones_like(gain), gain]
    loss_o = loss - gain * np.linalg.lstsq(X, loss, rcond=None)[0][1]
    assert abs(np.corrcoef(loss_o, gain)[0, 1]) < 1e-12
    expected = np.column_stack([spm(events, a)[:, 0] for a in
                                (loss_o, (rt >= 1.5).astype(float), gain * loss, gain - 2 * loss)])
    np.testing.assert_allclose(d.matrix[cols].to_numpy(), expected, atol=1e-9)


def test_split_by_response(events):
    d = design(events, [{"Name": "Split", "Input": ["gain"], "By": ["respcat"]}], ["gain.*"],
               {"Variables": ["gain.*"], "Model": "spm"})
    levels = sorted(events["respcat"].unique())
    assert list(d.matrix.columns) == [f"gain.respcat[{v}]" for v in levels]
    for v in levels:
        amp = np.where(events["respcat"] == v, events["gain"], 0.0)
        np.testing.assert_allclose(d.matrix[f"gain.respcat[{v}]"], spm(events, amp)[:, 0], atol=1e-10)


def test_unconvolved_and_dense_variables(events):
    times = TR * np.arange(N_VOLS)
    d = design(events, [{"Name": "ToDense", "Input": ["gain"], "Output": ["gain_dense"],
                         "SamplingRate": 10}], ["gain", "gain_dense"])
    expected = boxcar(events, events["gain"], times)
    np.testing.assert_allclose(d.matrix["gain"], expected, atol=1e-12)        # sparse, no HRF
    np.testing.assert_allclose(d.matrix["gain_dense"], expected, atol=1e-12)  # 10 Hz -> frames
    assert d.info.not_convolved == ["gain"]
    # a dense variable in Model.HRF is convolved as its piecewise-constant time course
    conv = design(events, [{"Name": "ToDense", "Input": ["gain"], "SamplingRate": 10}], ["gain"],
                  {"Variables": ["gain"], "Model": "spm"})
    np.testing.assert_allclose(conv.matrix["gain"], spm(events, events["gain"])[:, 0], atol=1e-9)


def test_condition_absent_from_run_is_dropped():
    events = read_events(real_data(HAXBY))
    events = events[events["trial_type"] != "cat"]
    node = model_from_dict({"Name": "m", "BIDSModelVersion": "1.0.0", "Nodes": [{
        "Level": "Run", "Name": "run", "GroupBy": ["run"],
        "Transformations": {"Transformer": "pybids-transforms-v1",
                            "Instructions": [{"Name": "Factor", "Input": ["trial_type"]}]},
        "Model": {"Type": "glm", "X": ["trial_type.face", "trial_type.cat", 1],
                  "HRF": {"Variables": ["trial_type.face", "trial_type.cat"], "Model": "spm"},
                  "Options": {"HighPassFilterCutoffHz": 0}}}]}).nodes[0]
    d = build_run_design(node, events, tr=2.5, n_vols=121, missing_confounds="error")
    assert list(d.matrix.columns) == ["trial_type.face", "intercept"]
    assert d.info.dropped == [{"entry": "trial_type.cat", "kind": "event",
                                  "reason": "no such event variable in this run"}]


def test_transforming_a_confound():
    table = read_confounds(real_data(CONFOUNDS))
    events = read_events(real_data(DS005)).iloc[:5].assign(onset=[2.0, 12.0, 22.0, 32.0, 42.0])
    d = design(events, [{"Name": "Scale", "Input": ["framewise_displacement"], "Output": ["fd_z"]}],
               ["fd_z", "trans_x"], confounds=table, n_vols=len(table))
    fd = table["framewise_displacement"].to_numpy(float, copy=True)
    fd[0] = fd[1]  # leading n/a policy, before transformations
    np.testing.assert_allclose(d.matrix["fd_z"], (fd - fd.mean()) / fd.std(ddof=1), atol=1e-12)
    np.testing.assert_array_equal(d.matrix["trans_x"], table["trans_x"].to_numpy(float))


def test_logical_and_or_not_on_event_amplitudes(events):
    """And/Or/Not give 0/1 amplitudes per event; unconvolved, they are boxcars of those amplitudes."""
    instr = [
        {"Name": "Threshold", "Input": ["gain"], "Threshold": 20, "Binarize": True, "Output": ["big_gain"]},
        {"Name": "Threshold", "Input": ["loss"], "Threshold": 10, "Binarize": True, "Output": ["big_loss"]},
        {"Name": "And", "Input": ["big_gain", "big_loss"], "Output": ["both"]},
        {"Name": "Or", "Input": ["big_gain", "big_loss"], "Output": ["either"]},
        {"Name": "Not", "Input": ["big_gain"], "Output": ["small_gain"]},
    ]
    cols = ["both", "either", "small_gain"]
    d = design(events, instr, cols, {"Variables": cols, "Model": "spm"})
    big_gain = events["gain"].to_numpy(float) >= 20
    big_loss = events["loss"].to_numpy(float) >= 10
    for col, amp in (("both", big_gain & big_loss), ("either", big_gain | big_loss), ("small_gain", ~big_gain)):
        assert 0 < amp.sum() < len(amp)  # a real mix of events, not vacuous
        np.testing.assert_allclose(d.matrix[col], spm(events, amp.astype(float))[:, 0], atol=1e-10, err_msg=col)


def test_assign_moves_one_variables_amplitude_onto_anothers_events(events):
    """Assign: RT as the amplitude of the gain events (a parametric RT modulator)."""
    d = design(events, [{"Name": "Assign", "Input": ["RT"], "Target": "gain", "Output": ["rt_on_gain"]}],
               ["rt_on_gain"], {"Variables": ["rt_on_gain"], "Model": "spm"})
    np.testing.assert_allclose(d.matrix["rt_on_gain"], spm(events, events["RT"].to_numpy(float))[:, 0],
                               atol=1e-10)
    # onset instead: the gain events moved 2 s later
    later = events.assign(onset=events["onset"] + 2.0)
    moved = design(later, [{"Name": "Assign", "Input": ["gain"], "Target": "loss", "InputAttr": "onset",
                            "TargetAttr": "onset", "Output": ["loss_at_gain"]}],
                   ["loss_at_gain"], {"Variables": ["loss_at_gain"], "Model": "spm"})
    np.testing.assert_allclose(moved.matrix["loss_at_gain"],
                               spm(later, events["loss"].to_numpy(float))[:, 0], atol=1e-10)


def test_select_and_delete_control_which_variables_exist(events):
    kept = design(events, [{"Name": "Select", "Input": ["gain", "loss"]}], ["gain", "loss"],
                  {"Variables": ["gain", "loss"], "Model": "spm"})
    assert list(kept.matrix.columns) == ["gain", "loss"]
    # a variable Select dropped is then absent: Model.X naming it is reported, not silently zero
    dropped = design(events, [{"Name": "Select", "Input": ["gain"]}], ["gain", "loss"],
                     {"Variables": ["gain", "loss"], "Model": "spm"})
    assert list(dropped.matrix.columns) == ["gain"]
    assert [e["entry"] for e in dropped.info.dropped] == ["loss"]
    deleted = design(events, [{"Name": "Delete", "Input": ["loss"]}], ["gain", "loss"],
                     {"Variables": ["gain", "loss"], "Model": "spm"})
    assert list(deleted.matrix.columns) == ["gain"] and deleted.info.dropped[0]["entry"] == "loss"


def test_dropna_removes_the_events_with_missing_values(events):
    """'parametric loss' is n/a on most rows: DropNA keeps the others, as the HRF then sees them."""
    column = "parametric loss"
    with_na = events.assign(**{column: np.where(np.arange(len(events)) % 3 == 0, np.nan,
                                                events["loss"].to_numpy(float))})
    d = design(with_na, [{"Name": "DropNA", "Input": [column]}], [column],
               {"Variables": [column], "Model": "spm"})
    keep = np.isfinite(with_na[column].to_numpy(float))
    expected = spm(with_na[keep], with_na[column].to_numpy(float)[keep])[:, 0]
    np.testing.assert_allclose(d.matrix[column], expected, atol=1e-10)


def test_lag_and_resample_on_a_confound():
    """Lag shifts a dense confound by whole volumes (first value repeated); Resample round-trips."""
    table = read_confounds(real_data(CONFOUNDS))
    events = read_events(real_data(DS005)).iloc[:5].assign(onset=[2.0, 12.0, 22.0, 32.0, 42.0])
    instr = [{"Name": "Lag", "Input": ["trans_x"], "Shift": 1, "Order": 0, "Output": ["trans_x_lag"]},
             {"Name": "Resample", "Input": ["trans_y"], "SamplingRate": 1 / TR, "Output": ["trans_y_tr"]}]
    d = design(events, instr, ["trans_x_lag", "trans_y_tr"], confounds=table, n_vols=len(table))
    x = table["trans_x"].to_numpy(float)
    np.testing.assert_allclose(d.matrix["trans_x_lag"], np.r_[x[0], x[:-1]], atol=1e-12)
    np.testing.assert_allclose(d.matrix["trans_y_tr"], table["trans_y"].to_numpy(float), atol=1e-12)


@pytest.mark.parametrize("name", [
    "/d/sub-01/ses-2/func/sub-01_ses-2_task-x_acq-y_run-03_echo-1_space-MNI_desc-preproc_bold.nii.gz",
    "/d/sub-1/func/sub-1_task-objectviewing_run-01_events.tsv",
    "/d/sub-01/func/sub-01_task-a_res-2_den-91k_hemi-L_bold.func.gii"])
def test_run_entities_are_pybids_defaults(name):
    from bids.layout import parse_file_entities

    from bids_app.design.first_level import _entities

    expected = {k: str(v) for k, v in parse_file_entities(name).items() if k not in ("suffix", "extension", "datatype")}
    assert _entities(name) == expected and expected["task"]
