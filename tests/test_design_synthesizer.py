"""``synthesize``: files in, design TSV + JSON record + PNG out."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bids_app.design import build_run_design
from bids_app.io.confounds import read_confounds
from bids_app.io.events import read_events
from bids_app.graph.synthesize import synthesize
from bids_app.errors import DesignError
from bids_app.spec import load_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HAXBY = DATA / "haxby2001_sub1"
EVENTS = HAXBY / "sub-1" / "func" / "sub-1_task-objectviewing_run-01_events.tsv"
CONFOUNDS = (HAXBY / "derivatives" / "motion" / "sub-1" / "func" /
             "sub-1_task-objectviewing_run-01_desc-confounds_timeseries.tsv")
TR, N_VOLS = 2.5, 121

pytestmark = pytest.mark.skipif(not CONFOUNDS.exists(), reason=f"real data absent: {HAXBY}")

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


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "model_smdl.json"
    path.write_text(json.dumps(MODEL))
    return path


def test_writes_tsv_json_png(tmp_path, model_path):
    out = tmp_path / "out" / "sub-1_run-01_design.tsv"
    written = synthesize(EVENTS, model_path, TR, N_VOLS, out, confounds_tsv=CONFOUNDS)
    assert written == out
    expected = build_run_design(load_model(model_path).nodes[0], read_events(EVENTS), tr=TR,
                                n_vols=N_VOLS, confounds=read_confounds(CONFOUNDS),
                                source=str(EVENTS)).matrix
    table = pd.read_csv(out, sep="\t")
    assert list(table.columns) == list(expected.columns)
    np.testing.assert_array_equal(table.to_numpy(), expected.to_numpy())  # lossless text
    assert table.shape == (N_VOLS, 8 * 2 + 1 + 6 + table.columns.str.startswith("drift").sum())
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["node"] == "run" and record["columns"] == list(expected.columns)
    assert record["high_pass"]["source"] == "model"
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        [out.name, out.with_suffix(".json").name, out.with_suffix(".png").name])  # no temp files


def test_node_selection(tmp_path, model_path):
    out = synthesize(EVENTS, model_path, TR, N_VOLS, tmp_path / "d.tsv", node_name="run_glover",
                     png=False)
    assert list(pd.read_csv(out, sep="\t").columns[:2]) == ["trial_type.face", "intercept"]
    assert not out.with_suffix(".png").exists()
    with pytest.raises(DesignError, match="at level Subject, not Run"):
        synthesize(EVENTS, model_path, TR, N_VOLS, tmp_path / "e.tsv", node_name="subject")
    with pytest.raises(DesignError, match=r"no node named 'nope' \(nodes: run, run_glover, subject\)"):
        synthesize(EVENTS, model_path, TR, N_VOLS, tmp_path / "e.tsv", node_name="nope")
    assert not (tmp_path / "e.tsv").exists()
