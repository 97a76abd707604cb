"""The unit lifecycle in memory: a planned group's fit is arrays in, arrays out (no file written),
and agrees with least squares in closed form; a run design's record is data, not shared state."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bids_app.derivatives.atomic as atomic
from bids_app.design.contrasts import PlannedContrast
from bids_app.estimation.ols import OLSEstimator
from bids_app.graph.groups import GroupPlan, fit_group
from bids_app.graph.inference_step import DEFAULTS
from bids_app.graph.space import RegionSpace, VoxelSpace
from bids_app.graph.units import UnitData


def _plan(space, n=12, inference=None, seed=0):
    rng = np.random.default_rng(seed)
    design = pd.DataFrame({"intercept": np.ones(n), "age": rng.normal(size=n)})
    contrast = PlannedContrast("age", "t", ("age",), np.array([1.0]), np.array([0.0, 1.0]), ("age",), "age")
    return GroupPlan(None, {"contrast": "a"}, None, "", space, design, [contrast], OLSEstimator(), "ols", {}, [],
                     inference=inference, seed=seed)


@pytest.fixture
def no_writes(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the fit wrote a file")

    monkeypatch.setattr(atomic, "atomic_path", refuse)


def test_fit_group_is_least_squares_and_writes_nothing(no_writes):
    mask = np.zeros((5, 4, 3), dtype=bool)
    mask[1:4, 1:3, :] = True
    space = VoxelSpace(mask, affine=np.diag([3.0, 3.0, 3.0, 1.0]))
    inference = {**DEFAULTS, "Alpha": 0.05, "HeightControl": "fdr", "NPerm": 20}
    plan = _plan(space, inference=inference)
    X = plan.design.to_numpy()
    Y = np.random.default_rng(1).normal(size=(len(X), int(mask.sum()))) + 0.8 * X[:, 1:2]
    result = fit_group(plan, UnitData(Y, reference={"template": None, "atlases": ()}))

    beta, *_ = np.linalg.lstsq(X, Y, rcond=None)
    resid = Y - X @ beta
    sigma2 = (resid ** 2).sum(axis=0) / (len(X) - 2)
    se = np.sqrt(sigma2 * np.linalg.inv(X.T @ X)[1, 1])
    (fitted,) = result.contrasts
    np.testing.assert_allclose(fitted.result.effect, beta[1])
    np.testing.assert_allclose(fitted.result.stat, beta[1] / se)
    np.testing.assert_allclose(fitted.result.p, stats.t.sf(beta[1] / se, len(X) - 2))
    # inference ran in the fit: a thresholded map over the grid and the permutation maps over the units
    assert fitted.thresholded.z.shape == mask.shape and np.isnan(fitted.thresholded.z[~mask]).all()
    assert fitted.thresholded.table is not None
    assert set(fitted.permuted.maps) == {"maxT", "clusterSize", "clusterMass"}
    assert all(v.shape == (mask.sum(),) for v in fitted.permuted.maps.values())
    assert set(result.model_maps) and all(v.shape == (mask.sum(),) for v in result.model_maps.values())


def test_region_space_gets_no_map_inference(no_writes):
    names = ("a", "b", "c")
    space = RegionSpace(names, np.array([True, False, True]), inference_notes=["thresholds are for maps"])
    plan = _plan(space, inference={**DEFAULTS, "Alpha": 0.001})
    Y = np.random.default_rng(2).normal(size=(len(plan.design), 2))
    result = fit_group(plan, UnitData(Y))
    (fitted,) = result.contrasts
    assert fitted.thresholded is None and fitted.permuted is None and result.model_maps == {}
    assert fitted.notes == ["thresholds are for maps"]
    assert result.warnings == ["contrast age: thresholds are for maps"]


def test_run_design_record_is_plain_data():
    from bids_app.design.first_level import build_run_design
    from bids_app.spec import load_model_dict

    model = load_model_dict({
        "Name": "t", "BIDSModelVersion": "1.0.0", "Input": {"task": ["x"]},
        "Nodes": [{"Level": "Run", "Name": "run", "GroupBy": ["run", "subject"],
                   "Model": {"Type": "glm", "X": ["trial_type.a", 1],
                             "HRF": {"Variables": ["trial_type.a"], "Model": "spm"}},
                   "DummyContrasts": {"Test": "t"}}]})
    events = pd.DataFrame({"onset": [0.0, 20.0], "duration": [5.0, 5.0], "trial_type": ["a", "a"]})
    design = build_run_design(model.nodes[0], events, tr=2.0, n_vols=30)
    record = design.info.to_dict()
    # the sidecar's keys, in order; every value JSON-able
    assert list(record)[:3] == ["source", "tr", "n_vols"] and list(record)[-1] == "columns"
    assert json.loads(json.dumps(record)) == record
    assert record["columns"] == list(design.matrix.columns)
    assert any("HighPassFilterCutoffHz is not set" in w for w in design.info.warnings)
    # a copy: what a caller adds to it does not change the design's record
    record["warnings"].append("added")
    assert "added" not in design.info.warnings
