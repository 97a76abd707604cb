"""Parametric modulation on the real ds005 (mixed gambles) events."""
import numpy as np
import pytest
from nilearn.glm.first_level import compute_regressor

from bids_app.design import build_run_design
from bids_app.io.events import read_events
from conftest import MODELS, real_data, run_node

RUNS = [f"events_only/ds005/sub-01/func/sub-01_task-mixedgamblestask_run-0{run}_events.tsv" for run in (1, 2, 3)]
TR, N_VOLS = 2.0, 240  # task-mixedgamblestask_bold.json; 240 volumes per run in ds005


def _node(instructions, x, hrf=None):
    return run_node(instructions, x, hrf, high_pass_hz=1 / 128)


def by_hand(events, amplitudes, model="spm"):
    """nilearn compute_regressor on the raw events table, at TR * arange(n)."""
    reg, _ = compute_regressor(
        np.vstack([events["onset"], events["duration"], amplitudes]), model,
        TR * np.arange(N_VOLS))
    return reg[:, 0]


@pytest.mark.parametrize("run", RUNS, ids=lambda p: p.split("_")[2])
def test_demeaned_gain_loss_via_convolve(run):
    path = real_data(run)
    events = read_events(path)
    node = _node(
        [{"Name": "Factor", "Input": ["trial_type"]},
         {"Name": "Rename", "Input": ["trial_type.parametric gain"], "Output": ["task"]},
         {"Name": "Scale", "Input": ["gain", "loss"], "Demean": True, "Rescale": False},
         {"Name": "Convolve", "Input": ["task", "gain", "loss"], "Model": "spm"}],
        ["task", "gain", "loss", 1])
    design = build_run_design(node, events, tr=TR, n_vols=N_VOLS, source=str(path))
    gain = events["gain"].to_numpy(float)
    loss = events["loss"].to_numpy(float)
    np.testing.assert_allclose(design.matrix["gain"], by_hand(events, gain - gain.mean()),
                               atol=1e-10, rtol=0)
    np.testing.assert_allclose(design.matrix["loss"], by_hand(events, loss - loss.mean()),
                               atol=1e-10, rtol=0)
    np.testing.assert_allclose(design.matrix["task"], by_hand(events, np.ones(len(events))),
                               atol=1e-10, rtol=0)
    # demeaned modulators are far less collinear with the task regressor than raw ones
    raw = by_hand(events, gain)
    r_demeaned = abs(np.corrcoef(design.matrix["gain"], design.matrix["task"])[0, 1])
    r_raw = abs(np.corrcoef(raw, design.matrix["task"])[0, 1])
    assert r_demeaned < 0.5 < r_raw
    assert design.info.convolved["gain"]["by"] == "Transformations.Instructions[3]"


def test_scaled_gain_via_model_hrf_with_derivative():
    events = read_events(real_data(RUNS[0]))
    node = _node(
        [{"Name": "Scale", "Input": ["gain"], "Output": ["gain_z"]}],  # demean + rescale (defaults)
        ["gain_z", 1], hrf={"Variables": ["gain_z"], "Model": "glover + derivative"})
    design = build_run_design(node, events, tr=TR, n_vols=N_VOLS)
    gain = events["gain"].to_numpy(float)
    z = (gain - gain.mean()) / gain.std(ddof=1)  # pandas' std, as pybids uses
    reg, names = compute_regressor(np.vstack([events["onset"], events["duration"], z]),
                                   "glover + derivative", TR * np.arange(N_VOLS))
    assert names == ["cond", "cond_derivative"]
    np.testing.assert_allclose(design.matrix[["gain_z", "gain_z_derivative"]].to_numpy(), reg,
                               atol=1e-10, rtol=0)


def test_events_with_na_value_leave_that_variable_only():
    events = read_events(real_data(RUNS[0]))
    events.loc[events["respnum"] == 0, "RT"] = np.nan  # no response: RT unknown
    assert 0 < events["RT"].isna().sum() < len(events)
    node = _node([], ["RT", "gain", 1], hrf={"Variables": ["RT", "gain"], "Model": "spm"})
    design = build_run_design(node, events, tr=TR, n_vols=N_VOLS)
    kept = events[events["RT"].notna()]
    np.testing.assert_allclose(design.matrix["RT"], by_hand(kept, kept["RT"]), atol=1e-10)
    np.testing.assert_allclose(design.matrix["gain"], by_hand(events, events["gain"]), atol=1e-10)


def test_all_na_column_is_dropped_as_absent_event():
    events = read_events(real_data(RUNS[0]))  # "parametric loss" is n/a on every row
    node = _node([], ["gain", "parametric loss", 1],
                    hrf={"Variables": ["gain", "parametric loss"], "Model": "spm"})
    design = build_run_design(node, events, tr=TR, n_vols=N_VOLS, missing_confounds="error")
    assert "parametric loss" not in design.matrix.columns
    assert design.info.dropped == [{"entry": "parametric loss", "kind": "event",
                                       "reason": "no such event variable in this run"}]
    assert any("parametric loss" in w for w in design.info.warnings)


def test_model_file_builds_the_hand_checked_design():
    """models/ds005_parametric.json (what users copy) gives the same modulators as the checked node."""
    import json

    from bids_app.spec import load_model

    path = MODELS / "ds005_parametric.json"
    node = load_model(path).nodes[0]
    assert json.loads(path.read_text())["Nodes"][0]["Name"] == node.name
    events = read_events(real_data(RUNS[0]))
    design = build_run_design(node, events, tr=TR, n_vols=N_VOLS, source=str(real_data(RUNS[0])))
    gain, loss = (events[c].to_numpy(float) for c in ("gain", "loss"))
    np.testing.assert_allclose(design.matrix["gain"], by_hand(events, gain - gain.mean()), atol=1e-10, rtol=0)
    np.testing.assert_allclose(design.matrix["loss"], by_hand(events, loss - loss.mean()), atol=1e-10, rtol=0)
    assert list(design.matrix.columns[:3]) == ["task", "gain", "loss"]
