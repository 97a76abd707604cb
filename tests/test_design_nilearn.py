"""Run designs against nilearn and closed forms, on simulated events in memory and the real Haxby events."""
import numpy as np
import pandas as pd
import pytest
from nilearn.glm.first_level import make_first_level_design_matrix
from scipy.stats import gamma

from bids_app.design import build_run_design
from bids_app.io.events import read_events, validate_events
from bids_app.design.hrf import HRFModel, convolve, frame_times
from bids_app.errors import DesignError
from bids_app.spec.model import model_from_dict
from conftest import real_data

HAXBY = "haxby2001_sub1/sub-1/func"
TR, N_VOLS = 2.5, 121  # task-objectviewing_bold.json, 121 volumes per run

def simulated_events():
    """Events in memory: three conditions of varied durations (1.5 to 12 s) over the 302 s run,
    on the 0.05 s grid of nilearn's 50x oversampling (as the Haxby events, on the TR grid)."""
    rng = np.random.default_rng(3)
    onsets = np.sort(rng.choice(np.arange(0, 290, 0.05), 24, replace=False)).round(2)
    table = pd.DataFrame({"onset": onsets, "duration": rng.choice([1.5, 3.0, 12.0], 24),
                          "trial_type": np.resize(["face", "house", "cat"], 24)})
    return validate_events(table, "simulated events")


@pytest.fixture(scope="module", params=["simulated", "haxby2001_sub1"])
def events(request):
    """The events of a run: simulated in memory, and the real Haxby run 1."""
    if request.param == "simulated":
        return simulated_events()
    return read_events(real_data(f"{HAXBY}/sub-1_task-objectviewing_run-01_events.tsv"))


def run_node(hrf_model, parameters=None, options=None, x_extra=()):
    hrf = {"Variables": ["trial_type.*"], "Model": hrf_model}
    if parameters:
        hrf["Parameters"] = parameters
    node = {
        "Level": "Run", "Name": "run", "GroupBy": ["run", "subject"],
        "Transformations": {"Transformer": "pybids-transforms-v1",
                            "Instructions": [{"Name": "Factor", "Input": ["trial_type"]}]},
        "Model": {"Type": "glm", "X": ["trial_type.*", 1, *x_extra], "HRF": hrf,
                  "Options": options if options is not None else {"HighPassFilterCutoffHz": 0.01}},
    }
    return model_from_dict({"Name": "m", "BIDSModelVersion": "1.0.0", "Nodes": [node]}).nodes[0]


def nilearn_matrix(events, hrf_model, times, high_pass=0.01, fir_delays=None):
    ref = make_first_level_design_matrix(times, events[["onset", "duration", "trial_type"]],
                                         hrf_model=hrf_model, drift_model="cosine",
                                         high_pass=high_pass, fir_delays=fir_delays)
    return ref.rename(columns={"constant": "intercept"})


def ours_as_nilearn(design):
    return design.matrix.rename(columns=lambda c: c.removeprefix("trial_type."))


@pytest.mark.parametrize("hrf_model", [
    "spm", "spm + derivative", "spm + derivative + dispersion",
    "glover", "glover + derivative", "glover + derivative + dispersion",
])
def test_equals_nilearn_design(events, hrf_model):
    design = build_run_design(run_node(hrf_model), events, tr=TR, n_vols=N_VOLS)
    ref = nilearn_matrix(events, hrf_model, TR * np.arange(N_VOLS))
    ours = ours_as_nilearn(design)
    assert sorted(ours.columns) == sorted(ref.columns)
    np.testing.assert_allclose(ours[ref.columns].to_numpy(), ref.to_numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(design.matrix.index.to_numpy(), TR * np.arange(N_VOLS))
    # X order: conditions (sorted Factor levels, each followed by its derivatives),
    # intercept, then drifts
    n_cond = events["trial_type"].nunique()
    per = 1 + hrf_model.count("+")
    assert list(design.matrix.columns[n_cond * per:]) == (
        ["intercept"] + [f"drift_{k}" for k in range(1, len(design.info.high_pass["drift_columns"]) + 1)]
    )
    if per > 1:
        assert design.matrix.columns[1] == design.matrix.columns[0] + "_derivative"
    assert design.info.high_pass == {"cutoff_hz": 0.01, "source": "model", "applied": True,
                                        "drift_columns": [c for c in ref.columns if c.startswith("drift")]}


def test_fir_equals_nilearn(events):
    delays = [0, 1, 2, 3, 4]
    design = build_run_design(run_node("FIR", {"fir_delays": delays}), events, tr=TR, n_vols=N_VOLS)
    ref = nilearn_matrix(events, "fir", TR * np.arange(N_VOLS), fir_delays=delays)
    ours = ours_as_nilearn(design)
    assert sorted(ours.columns) == sorted(ref.columns)
    np.testing.assert_allclose(ours[ref.columns].to_numpy(), ref.to_numpy(), atol=1e-6, rtol=0)
    assert "trial_type.face" not in design.matrix.columns  # replaced by its delay columns
    assert design.info.convolved["trial_type.face"]["columns"] == [
        f"trial_type.face_delay_{d}" for d in delays]


def test_slice_time_ref_shifts_frame_times(events):
    design = build_run_design(run_node("spm"), events, tr=TR, n_vols=N_VOLS, slice_time_ref=0.5)
    times = TR * (np.arange(N_VOLS) + 0.5)
    ref = nilearn_matrix(events, "spm", times)
    ours = ours_as_nilearn(design)
    np.testing.assert_allclose(ours[ref.columns].to_numpy(), ref.to_numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(design.matrix.index.to_numpy(), times)
    unshifted = build_run_design(run_node("spm"), events, tr=TR, n_vols=N_VOLS).matrix
    shift = unshifted["trial_type.face"].to_numpy() - design.matrix["trial_type.face"].to_numpy()
    assert np.abs(shift).max() > 0.05


def test_spm_regressor_matches_closed_form(events):
    """Independent of nilearn: block integral of the SPM double gamma (peak 6 s, undershoot 16 s, ratio 1/6)."""
    face = events[events["trial_type"] == "face"]
    t = frame_times(TR, N_VOLS)

    def cdf(x):  # integral of the kernel from 0 to x, kernel cut at 32 s as in SPM/nilearn
        x = np.clip(x, 0.0, 32.0)
        return gamma.cdf(x, 6) - gamma.cdf(x, 16) / 6

    ref = sum(cdf(t - o) - cdf(t - o - d) for o, d in zip(face["onset"], face["duration"]))
    ref /= cdf(32.0)
    design = build_run_design(run_node("spm"), events, tr=TR, n_vols=N_VOLS)
    ours = design.matrix["trial_type.face"].to_numpy()
    assert np.abs(ours - ref).max() < 0.01  # 0.0034 measured: 50x oversampling grid
    assert np.corrcoef(ours, ref)[0, 1] > 0.99999


def test_fir_delays_are_in_scans():
    """delay d at frame t = fraction of [t - d*TR, t - (d-1)*TR) covered by events."""
    onsets, durations = np.array([3.3, 40.1]), np.array([1.7, 0.9])
    t = frame_times(TR, N_VOLS)
    regressors, names, _ = convolve(onsets, durations, np.ones(2), HRFModel("fir", (0, 1, 3)), t, "e")
    assert names == ["e_delay_0", "e_delay_1", "e_delay_3"]
    for j, d in enumerate((0, 1, 3)):
        lo, hi = t - d * TR, t - (d - 1) * TR
        covered = sum(np.clip(np.minimum(hi, o + du) - np.maximum(lo, o), 0, None)
                      for o, du in zip(onsets, durations))
        np.testing.assert_allclose(regressors[:, j], covered / TR, atol=1e-12)


def test_default_high_pass_is_recorded(events):
    design = build_run_design(run_node("spm", options={}), events, tr=TR, n_vols=N_VOLS)
    hp = design.info.high_pass
    assert hp["source"] == "default" and hp["cutoff_hz"] == pytest.approx(1 / 128)
    assert any("HighPassFilterCutoffHz is not set" in w for w in design.info.warnings)
    ref = nilearn_matrix(events, "spm", TR * np.arange(N_VOLS), high_pass=1 / 128)
    drifts = [c for c in ref.columns if c.startswith("drift")]
    assert hp["drift_columns"] == drifts
    np.testing.assert_allclose(design.matrix[drifts].to_numpy(), ref[drifts].to_numpy(), atol=1e-12)


def test_zero_high_pass_adds_no_drift(events):
    design = build_run_design(run_node("spm", options={"HighPassFilterCutoffHz": 0}), events, tr=TR, n_vols=N_VOLS)
    assert not any(c.startswith("drift") for c in design.matrix.columns)
    assert design.info.high_pass["applied"] is False
    assert design.info.low_pass is None


def test_low_pass_filters_every_design_column_as_nilearn_butterworth(events):
    from nilearn.signal import butterworth

    plain = build_run_design(run_node("spm", options={"HighPassFilterCutoffHz": 0.01}), events,
                             tr=TR, n_vols=N_VOLS).matrix
    options = {"HighPassFilterCutoffHz": 0.01, "LowPassFilterCutoffHz": 0.1}
    design = build_run_design(run_node("spm", options=options), events, tr=TR, n_vols=N_VOLS)
    expected = butterworth(plain.to_numpy(copy=True), sampling_rate=1 / TR, low_pass=0.1, order=5)
    np.testing.assert_allclose(design.matrix.to_numpy(), expected, rtol=1e-12, atol=1e-12)
    assert not np.allclose(design.matrix.to_numpy(), plain.to_numpy(), atol=1e-3)  # it did something
    np.testing.assert_allclose(design.matrix["intercept"], 1.0, atol=1e-12)  # constant stays constant
    assert design.info.low_pass["cutoff_hz"] == 0.1 and design.info.low_pass["applied"] is True
    assert any("low-pass filter at 0.1 Hz" in w for w in design.info.warnings)


@pytest.mark.parametrize("cutoff", [0.2, 0.3, 0.0])
def test_low_pass_at_or_above_nyquist_is_an_error(events, cutoff):
    options = {"HighPassFilterCutoffHz": 0, "LowPassFilterCutoffHz": cutoff}
    with pytest.raises(DesignError, match="Nyquist frequency 0.2 Hz"):
        build_run_design(run_node("spm", options=options), events, tr=TR, n_vols=N_VOLS)


def test_all_runs_build_and_info_is_json(events):
    import json

    for path in sorted(real_data(HAXBY).glob("sub-1_task-objectviewing_run-*_events.tsv")):
        design = build_run_design(run_node("spm + derivative"), read_events(path),
                                  tr=TR, n_vols=N_VOLS, source=str(path))
        assert design.matrix.shape == (N_VOLS, 8 * 2 + 1 + 6)
        assert design.matrix.dtypes.eq(np.float64).all()
        json.dumps(design.info.to_dict())


# Run node of model-zoo's exhibits/ds003/model-001_smdl.json (bids-standard/model-zoo)
DS003_NODE = {
    "Level": "Run", "Name": "subject", "GroupBy": ["subject"],
    "Transformations": {"Transformer": "pybids-transforms-v1", "Instructions": [
        {"Name": "Factor", "Input": ["trial_type"]},
        {"Name": "Convolve", "Input": ["trial_type.word", "trial_type.pseudoword"],
         "Model": "spm"}]},
    "Model": {"X": ["trial_type.word", "trial_type.pseudoword", "framewise_displacement",
                    "trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z",
                    "a_comp_cor_00", "a_comp_cor_01", "a_comp_cor_02", "a_comp_cor_03",
                    "a_comp_cor_04", "a_comp_cor_05", 1], "Type": "glm"},
}


def test_model_zoo_ds003_convolve_equals_nilearn():
    node = model_from_dict({"Name": "ds003", "BIDSModelVersion": "1.0.0",
                            "Nodes": [DS003_NODE]}).nodes[0]
    tr, n_vols = 2.0, 160  # task-rhymejudgment_bold.json; 160 volumes in ds000003
    paths = sorted(real_data("events_only/ds000003").glob("sub-*/func/*_events.tsv"))
    assert len(paths) == 13
    for path in paths:
        events = read_events(path)
        design = build_run_design(node, events, tr=tr, n_vols=n_vols, source=str(path))
        ref = nilearn_matrix(events, "spm", tr * np.arange(n_vols), high_pass=1 / 128)
        ours = ours_as_nilearn(design)
        assert list(ours.columns) == ["word", "pseudoword", "intercept", *ref.columns[2:-1]]
        np.testing.assert_allclose(ours[ref.columns].to_numpy(), ref.to_numpy(), atol=1e-6)
        # no confounds file: the 13 confound entries are dropped, with a warning each
        assert [d["entry"] for d in design.info.dropped] == DS003_NODE["Model"]["X"][2:-1]
        assert design.info.convolved["trial_type.word"]["by"] == \
            "Transformations.Instructions[1]"


def test_x_columns_leave_out_derivatives_and_drifts(events):
    design = build_run_design(run_node("spm + derivative"), events, tr=TR, n_vols=N_VOLS)
    levels = sorted(events["trial_type"].unique())
    assert design.info.x_columns == [f"trial_type.{c}" for c in levels] + ["intercept"]
    fir = build_run_design(run_node("fir", {"fir_delays": [0, 1]}), events, tr=TR, n_vols=N_VOLS)
    assert fir.info.x_columns == [f"trial_type.{c}_delay_{d}" for c in levels
                                     for d in (0, 1)] + ["intercept"]
    assert set(fir.info.x_columns) <= set(fir.matrix.columns)
