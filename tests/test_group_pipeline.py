"""Every ``models/group_*.json`` through the CLI, against nilearn's SecondLevelModel.

Each test simulates one first-level map per subject and incoming contrast
(``simulate_maps``) with a ``participants.tsv`` holding the columns the model
reads, runs ``bids-stats ... dataset --model models/group_<x>.json``, builds
the equivalent design matrix by hand from the simulated table, fits it with
nilearn on the same maps and compares the t / F maps (within 1e-5), the
degrees of freedom written in the sidecars and, where one exists, a scipy
closed form (one-sample, two-sample, paired t). The mixed-effects engine is
checked against the closed form REML has when all within-subject variances
are equal.
"""
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.glm.second_level import SecondLevelModel
from scipy import stats

import bids_app.graph.pipeline as pipeline
from bids_app.cli import main
from bids_app.report.html import WrittenReport
from conftest import MODELS
from simulate_maps import AFFINE, SPACE, brain_mask, load, mask_img, simulate_maps

BRAIN = brain_mask()
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(autouse=True)
def _no_report(monkeypatch):
    # The HTML report plots every z map (about 1.5 s each on this machine);
    # it is tested on its own, and nothing here reads it.
    monkeypatch.setattr(pipeline, "write_report", lambda *args, **kwargs: WrittenReport(Path("report.html"), []))


def _subjects(n):
    return [f"{i:02d}" for i in range(1, n + 1)]


def _run(tmp_path, data, model, *extra):
    """Run the CLI on ``data`` with a model from models/ (a name) or a dict; returns the node folder."""
    if isinstance(model, str):
        path = MODELS / f"{model}.json"
        name = json.loads(path.read_text())["Nodes"][0]["Name"]
    else:
        path = tmp_path / "model.json"
        path.write_text(json.dumps(model))
        name = model["Nodes"][0]["Name"]
    out = tmp_path / "out"
    assert main([str(data), str(out), "dataset", "--model", str(path), *extra]) == 0
    return out / f"node-{name}"


def _stat(node, task, contrast, stat):
    path = node / f"task-{task}_space-{SPACE}_contrast-{contrast}_stat-{stat}_statmap.nii.gz"
    assert path.exists(), f"missing {path.name}; have {sorted(p.name for p in node.glob('*stat-*.nii.gz'))}"
    return path


def _sidecar(path):
    return json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())


def _nilearn(maps, design: pd.DataFrame, contrast, test="t"):
    """nilearn's t or F map (voxels of the brain) for the same maps and design.

    The maps go in as one 4-D image of the arrays the files hold (float32
    values): nilearn checks every file of a list on its own, 0.25 s each.
    """
    img = nib.Nifti1Image(np.stack([m.effect for m in maps], axis=-1), AFFINE)
    slm = SecondLevelModel(mask_img=mask_img()).fit(img, design_matrix=design)
    img = slm.compute_contrast(np.asarray(contrast, dtype=float), second_level_stat_type=test,
                               output_type="stat")
    return np.asarray(img.get_fdata(), dtype=np.float64)[BRAIN]


def _check(node, task, name, maps, design, contrast, test="t"):
    """Our map equals nilearn's inside the brain, is NaN outside; returns the sidecar."""
    path = _stat(node, task, name, test)
    ours = load(path)
    np.testing.assert_allclose(ours[BRAIN], _nilearn(maps, design, contrast, test), **TOL)
    assert np.isnan(ours[~BRAIN]).all()
    meta = _sidecar(path)
    assert meta["DegreesOfFreedom"] == len(maps) - np.linalg.matrix_rank(design.to_numpy())
    return meta


def _design_tsv(node, task, contrast=None):
    part = f"_contrast-{contrast}" if contrast else ""
    return pd.read_csv(node / f"task-{task}_space-{SPACE}{part}_design.tsv", sep="\t")


def _design_order(node, task, maps, contrast=None):
    """``maps`` in the order of the design's rows (the design JSON lists its inputs)."""
    part = f"_contrast-{contrast}" if contrast else ""
    inputs = json.loads((node / f"task-{task}_space-{SPACE}{part}_design.json").read_text())["Inputs"]
    by_name = {m.path.name: m for m in maps}  # inputs are BIDS URIs into the maps' dataset
    assert len(inputs) == len(maps) and all(p.startswith("bids:") for p in inputs)
    return [by_name[p.rsplit("/", 1)[-1]] for p in inputs]


def _ds005_participants(subjects, seed):
    """sex 0/1 and age, as in ds000005's participants.tsv."""
    rng = np.random.default_rng(seed)
    sex = np.resize([0, 1, 1, 0, 1], len(subjects))
    return pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects], "sex": sex,
                         "age": rng.integers(18, 36, len(subjects))})


# ---------------------------------------------------------------- GroupBy [contrast]

TESTED_MODELS = {"group_one_sample", "group_covariate", "group_two_sample", "group_two_sample_formula",
                 "group_interaction", "group_paired", "group_anova_3x3"}


def test_every_group_model_file_is_run_here():
    assert {p.stem for p in MODELS.glob("group_*.json")} == TESTED_MODELS


def test_one_sample(tmp_path):
    subjects = _subjects(10)
    data = tmp_path / "maps"
    maps = simulate_maps(data, task="emoreg", subjects=subjects, contrasts=["reappNegVsLookNeg"],
                         with_variance=False, dof=None, seed=1)
    node = _run(tmp_path, data, "group_one_sample")
    design = pd.DataFrame({"intercept": np.ones(len(maps))})
    meta = _check(node, "emoreg", "reappNegVsLookNeg", maps, design, [1])
    assert meta["DegreesOfFreedom"] == 9 and meta["Estimator"] == "ols"
    y = np.stack([m.effect[BRAIN] for m in maps])
    np.testing.assert_allclose(load(_stat(node, "emoreg", "reappNegVsLookNeg", "t"))[BRAIN],
                               stats.ttest_1samp(y, 0).statistic, **TOL)


def test_a_group_left_without_residual_by_quality_control_names_itself(tmp_path, capsys):
    """Planned on both maps the design is estimable; QC then drops one (all NaN) and the fit's refusal
    names the node, the group and the maps QC kept."""
    data = tmp_path / "maps"
    maps = simulate_maps(data, task="emoreg", subjects=_subjects(2), contrasts=["reappNegVsLookNeg"],
                         with_variance=False, dof=None, seed=1)
    nib.save(nib.Nifti1Image(np.full(BRAIN.shape, np.nan, np.float32), AFFINE), maps[1].path)
    path = MODELS / "group_one_sample.json"
    code = main([str(data), str(tmp_path / "out"), "dataset", "--model", str(path)])
    err = capsys.readouterr().err
    assert code == 20, err
    node = json.loads(path.read_text())["Nodes"][0]["Name"]
    assert (f"node '{node}', group contrast-reappNegVsLookNeg (1 map(s) after quality control): the design "
            "cannot be estimated") in err
    assert "no residual degrees of freedom: 1 maps for 1 independent columns" in err


def test_covariate(tmp_path):
    subjects = _subjects(12)
    rng = np.random.default_rng(2)
    participants = pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects],
                                 "X_RVLPFC": rng.normal(1.0, 0.6, len(subjects)).round(4),
                                 "Y_Reappraisal_Success": rng.normal(0.5, 0.4, len(subjects)).round(4)})
    x = dict(zip(subjects, participants["X_RVLPFC"]))
    data = tmp_path / "maps"
    maps = simulate_maps(data, task="emoreg", subjects=subjects, contrasts=["c"], participants=participants,
                         mean=lambda e: 0.7 * x[e["subject"]], seed=2)
    node = _run(tmp_path, data, "group_covariate")
    maps = _design_order(node, "emoreg", maps, "c")
    cov = np.array([x[m.entities["subject"]] for m in maps])
    design = pd.DataFrame({"intercept": np.ones(len(maps)), "X_RVLPFC": cov - cov.mean()})
    np.testing.assert_allclose(_design_tsv(node, "emoreg", "c")[list(design)], design, rtol=1e-12, atol=1e-12)
    # one incoming contrast c: the intercept dummy is c, the others c_<name>
    _check(node, "emoreg", "c", maps, design, [1, 0])
    _check(node, "emoreg", "cXRVLPFC", maps, design, [0, 1])
    _check(node, "emoreg", "cNegXRVLPFC", maps, design, [0, -1])


def _two_sample(tmp_path, model, contrast, mean_of_sex, seed):
    """12 subjects' maps whose mean depends on their sex (0/1, ds005 coding), run through
    ``model``: the node, the maps in design order and their sex in that order."""
    subjects = _subjects(12)
    participants = _ds005_participants(subjects, seed=seed)
    sex = dict(zip(subjects, participants["sex"]))
    maps = simulate_maps(tmp_path / "maps", task="mixedgamblestask", subjects=subjects, contrasts=[contrast],
                         participants=participants, mean=lambda e: mean_of_sex(sex[e["subject"]]), seed=seed)
    node = _run(tmp_path, tmp_path / "maps", model)
    maps = _design_order(node, "mixedgamblestask", maps, contrast)
    return node, maps, np.array([sex[m.entities["subject"]] for m in maps], dtype=float)


def test_two_sample_cell_means(tmp_path):
    node, maps, s = _two_sample(tmp_path, "group_two_sample", "gain", lambda sex: 0.3 + 0.8 * sex, seed=3)
    design = pd.DataFrame({"sex.0": 1 - s, "sex.1": s})
    np.testing.assert_array_equal(_design_tsv(node, "mixedgamblestask", "gain")[list(design)], design)
    _check(node, "mixedgamblestask", "gainSex1VsSex0", maps, design, [-1, 1])
    _check(node, "mixedgamblestask", "gainGroupMean", maps, design, [0.5, 0.5])
    y = np.stack([m.effect[BRAIN] for m in maps])
    np.testing.assert_allclose(load(_stat(node, "mixedgamblestask", "gainSex1VsSex0", "t"))[BRAIN],
                               stats.ttest_ind(y[s == 1], y[s == 0]).statistic, **TOL)


def test_two_sample_formula(tmp_path):
    node, maps, s = _two_sample(tmp_path, "group_two_sample_formula", "loss", lambda sex: -0.5 * sex, seed=4)
    design = pd.DataFrame({"intercept": np.ones(len(maps)), "sex.1": s})
    np.testing.assert_array_equal(_design_tsv(node, "mixedgamblestask", "loss")[list(design)], design)
    _check(node, "mixedgamblestask", "lossSex0Mean", maps, design, [1, 0])
    _check(node, "mixedgamblestask", "lossSex1VsSex0", maps, design, [0, 1])


def test_sex_by_age_interaction(tmp_path):
    subjects = _subjects(14)
    participants = _ds005_participants(subjects, seed=5)
    sex = dict(zip(subjects, participants["sex"]))
    age = dict(zip(subjects, participants["age"]))
    data = tmp_path / "maps"
    maps = simulate_maps(data, task="mixedgamblestask", subjects=subjects, contrasts=["gain"],
                         participants=participants, seed=5,
                         mean=lambda e: 0.05 * (age[e["subject"]] - 25) * (1 + sex[e["subject"]]))
    node = _run(tmp_path, data, "group_interaction")
    maps = _design_order(node, "mixedgamblestask", maps, "gain")
    s = np.array([sex[m.entities["subject"]] for m in maps], dtype=float)
    a = np.array([age[m.entities["subject"]] for m in maps], dtype=float)
    a -= a.mean()
    design = pd.DataFrame({"intercept": 1.0, "sex.1": s, "age": a, "sex.1:age": s * a})
    np.testing.assert_allclose(_design_tsv(node, "mixedgamblestask", "gain")[list(design)], design,
                               rtol=1e-12, atol=1e-12)
    _check(node, "mixedgamblestask", "gainSex1VsSex0", maps, design, [0, 1, 0, 0])
    _check(node, "mixedgamblestask", "gainAgeSlopeSex0", maps, design, [0, 0, 1, 0])
    _check(node, "mixedgamblestask", "gainSlopeDifference", maps, design, [0, 0, 0, 1])


# ---------------------------------------------------------------- GroupBy [] (repeated measures)

def _factor_design(maps, conditions, subjects):
    """One indicator column per condition (contrast) then per subject, SPM style (rank-deficient)."""
    con = [m.entities["contrast"] for m in maps]
    sub = [m.entities["subject"] for m in maps]
    columns = {f"contrast.{c}": [float(x == c) for x in con] for c in conditions}
    columns.update({f"subject.{s}": [float(x == s) for x in sub] for s in subjects})
    return pd.DataFrame(columns)


def _full_rank(design, subjects):
    """The same column space without the last subject column.

    nilearn divides the residual sum of squares by n - n_columns instead of
    n - rank (``OLSModel.fit``), so it needs a full-rank design; contrasts
    between conditions (weights summing to 0) are the same estimable
    functions in both parametrisations.
    """
    full = design.drop(columns=[f"subject.{subjects[-1]}"])
    assert np.linalg.matrix_rank(full.to_numpy()) == full.shape[1] == np.linalg.matrix_rank(design.to_numpy())
    return full


def test_paired(tmp_path):
    subjects = _subjects(9)
    data = tmp_path / "maps"
    maps = simulate_maps(data, task="rhymejudgment", subjects=subjects, contrasts=["word", "pseudoword"],
                         with_variance=False, seed=6, mean=lambda e: 1.0 if e["contrast"] == "word" else 0.6)
    node = _run(tmp_path, data, "group_paired")
    maps = _design_order(node, "rhymejudgment", maps)
    design = _factor_design(maps, ["word", "pseudoword"], subjects)
    np.testing.assert_array_equal(_design_tsv(node, "rhymejudgment"), design)
    meta = _check(node, "rhymejudgment", "wordVsPseudoword", maps, _full_rank(design, subjects),
                  [1, -1] + [0] * (len(subjects) - 1))
    assert meta["DegreesOfFreedom"] == len(subjects) - 1
    word = np.stack([m.effect[BRAIN] for m in maps if m.entities["contrast"] == "word"])
    pseudo = np.stack([m.effect[BRAIN] for m in maps if m.entities["contrast"] == "pseudoword"])
    np.testing.assert_allclose(load(_stat(node, "rhymejudgment", "wordVsPseudoword", "t"))[BRAIN],
                               stats.ttest_rel(word, pseudo).statistic, **TOL)


CELLS = [f"gain{g}loss{l}" for g in (1, 2, 3) for l in (1, 2, 3)]


def test_anova_3x3_repeated_measures(tmp_path):
    subjects = _subjects(16)
    data = tmp_path / "maps"
    maps = simulate_maps(data, task="mixedgamblestask", subjects=subjects, contrasts=CELLS, with_variance=False,
                         dof=None, seed=7, mean=lambda e: 0.8 * int(e["contrast"][4]) - 0.1 * int(e["contrast"][-1]))
    assert len(maps) == 144
    node = _run(tmp_path, data, "group_anova_3x3")
    maps = _design_order(node, "mixedgamblestask", maps)
    design = _factor_design(maps, CELLS, subjects)
    np.testing.assert_array_equal(_design_tsv(node, "mixedgamblestask"), design)
    design = _full_rank(design, subjects)
    model = json.loads((MODELS / "group_anova_3x3.json").read_text())
    expected_num = {"gain": 2, "loss": 2, "gainByLoss": 4}
    for contrast in model["Nodes"][0]["Contrasts"]:
        cols = contrast["ConditionList"]
        weights = np.atleast_2d(np.asarray(contrast["Weights"], dtype=float))
        full = np.zeros((weights.shape[0], design.shape[1]))
        full[:, [list(design).index(c) for c in cols]] = weights
        test = contrast["Test"]
        meta = _check(node, "mixedgamblestask", contrast["Name"], maps, design,
                      full if test == "F" else full[0], test)
        # 144 maps, rank 9 + 16 - 1 = 24
        assert meta["DegreesOfFreedom"] == 120
        if test == "F":
            assert meta["NumeratorDegreesOfFreedom"] == expected_num[contrast["Name"]]
    # the planted gain effect is found, the absent interaction is not
    assert np.median(load(_stat(node, "mixedgamblestask", "gain", "F"))[BRAIN]) > 10
    assert np.median(load(_stat(node, "mixedgamblestask", "gainByLoss", "F"))[BRAIN]) < 2


# ---------------------------------------------------------------- mixed effects

def test_mixed_effects_estimator_writes_tau2(tmp_path):
    """With equal within-subject variances s2, REML has a closed form:
    tau2 = max(0, S^2 - s2) (S^2 the sample variance) and t = mean / sqrt(max(S^2, s2) / n)."""
    subjects = _subjects(10)
    data = tmp_path / "maps"
    maps = simulate_maps(data, task="emoreg", subjects=subjects, contrasts=["c"], equal_variances=True, seed=8)
    model = json.loads((MODELS / "group_one_sample.json").read_text())
    model["Nodes"][0]["Model"]["Software"] = {"bids-stats": {"Estimator": "mixed"}}
    node = _run(tmp_path, data, model)
    design = json.loads((node / f"task-emoreg_space-{SPACE}_contrast-c_design.json").read_text())
    assert design["Estimator"] == "mixed-reml"
    y = np.stack([m.effect[BRAIN] for m in maps])
    s2 = maps[0].variance[BRAIN]
    sample_var = y.var(axis=0, ddof=1)
    tau2 = load(node / f"task-emoreg_space-{SPACE}_contrast-c_stat-tau2_statmap.nii.gz")
    np.testing.assert_allclose(tau2[BRAIN], np.maximum(sample_var - s2, 0), rtol=1e-4, atol=1e-6)
    assert 0 < np.mean(tau2[BRAIN] > 0) < 1  # both regimes are exercised
    tpath = _stat(node, "emoreg", "c", "t")
    expected_t = y.mean(axis=0) / np.sqrt(np.maximum(sample_var, s2) / len(maps))
    np.testing.assert_allclose(load(tpath)[BRAIN], expected_t, rtol=1e-4, atol=1e-5)
    assert _sidecar(tpath)["DegreesOfFreedom"] == 9
