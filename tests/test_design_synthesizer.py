"""``synthesize``: files in, design TSV + JSON record + PNG out."""
import json
import os

import numpy as np
import pandas as pd
import pytest
from nilearn.glm.first_level import compute_regressor, make_first_level_design_matrix

from bids_app.errors import DesignError
from bids_app.graph.synthesize import synthesize
from conftest import real_data

TR, N_VOLS = 2.5, 121
MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]

MODEL = {
    "Name": "haxby", "BIDSModelVersion": "1.0.0", "Input": {"task": ["objectviewing"]},
    "Nodes": [
        {"Level": "Run", "Name": "run", "GroupBy": ["run", "subject"],
         "Transformations": {"Transformer": "pybids-transforms-v1",
                             "Instructions": [{"Name": "Factor", "Input": ["trial_type"]}]},
         "Model": {"Type": "glm", "X": ["trial_type.*", 1, "trans_*", "rot_*"],
                   "HRF": {"Variables": ["trial_type.*"], "Model": "spm + derivative"},
                   "Options": {"HighPassFilterCutoffHz": 0.008}},
         "DummyContrasts": {"Contrasts": ["trial_type.face", "trial_type.house"], "Test": "t"}},
        {"Level": "Run", "Name": "run_glover", "GroupBy": ["run", "subject"],
         "Transformations": {"Transformer": "pybids-transforms-v1",
                             "Instructions": [{"Name": "Factor", "Input": ["trial_type"]}]},
         "Model": {"Type": "glm", "X": ["trial_type.face", 1],
                   "HRF": {"Variables": ["trial_type.face"], "Model": "glover"}}},
        {"Level": "Subject", "Name": "subject", "GroupBy": ["subject", "contrast"],
         "Model": {"Type": "glm", "X": [1]}, "DummyContrasts": {"Test": "t"}},
    ],
}


@pytest.fixture(scope="module")
def haxby():
    """The real events and motion confounds of Haxby run 1."""
    root = real_data("haxby2001_sub1")
    return (root / "sub-1" / "func" / "sub-1_task-objectviewing_run-01_events.tsv",
            root / "derivatives" / "motion" / "sub-1" / "func"
            / "sub-1_task-objectviewing_run-01_desc-confounds_timeseries.tsv")


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "model_smdl.json"
    path.write_text(json.dumps(MODEL))
    return path


def test_writes_tsv_json_png(tmp_path, model_path, haxby):
    """The written matrix is nilearn's for the same events, HRF, confounds and high-pass filter."""
    events_tsv, confounds_tsv = haxby
    out = tmp_path / "out" / "sub-1_run-01_design.tsv"
    written = synthesize(events_tsv, model_path, TR, N_VOLS, out, confounds_tsv=confounds_tsv)
    assert written == out
    table = pd.read_csv(out, sep="\t")
    events = pd.read_csv(events_tsv, sep="\t")
    confounds = pd.read_csv(confounds_tsv, sep="\t")
    reference = make_first_level_design_matrix(
        TR * np.arange(N_VOLS), events, hrf_model="spm + derivative", drift_model="cosine", high_pass=0.008,
        add_regs=confounds[MOTION].to_numpy(), add_reg_names=MOTION)
    conditions = sorted(events["trial_type"].unique())
    assert len(conditions) == 8
    names = {f"trial_type.{c}{suffix}": f"{c}{suffix}" for c in conditions for suffix in ("", "_derivative")}
    names.update({m: m for m in MOTION}, intercept="constant")
    drifts = [c for c in table.columns if c.startswith("drift")]
    names.update({d: f"drift_{i}" for i, d in enumerate(drifts, start=1)})
    assert sorted(table.columns) == sorted(names) and len(drifts) == sum(reference.columns.str.startswith("drift"))
    for ours, theirs in names.items():
        np.testing.assert_allclose(table[ours], reference[theirs], rtol=0, atol=1e-9, err_msg=ours)
    # X order: each condition then its derivative, the intercept, confounds; drifts last
    assert list(table.columns[:3]) == [f"trial_type.{conditions[0]}", f"trial_type.{conditions[0]}_derivative",
                                       f"trial_type.{conditions[1]}"]
    assert list(table.columns[-len(drifts):]) == drifts
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["node"] == "run" and record["columns"] == list(table.columns)
    assert record["high_pass"]["source"] == "model"
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        [out.name, out.with_suffix(".json").name, out.with_suffix(".png").name])  # no temp files
    umask = os.umask(0)
    os.umask(umask)
    # the atomic writer gives what a plain open() would (temporary files are created 0600)
    assert {p.stat().st_mode & 0o777 for p in out.parent.iterdir()} == {0o666 & ~umask}


def test_node_selection(tmp_path, model_path, haxby):
    events_tsv, _ = haxby
    out = synthesize(events_tsv, model_path, TR, N_VOLS, tmp_path / "d.tsv", node_name="run_glover",
                     png=False)
    table = pd.read_csv(out, sep="\t")
    assert list(table.columns[:2]) == ["trial_type.face", "intercept"]
    # the face regressor is nilearn's glover convolution of the face events, by hand
    events = pd.read_csv(events_tsv, sep="\t").query("trial_type == 'face'")
    face, _ = compute_regressor(np.vstack([events.onset, events.duration, np.ones(len(events))]),
                                "glover", TR * np.arange(N_VOLS))
    assert len(events) == 1 and face.max() > 0.5  # one 22.5 s block: a real response, not zeros
    np.testing.assert_allclose(table["trial_type.face"], face[:, 0], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(table["intercept"], np.ones(N_VOLS))
    assert not out.with_suffix(".png").exists()
    with pytest.raises(DesignError, match="at level Subject, not Run"):
        synthesize(events_tsv, model_path, TR, N_VOLS, tmp_path / "e.tsv", node_name="subject")
    with pytest.raises(DesignError, match=r"no node named 'nope' \(nodes: run, run_glover, subject\)"):
        synthesize(events_tsv, model_path, TR, N_VOLS, tmp_path / "e.tsv", node_name="nope")
    assert not (tmp_path / "e.tsv").exists()
