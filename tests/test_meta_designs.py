"""``"Type": "meta"`` with designs beyond ``X = [1]``, end to end on the 12 real Haxby runs.

The subject node contrasts the last six runs with the first six (``late``, built
by Factor + Sum from the ``run`` entity) by weighted least squares with the
incoming variances. Its maps and region tables must equal the closed form
computed here from the written run-level maps: with ``W = diag(1 / variance)``,
``beta = (X'WX)^-1 X'Wy``, ``var(c'beta) = c'(X'WX)^-1 c``, F = ``e'(C cov C')^-1 e / rank``,
and degrees of freedom the sum of the run dofs. The run level uses an AR(2) noise
model from ``Model.Software``, checked against nilearn's ``FirstLevelModel``.
"""
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from test_run_level_e2e import _bold, _cli, _haxby, _haxby_model, _load, _only, _write_model
from test_run_level_roi import _slabs, _table, FIT

RUNS = [f"{r:02d}" for r in range(1, 13)]
LATE = np.repeat([0.0, 1.0], 6)


def _meta_model(regions=False):
    model = _haxby_model()
    run = model["Nodes"][0]
    run["Model"]["Software"] = {"bids-stats": {"NoiseModel": "ar2"}}
    run["Contrasts"] = run["Contrasts"][:1]
    if regions:
        run["Model"]["Options"].update({"Aggregate": "mean", "Mask": {"desc": ["slabs"], "suffix": ["dseg"]}})
    model["Nodes"][1] = {
        "Level": "Subject", "Name": "subject", "GroupBy": ["subject", "contrast"],
        "Transformations": {"Transformer": "pybids-transforms-v1", "Instructions": [
            {"Name": "Factor", "Input": ["run"]},
            {"Name": "Sum", "Input": [f"run.{r}" for r in RUNS[6:]], "Output": "late"}]},
        "Model": {"Type": "meta", "X": [1, "late"]},
        "Contrasts": [{"Name": "lateVsEarly", "ConditionList": ["late"], "Weights": [1], "Test": "t"},
                      {"Name": "both", "ConditionList": [1, "late"], "Weights": [[1, 0], [0, 1]], "Test": "F"}],
    }
    return model


def _run(tmp_path_factory, name, regions):
    tmp = tmp_path_factory.mktemp(name)
    bids = _haxby(tmp, runs=RUNS)
    if regions:
        _slabs(bids)
    out = tmp / "out"
    assert _cli(bids, out, "subject", _write_model(tmp, _meta_model(regions))) == 0
    return bids, out


@pytest.fixture(scope="module")
def voxels(tmp_path_factory):
    return _run(tmp_path_factory, "meta_voxels", regions=False)


@pytest.fixture(scope="module")
def regions(tmp_path_factory):
    return _run(tmp_path_factory, "meta_regions", regions=True)


def _closed_form(y, v, X, C):
    """GLS with known variances for one voxel: effect, its covariance."""
    W = np.diag(1.0 / v)
    cov = np.linalg.inv(X.T @ W @ X)
    beta = cov @ X.T @ W @ y
    return C @ beta, C @ cov @ C.T


def _check(effects, variances, dofs, read):
    """Compare what ``read(contrast, stat)`` returns (per voxel/region) with the closed form."""
    X = np.column_stack([np.ones(12), LATE])
    t_expected, f_expected, e_expected, v_expected = [], [], [], []
    for y, v in zip(effects.T, variances.T):
        e, cov = _closed_form(y, v, X, np.array([[0.0, 1.0]]))
        e_expected.append(e[0])
        v_expected.append(cov[0, 0])
        t_expected.append(e[0] / np.sqrt(cov[0, 0]))
        e2, cov2 = _closed_form(y, v, X, np.eye(2))
        f_expected.append(e2 @ np.linalg.solve(cov2, e2) / 2)
    dof = dofs.sum()
    np.testing.assert_allclose(read("lateVsEarly", "effect"), e_expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(read("lateVsEarly", "variance"), v_expected, rtol=1e-5)
    np.testing.assert_allclose(read("lateVsEarly", "t"), t_expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(read("lateVsEarly", "p"), stats.t.sf(t_expected, dof), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(read("both", "F"), f_expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(read("both", "p"), stats.f.sf(f_expected, 2, dof), rtol=1e-4, atol=1e-7)
    return np.max(np.abs(np.asarray(t_expected) - read("lateVsEarly", "t")))


def test_voxelwise_meta_design_equals_closed_form(voxels):
    _, out = voxels
    run_dir, subject = out / "node-run" / "sub-1", out / "node-subject" / "sub-1"
    mask = _load(_only(subject, "*_mask.nii.gz")) > 0
    effects = np.stack([_load(_only(run_dir, f"*run-{r}_contrast-faceVsHouse_stat-effect_statmap.nii.gz"))[mask]
                        for r in RUNS])
    variances = np.stack([_load(_only(run_dir, f"*run-{r}_contrast-faceVsHouse_stat-variance_statmap.nii.gz"))[mask]
                          for r in RUNS])
    dofs = np.array([json.loads(_only(run_dir, f"*run-{r}_contrast-faceVsHouse_stat-t_statmap.json").read_text())
                     ["DegreesOfFreedom"] for r in RUNS], dtype=float)
    assert mask.sum() > 80  # the 25 mm brain

    def read(contrast, stat):
        return _load(_only(subject, f"*contrast-faceVsHouse{contrast[0].upper() + contrast[1:]}"
                                    f"_stat-{stat}_statmap.nii.gz"))[mask]

    worst = _check(effects, variances, dofs, read)
    print(f"max |t - closed form| = {worst:.2e}")
    side = json.loads(_only(subject, "*LateVsEarly_stat-t_statmap.json").read_text())
    assert side["DegreesOfFreedom"] == dofs.sum() and side["Estimator"] == "fixed-effects"
    design = json.loads(_only(subject, "*_design.json").read_text())
    assert design["Design"]["Type"] == "meta" and "sum of the input" in design["Design"]["DegreesOfFreedom"]
    assert list(pd.read_csv(_only(subject, "*_design.tsv"), sep="\t")["late"]) == list(LATE)


def test_run_level_ar2_from_model_software_equals_nilearn(voxels):
    from nilearn.glm.first_level import FirstLevelModel
    from threadpoolctl import threadpool_limits

    bids, out = voxels
    folder = out / "node-run" / "sub-1"
    design = pd.read_csv(_only(folder, "*run-03_design.tsv"), sep="\t")
    mask_path = _only(folder, "*run-03_mask.nii.gz")
    mask = _load(mask_path) > 0
    info = json.loads(_only(folder, "*run-03_design.json").read_text())
    assert info["NoiseModel"] == "ar2" and info["NoiseModelDetails"]["Order"] == 2
    assert info["NoiseModelDetails"]["RandomState"] == 0 and info["NoiseModelDetails"]["NFilters"] > 10
    with warnings.catch_warnings(), threadpool_limits(1, user_api="openmp"):
        warnings.simplefilter("ignore")
        flm = FirstLevelModel(noise_model="ar2", mask_img=str(mask_path), random_state=0).fit(
            str(_bold(bids, "03")), design_matrices=[design])
    weights = np.array([{"trial_type.face": 1.0, "trial_type.house": -1.0}.get(c, 0.0) for c in design.columns])
    ref = flm.compute_contrast(weights, output_type="all")
    ours = _load(_only(folder, "*run-03_contrast-faceVsHouse_stat-t_statmap.nii.gz"))[mask]
    np.testing.assert_allclose(ours, ref["stat"].get_fdata()[mask], rtol=1e-4, atol=1e-4)
    assert np.abs(ours).max() > 3


def test_region_meta_design_equals_closed_form(regions):
    _, out = regions
    run_dir, subject = out / "node-run" / "sub-1", out / "node-subject" / "sub-1"
    tables = [_table(_only(run_dir, f"*run-{r}_contrast-faceVsHouse_roistats.tsv")).loc[FIT] for r in RUNS]
    effects = np.stack([t["effect"].to_numpy() for t in tables])
    variances = np.stack([t["variance"].to_numpy() for t in tables])
    dofs = np.array([t["dof"].iloc[0] for t in tables], dtype=float)

    def read(contrast, stat):
        table = _table(_only(subject, f"*contrast-faceVsHouse{contrast[0].upper() + contrast[1:]}_roistats.tsv"))
        return table.loc[FIT, stat].to_numpy(dtype=float)

    _check(effects, variances, dofs, read)
    assert (_table(_only(subject, "*LateVsEarly_roistats.tsv")).loc[FIT, "dof"] == dofs.sum()).all()
