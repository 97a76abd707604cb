"""BIDS physio/stim recordings (``*_physio.tsv.gz``, ``*_stim.tsv.gz``) as Run-level variables.

There is no real recording in ../shared/data: the tests write synthetic 50 Hz
traces for the real Haxby run 01 (TR 2.5 s, 121 volumes) and compare the
design columns with an independent computation: the in-run samples, scipy's
Butterworth (``butter`` + ``sosfiltfilt``), ``np.interp`` at the frame times.
"""
import json

import numpy as np
import pandas as pd
import pytest
from scipy import signal

from bids_app.cli import main
from bids_app.design import build_run_design
from bids_app.io.confounds import read_confounds
from bids_app.io.events import read_events
from bids_app.design.first_level import uses_recording
from bids_app.design.recordings import cut_to_run
from bids_app.io.recordings import read_table, read_used, recording_file
from bids_app.errors import InputDataError
from bids_app.spec.model import model_from_dict
from conftest import real_data
from test_run_level_e2e import _cli, _confounds, _events, _haxby, _haxby_model, _only, _provenance, _write_model

TR, N_VOLS, FS = 2.5, 121, 50.0
DURATION = TR * N_VOLS
COLUMNS = ["respiratory", "cardiac", "ramp", "alias"]
FUNC = "sub-1/func/sub-1_task-objectviewing_run-01"


# ---------------------------------------------------------------- helpers

def _traces(start, end=DURATION + 4.0):
    """Sample times (s from the first volume) and traces, (n, 4), from ``start`` to ``end``.

    ``respiratory``: 0.3 Hz breathing on a 0.05 Hz swing; ``cardiac``: 1.1 Hz
    pulses; ``ramp``: 1000 + its own time, so a shifted or lost sample shows;
    ``alias``: a pure 0.3 Hz sine, above the TR's Nyquist frequency (0.2 Hz).
    """
    t = start + np.arange(int(round((end - start) * FS))) / FS
    return t, np.column_stack([np.sin(2 * np.pi * 0.3 * t) + 0.5 * np.sin(2 * np.pi * 0.05 * t + 1.0),
                               np.sin(np.pi * 1.1 * t) ** 16, 1000.0 + t, np.sin(2 * np.pi * 0.3 * t)])


def _write(path, data, meta=None, *, sidecar=None):
    """A headerless gzipped TSV (exact float text) and its sidecar beside it, unless ``meta`` is None."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(data).to_csv(path, sep="\t", header=False, index=False, float_format="%.17g",
                              compression="gzip")
    if meta is not None:
        sidecar = sidecar or path.with_name(path.name.split(".")[0] + ".json")
        sidecar.write_text(json.dumps(meta))
    return path


def _meta(start, columns=COLUMNS):
    return {"SamplingFrequency": FS, "StartTime": start, "Columns": list(columns)}


def _expected(t, x, slice_time_ref=0.0):
    """Independent anti-aliased sampling: in-run samples -> order-5 zero-phase Butterworth at
    0.8 x the TR's Nyquist frequency (edge values held for 3 cutoff periods) -> np.interp."""
    keep = (t >= 0) & (t < DURATION)
    cutoff = 0.8 * 0.5 / TR
    sos = signal.butter(5, cutoff, fs=FS, output="sos")
    filtered = signal.sosfiltfilt(sos, x[keep], axis=0, padtype="constant",
                                  padlen=int(np.ceil(3 * FS / cutoff)))
    frames = TR * (np.arange(N_VOLS) + slice_time_ref)
    return np.column_stack([np.interp(frames, t[keep], f) for f in np.atleast_2d(filtered.T)])


def _node(x=("respiratory", "cardiac", "ramp", "alias"), instructions=()):
    model = _haxby_model()
    node = model["Nodes"][0]
    node["Model"]["X"] = ["trial_type.*", *x, 1]
    node["Transformations"]["Instructions"] += list(instructions)
    return model_from_dict(model).nodes[0]


@pytest.fixture(scope="module")
def events():
    return read_events(_events(real_data("haxby2001_sub1"), "01"))


def _design(events, files, node=None, **kwargs):
    node = node or _node()
    recordings = read_used(map(recording_file, files), lambda f: uses_recording(node, f))
    return build_run_design(node, events, tr=TR, n_vols=N_VOLS, recordings=recordings, **kwargs)


# ---------------------------------------------------------------- numbers

@pytest.mark.parametrize("start, slice_time_ref", [(0.0, 0.0), (-3.0, 0.0), (-7.373, 0.5)])
def test_column_equals_filter_then_interpolation(tmp_path, events, start, slice_time_ref):
    t, x = _traces(start)
    path = _write(tmp_path / "sub-1_task-objectviewing_run-01_physio.tsv.gz", x, _meta(start))
    design = _design(events, [path], slice_time_ref=slice_time_ref)
    np.testing.assert_allclose(design.matrix[COLUMNS].to_numpy(), _expected(t, x, slice_time_ref),
                               rtol=0, atol=1e-10)
    assert design.info.recordings == [{
        "path": str(path), "source": "physio", "sampling_frequency_hz": FS, "start_time_s": start,
        "columns": COLUMNS, "covered_s": [start, start + len(t) / FS], "samples_in_run": 15125,
        "first_sample_s": pytest.approx(t[t >= 0][0], abs=1e-12)}]
    assert design.info.anti_aliasing["cutoff_hz"] == pytest.approx(0.16)
    assert design.info.anti_aliasing["columns"] == COLUMNS


def test_anti_aliasing_removes_what_point_sampling_folds_in(tmp_path, events):
    """A 0.3 Hz sine sampled every 2.5 s aliases to 0.1 Hz at full amplitude; filtered first it is gone."""
    t, x = _traces(-3.0)
    design = _design(events, [_write(tmp_path / "sub-1_physio.tsv.gz", x, _meta(-3.0))])
    frames = TR * np.arange(N_VOLS)
    assert np.interp(frames, t, x[:, 3]).std() > 0.6  # what point sampling would give
    interior = design.matrix["alias"].to_numpy()[5:-5]
    assert np.abs(interior).max() < 0.01


def test_samples_before_the_scan_are_dropped_and_the_first_is_kept(tmp_path, events):
    """``ramp`` holds 1000 + its own time: the kept samples must start at time 0 exactly."""
    for start, dropped in [(0.0, 0), (-3.0, 150), (-7.373, 369)]:
        t, x = _traces(start)
        rec = cut_to_run(read_table(recording_file(_write(tmp_path / f"{dropped}_physio.tsv.gz", x,
                                                          _meta(start)))), ["ramp"], duration=DURATION)
        assert rec.values.shape == (15125, 1)
        np.testing.assert_array_equal(rec.values[:, 0], x[dropped:dropped + 15125, 2])
        assert rec.first_sample == pytest.approx(t[dropped], abs=1e-12)
        assert rec.values[0, 0] == pytest.approx(1000.0 + rec.first_sample, abs=1e-9)
    design = _design(events, [tmp_path / "0_physio.tsv.gz"])
    # away from the edges the low-passed ramp is the frame time itself: one sample
    # lost or kept too many would shift it by 0.02
    frames = TR * np.arange(N_VOLS)
    assert np.abs(design.matrix["ramp"].to_numpy() - 1000.0 - frames)[8:-8].max() < 1e-3


def test_recording_errors_name_the_file(tmp_path, events):
    t, x = _traces(-3.0)
    cases = {
        "starts after the first volume": (_traces(0.5)[1], _meta(0.5), "covers 0.5 to"),
        "ends before the run": (x[: int(300 * FS)], _meta(-3.0), "covers -3 to 297 s"),
        "no sidecar": (x, None, "no JSON sidecar"),
        "no StartTime": (x, {"SamplingFrequency": FS, "Columns": COLUMNS}, "StartTime missing"),
        "no SamplingFrequency": (x, {"StartTime": -3.0, "Columns": COLUMNS}, "SamplingFrequency missing"),
        "text frequency": (x, {**_meta(-3.0), "SamplingFrequency": "50"}, "must be a number"),
        "column count": (x, _meta(-3.0, COLUMNS[:3]), "4 column(s) but its sidecar's Columns names 3"),
    }
    for i, (name, (data, meta, text)) in enumerate(cases.items()):
        path = _write(tmp_path / f"case{i}_physio.tsv.gz", data, meta)
        with pytest.raises(InputDataError) as err:
            _design(events, [path])
        assert str(path) in str(err.value) and text in str(err.value), name
    # "n/a" (or any text) in a sample: BIDS recordings are numbers
    table = pd.DataFrame(x).astype(object)
    table.iloc[4000, 1] = "n/a"
    path = _write(tmp_path / "text_physio.tsv.gz", table, _meta(-3.0))
    with pytest.raises(InputDataError, match="cannot read the recording as a numeric table"):
        _design(events, [path])


def test_a_referenced_column_in_two_files_is_an_error(tmp_path, events):
    t, x = _traces(-3.0)
    a = _write(tmp_path / "sub-1_recording-a_physio.tsv.gz", x, _meta(-3.0))
    b = _write(tmp_path / "sub-1_recording-b_physio.tsv.gz", x[:, :1], _meta(-3.0, ["respiratory"]))
    with pytest.raises(InputDataError) as err:
        _design(events, [a, b])
    assert "'respiratory'" in str(err.value) and str(a) in str(err.value) and str(b) in str(err.value)
    # a recording column with a confound's name: ambiguous too
    confounds = read_confounds(_confounds(real_data("haxby2001_sub1"), "01"))
    c = _write(tmp_path / "sub-1_recording-c_physio.tsv.gz", x[:, :1], _meta(-3.0, ["trans_x"]))
    with pytest.raises(InputDataError, match="'trans_x' is in both .*confounds_timeseries.tsv and .*recording-c"):
        _design(events, [c], node=_node(x=("trans_*",)), confounds=confounds)


def test_scale_transformation_on_a_recording(tmp_path, events):
    """pybids' Scale (demean, divide by the SD) runs on the in-run samples, before the filter."""
    t, x = _traces(-3.0)
    path = _write(tmp_path / "sub-1_physio.tsv.gz", x, _meta(-3.0))
    scale = {"Name": "Scale", "Input": ["respiratory"], "Output": ["resp_z"]}
    design = _design(events, [path], node=_node(x=("resp_z", "respiratory"), instructions=[scale]))
    keep = (t >= 0) & (t < DURATION)
    z = (x[:, 0] - x[keep, 0].mean()) / x[keep, 0].std(ddof=1)
    np.testing.assert_allclose(design.matrix["resp_z"], _expected(t, z)[:, 0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(design.matrix["respiratory"], _expected(t, x[:, :1])[:, 0], rtol=0, atol=1e-10)


# ---------------------------------------------------------------- through the CLI

def _physio_path(bids, label="resp"):
    return bids / f"{FUNC}_recording-{label}_physio.tsv.gz"


def _physio_model(tmp_path):
    model = _haxby_model()
    node = model["Nodes"][0]
    node["Transformations"]["Instructions"].append(
        {"Name": "Scale", "Input": ["respiratory"], "Output": ["resp_z"]})
    node["Model"]["X"] = ["trial_type.*", "resp_z", "cardiac", "rot_*", "trans_*", 1]
    return _write_model(tmp_path, model)


def test_run_level_uses_the_recording_and_refits_when_it_changes(tmp_path):
    """Raw physio with an inherited top-level sidecar; resumed runs refit when the recording changes."""
    bids = _haxby(tmp_path, runs=("01",))
    t, x = _traces(-3.0)
    path = _write(_physio_path(bids), x, _meta(-3.0),
                  sidecar=bids / "task-objectviewing_recording-resp_physio.json")
    model, out = _physio_model(tmp_path), tmp_path / "out"
    assert _cli(bids, out, "run", model) == 0
    design = pd.read_csv(_only(out, "*_design.tsv"), sep="\t")
    keep = (t >= 0) & (t < DURATION)
    z = (x[:, 0] - x[keep, 0].mean()) / x[keep, 0].std(ddof=1)
    np.testing.assert_allclose(design["resp_z"], _expected(t, z)[:, 0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(design["cardiac"], _expected(t, x[:, 1:2])[:, 0], rtol=0, atol=1e-10)
    sidecar = json.loads(_only(out, "*_design.json").read_text())
    assert [(r["Path"], r["SamplingFrequencyHz"], r["StartTimeS"], r["Columns"])
            for r in sidecar["Recordings"]] == [(str(path), FS, -3.0, ["respiratory", "cardiac"])]
    assert sidecar["AntiAliasing"]["Columns"] == ["resp_z", "cardiac"]
    assert f"bids:raw:{path.relative_to(bids).as_posix()}" in sidecar["Sources"]

    assert _cli(bids, out, "run", model) == 0
    assert [u.get("Reused") for u in _provenance(out)["Units"]] == [True]
    x[:, 1] = x[:, 1] ** 2  # sharper pulses
    _write(path, x, None)
    assert _cli(bids, out, "run", model) == 0
    assert [u.get("Reused", False) for u in _provenance(out)["Units"]] == [False]
    refit = pd.read_csv(_only(out, "*_design.tsv"), sep="\t")
    np.testing.assert_allclose(refit["cardiac"], _expected(t, x[:, 1:2])[:, 0], rtol=0, atol=1e-10)


def test_unreferenced_recordings_are_never_read(tmp_path):
    """Unreadable recordings (and a column name two of them share) do not matter to a model that
    does not use them."""
    bids = _haxby(tmp_path, runs=("01",))
    for label in ("pulse", "resp"):
        path = _physio_path(bids, label)
        path.write_bytes(b"\x00 not a gzip file \xff" * 10)
        path.with_name(path.name.replace(".tsv.gz", ".json")).write_text(
            json.dumps(_meta(-3.0, [label, "trigger"])))
    out = tmp_path / "out"
    assert _cli(bids, out, "run", _write_model(tmp_path, _haxby_model())) == 0
    sidecar = json.loads(_only(out, "*_design.json").read_text())
    assert sidecar["Recordings"] == [] and sidecar["AntiAliasing"] is None
    assert not any("physio" in s for s in sidecar["Sources"])


@pytest.mark.parametrize("problem", ["short", "no sidecar", "column count"])
def test_bad_recording_exits_19_before_writing(tmp_path, capsys, problem):
    bids = _haxby(tmp_path, runs=("01", "02"))
    t, x = _traces(-3.0, end=DURATION - 10.0 if problem == "short" else DURATION + 4.0)
    meta = None if problem == "no sidecar" else _meta(-3.0, COLUMNS[:3] if problem == "column count" else COLUMNS)
    path = _write(_physio_path(bids), x, meta)
    out = tmp_path / "out"
    assert _cli(bids, out, "run", _physio_model(tmp_path)) == 19
    message = capsys.readouterr().err
    assert str(path) in message
    if problem == "short":
        assert "covers -3 to 292.5 s" in message and "0 to 302.5 s" in message
    assert not out.exists()


def test_design_subcommand_with_physio_and_stim(tmp_path):
    bids = real_data("haxby2001_sub1")
    t, x = _traces(-3.0)
    physio = _write(tmp_path / "sub-1_task-objectviewing_run-01_physio.tsv.gz", x, _meta(-3.0))
    on = (x[:, 1:2] > 0.5) * 1.0
    stim = _write(tmp_path / "sub-1_task-objectviewing_run-01_stim.tsv.gz", on, _meta(-3.0, ["stimulus"]))
    model = _write_model(tmp_path, _haxby_model())
    spec = json.loads(model.read_text())
    spec["Nodes"][0]["Model"]["X"] = ["trial_type.*", "respiratory", "stimulus", 1]
    model.write_text(json.dumps(spec))
    out = tmp_path / "design.tsv"
    assert main(["design", "--events-tsv", str(_events(bids, "01")), "--model", str(model),
                 "--tr", str(TR), "--nvol", str(N_VOLS), "--physio", str(physio), str(stim),
                 "--output-tsv", str(out), "--no-png"]) == 0
    design = pd.read_csv(out, sep="\t")
    np.testing.assert_allclose(design["respiratory"], _expected(t, x[:, :1])[:, 0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(design["stimulus"], _expected(t, on)[:, 0], rtol=0, atol=1e-10)
    record = json.loads(out.with_suffix(".json").read_text())
    assert [(r["source"], r["columns"]) for r in record["recordings"]] == [
        ("physio", ["respiratory"]), ("stim", ["stimulus"])]
