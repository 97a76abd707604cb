"""Run level end to end through the CLI.

Real data (studyforrest, Haxby) and the simulated fMRIPrep-style dataset go
through ``bids-stats ... run|subject``; the written maps are compared with
nilearn, bad inputs must stop with their documented exit code before anything
is written, and the confound / absent-condition / input-selection policies
are checked on the files and provenance they leave.
"""
import json
import os
import warnings

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from bids_app.cli import main
from conftest import MODELS, real_data

HAXBY_RUNS = ("01", "02")


# ---------------------------------------------------------------- helpers

def _load(path):
    return np.asarray(nb.load(path).dataobj, dtype=np.float64)


def _only(folder, pattern):
    hits = sorted(folder.rglob(pattern))
    assert len(hits) == 1, f"{pattern}: {hits}"
    return hits[0]


def _cli(bids, out, level, model, *extra):
    return main([str(bids), str(out), level, "--model", str(model), *extra])


def _provenance(out):
    return json.loads((out / "provenance.json").read_text())


def _write_model(tmp_path, model: dict):
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model))
    return path


def _haxby_model():
    return json.loads((MODELS / "haxby_run_subject.json").read_text())


def _haxby(tmp_path, runs=HAXBY_RUNS):
    """Symlinks to the 25 mm Haxby runs ``runs`` (no acq-1slice), motion confounds included."""
    src = real_data("haxby2001_sub1")
    dst = tmp_path / "haxby"
    for path in src.rglob("*"):
        if not path.is_file() or "acq-1slice" in path.name:
            continue
        if "_run-" in path.name and not any(f"_run-{r}_" in path.name for r in runs):
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path)
    return dst


def _events(bids, run):
    return bids / "sub-1" / "func" / f"sub-1_task-objectviewing_run-{run}_events.tsv"


def _confounds(bids, run):
    return (bids / "derivatives" / "motion" / "sub-1" / "func"
            / f"sub-1_task-objectviewing_run-{run}_desc-confounds_timeseries.tsv")


def _bold(bids, run):
    return bids / "sub-1" / "func" / f"sub-1_task-objectviewing_run-{run}_bold.nii.gz"


def _rewrite_tsv(path, edit):
    """Replace a symlinked TSV by an edited copy (the shared data stay untouched)."""
    table = pd.read_csv(path, sep="\t", keep_default_na=False)
    path.unlink()
    edit(table).to_csv(path, sep="\t", index=False)


def _replace_bytes(path, data: bytes):
    path.unlink()
    path.write_bytes(data)


# ---------------------------------------------------------------- 1. studyforrest against nilearn

@pytest.fixture(scope="module")
def studyforrest(tmp_path_factory):
    data = real_data("studyforrest_sub02")
    out = tmp_path_factory.mktemp("studyforrest") / "out"
    assert _cli(data, out, "run", MODELS / "studyforrest_localizer.json") == 0
    return data, out / "node-run" / "sub-02"


def test_studyforrest_design_equals_nilearn(studyforrest):
    """The written design matrix is nilearn's (SPM HRF, cosine drift at 1/128 Hz) on the real events."""
    from nilearn.glm.first_level import make_first_level_design_matrix

    data, folder = studyforrest
    ours = pd.read_csv(_only(folder, "*_design.tsv"), sep="\t")
    events = pd.read_csv(next(data.glob("sub-02/func/*_events.tsv")), sep="\t")
    events = events.assign(trial_type="trial_type." + events["trial_type"])[["onset", "duration", "trial_type"]]
    ref = make_first_level_design_matrix(2.0 * np.arange(156), events, hrf_model="spm",
                                         drift_model="cosine", high_pass=1 / 128)
    ref = ref.rename(columns={"constant": "intercept"})
    conditions = [f"trial_type.{c}" for c in ("face", "body", "house", "object", "scene", "scramble")]
    assert list(ours.columns[:7]) == [*conditions, "intercept"]
    assert sorted(ours.columns) == sorted(ref.columns)
    np.testing.assert_allclose(ours.to_numpy(), ref[ours.columns].to_numpy(), rtol=1e-10, atol=1e-12)
    design_json = json.loads(_only(folder, "*_design.json").read_text())
    assert design_json["RepetitionTime"] == 2.0
    assert design_json["HighPass"]["CutoffHz"] == 1 / 128


def test_studyforrest_maps_equal_nilearn(studyforrest):
    """Effect, variance, t and z maps equal nilearn FirstLevelModel (AR(1)) on our design and mask."""
    from nilearn.glm.first_level import FirstLevelModel

    data, folder = studyforrest
    bold_path = next(data.glob("sub-02/func/*_bold.nii.gz"))
    design = pd.read_csv(_only(folder, "*_design.tsv"), sep="\t")
    mask_path = _only(folder, "*_mask.nii.gz")
    mask = _load(mask_path) > 0
    assert 20_000 < mask.sum() < 0.5 * mask.size  # a brain, not the 80x80x35 box
    # The BOLD is int16, which nilearn scales in float32, as we do: the file as it is
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flm = FirstLevelModel(noise_model="ar1", mask_img=str(mask_path), minimize_memory=True)
        flm.fit(str(bold_path), design_matrices=[design])
    pairs = {"faceVsHouse": "trial_type.house", "faceVsScrambled": "trial_type.scramble"}
    for name, other in pairs.items():
        weights = np.array([{"trial_type.face": 1.0, other: -1.0}.get(c, 0.0) for c in design.columns])
        ref = flm.compute_contrast(weights, output_type="all")
        for stat, key in (("effect", "effect_size"), ("variance", "effect_variance"), ("t", "stat"),
                          ("z", "z_score")):
            ours = _load(_only(folder, f"*contrast-{name}_stat-{stat}_statmap.nii.gz"))
            expected = ref[key].get_fdata()[mask]
            np.testing.assert_allclose(ours[mask], expected, rtol=1e-5,
                                       atol=1e-6 * np.abs(expected).max(), err_msg=f"{name} {stat}")
            assert np.isnan(ours[~mask]).all()
        # the face-selective peak: strongly positive in both, same value and voxel
        ours_z = _load(_only(folder, f"*contrast-{name}_stat-z_statmap.nii.gz"))
        ref_z = ref["z_score"].get_fdata()
        assert ref_z[mask].max() > 4
        assert ours_z[mask].max() == pytest.approx(ref_z[mask].max(), rel=1e-3)
        assert np.nanargmax(ours_z) == np.argmax(np.where(mask, ref_z, -np.inf))


# ---------------------------------------------------------------- 2. bad inputs

def _no_onset(bids, model):
    _rewrite_tsv(_events(bids, "02"), lambda t: t.drop(columns="onset"))
    return [str(_events(bids, "02")), "'onset'"]


def _negative_duration(bids, model):
    _rewrite_tsv(_events(bids, "02"), lambda t: t.assign(duration=t["duration"].where(t.index != 3, -1.0)))
    return [str(_events(bids, "02")), "'duration'", "row(s) 4"]


def _transformation_missing_column(bids, model):
    model["Nodes"][0]["Transformations"]["Instructions"].append({"Name": "Scale", "Input": ["reaction_time"]})
    return [str(_events(bids, "01")), "'reaction_time'"]


def _unknown_hrf(bids, model):
    model["Nodes"][0]["Model"]["HRF"]["Model"] = "spn"
    return ["model.json", "Nodes[0].Model.HRF.Model", "'spn'"]


def _no_repetition_time(bids, model):
    sidecar = bids / "task-objectviewing_bold.json"
    meta = json.loads(sidecar.read_text())
    del meta["RepetitionTime"]
    _replace_bytes(sidecar, json.dumps(meta).encode())
    return [str(_bold(bids, "01")), "RepetitionTime"]


def _garbage_bold(bids, model):
    _replace_bytes(_bold(bids, "02"), b"this is not a NIfTI image")
    return [str(_bold(bids, "02"))]


def _truncated_bold(bids, model):
    data = _bold(bids, "02").read_bytes()
    _replace_bytes(_bold(bids, "02"), data[: len(data) // 2])
    return [str(_bold(bids, "02"))]


@pytest.mark.parametrize("corrupt, code", [
    (_no_onset, 19), (_negative_duration, 19), (_transformation_missing_column, 20), (_unknown_hrf, 3),
    (_no_repetition_time, 19), (_garbage_bold, 19), (_truncated_bold, 19),
], ids=lambda v: getattr(v, "__name__", str(v)).strip("_"))
def test_bad_run_input_exits_before_writing(tmp_path, capsys, corrupt, code):
    bids = _haxby(tmp_path)
    model = _haxby_model()
    expected_in_message = corrupt(bids, model)
    out = tmp_path / "out"
    assert _cli(bids, out, "run", _write_model(tmp_path, model)) == code
    message = capsys.readouterr().err
    for text in expected_in_message:
        assert text in message, f"{text!r} not in {message!r}"
    assert not out.exists()


def test_truncated_run_after_good_runs_writes_nothing(tmp_path, capsys, simulated):
    """With fMRIPrep masks no EPI mask reads the data first: a truncated last run must
    still be caught while planning, not after the other runs' outputs are written."""
    bids = _fmriprep_copy(tmp_path, simulated)
    last = sorted(bids.glob("derivatives/fmriprep/sub-*/func/*desc-preproc_bold.nii.gz"))[-1]
    data = last.read_bytes()
    _replace_bytes(last, data[: len(data) - len(data) // 10])
    out = tmp_path / "out"
    assert _cli(bids, out, "run", MODELS / "demo.json") == 19
    assert str(last) in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------- 3. missing confounds

def _explicit_confounds_model():
    """The Haxby model with each motion parameter named (not globbed), so a missing one is noticed."""
    model = _haxby_model()
    motion = [f"{kind}_{axis}" for kind in ("rot", "trans") for axis in "xyz"]
    model["Nodes"][0]["Model"]["X"] = ["trial_type.*", *motion, 1]
    return model


def test_missing_confound_dropped_with_warning(tmp_path):
    bids = _haxby(tmp_path)
    _rewrite_tsv(_confounds(bids, "02"), lambda t: t.drop(columns="trans_x"))
    out = tmp_path / "out"
    assert _cli(bids, out, "run", _write_model(tmp_path, _explicit_confounds_model())) == 0
    node = out / "node-run"
    design1 = pd.read_csv(_only(node, "*run-01_design.tsv"), sep="\t")
    design2 = pd.read_csv(_only(node, "*run-02_design.tsv"), sep="\t")
    assert "trans_x" in design1 and "trans_x" not in design2
    assert list(design2.columns) == [c for c in design1.columns if c != "trans_x"]
    confounds = pd.read_csv(_confounds(bids, "02"), sep="\t")
    np.testing.assert_array_equal(design2["trans_y"], confounds["trans_y"])
    messages = [w for w in _provenance(out)["Warnings"] if "trans_x" in w]
    assert len(messages) == 1 and str(_confounds(bids, "02")) in messages[0]
    dropped = json.loads(_only(node, "*run-02_design.json").read_text())["Dropped"]
    assert dropped == [{"Entry": "trans_x", "Kind": "confound", "Reason": "no such confound column"}]
    assert json.loads(_only(node, "*run-01_design.json").read_text())["Dropped"] == []


@pytest.mark.parametrize("named", [True, False], ids=["named-confound", "glob-matching-fewer"])
def test_missing_confound_error_policy(tmp_path, capsys, named):
    """A confound named in X, or one a glob matches in other runs only, stops the run with
    --missing-confounds error (exit 20: the design cannot be built), naming the file."""
    bids = _haxby(tmp_path)
    _rewrite_tsv(_confounds(bids, "02"), lambda t: t.drop(columns="trans_x"))
    out = tmp_path / "out"
    model = _write_model(tmp_path, _explicit_confounds_model() if named else _haxby_model())
    assert _cli(bids, out, "run", model, "--missing-confounds", "error") == 20
    message = capsys.readouterr().err
    assert str(_confounds(bids, "02") if named else _events(bids, "02")) in message and "'trans_x'" in message
    assert not out.exists()


def test_glob_matching_fewer_confounds_is_reported(tmp_path):
    bids = _haxby(tmp_path)
    _rewrite_tsv(_confounds(bids, "02"), lambda t: t.drop(columns="trans_x"))
    out = tmp_path / "out"
    assert _cli(bids, out, "run", _write_model(tmp_path, _haxby_model())) == 0  # X has "trans_*"
    assert "trans_x" not in pd.read_csv(_only(out / "node-run", "*run-02_design.tsv"), sep="\t")
    messages = [w for w in _provenance(out)["Warnings"] if "'trans_x'" in w]
    assert len(messages) == 1 and str(_events(bids, "02")) in messages[0]


def test_options_mask_matching_nothing_is_exit_18_before_writing(tmp_path, capsys):
    bids = _haxby(tmp_path)
    model = _haxby_model()
    model["Nodes"][0]["Model"]["Options"]["Mask"] = {"desc": ["nosuchmask"], "suffix": ["mask"]}
    out = tmp_path / "out"
    assert _cli(bids, out, "run", _write_model(tmp_path, model)) == 18
    assert "Options.Mask" in capsys.readouterr().err
    assert not out.exists()


def test_low_pass_filters_data_and_design_like_nilearn(tmp_path):
    """LowPassFilterCutoffHz: t equals nilearn's AR(1) run_glm on Butterworth-filtered data and design."""
    from nilearn.glm.contrasts import compute_contrast
    from nilearn.glm.first_level import run_glm
    from nilearn.glm.first_level.first_level import mean_scaling
    from nilearn.masking import apply_mask
    from nilearn.signal import butterworth

    bids = _haxby(tmp_path, runs=("01",))
    model = _haxby_model()
    model["Nodes"] = model["Nodes"][:1]
    model["Nodes"][0]["Model"]["Options"]["LowPassFilterCutoffHz"] = 0.1
    out = tmp_path / "out"
    assert _cli(bids, out, "run", _write_model(tmp_path, model)) == 0
    folder = out / "node-run"
    design = pd.read_csv(_only(folder, "*_design.tsv"), sep="\t")
    info = json.loads(_only(folder, "*_design.json").read_text())
    assert info["LowPass"]["CutoffHz"] == 0.1 and info["LowPass"]["Applied"] is True
    mask_path = _only(folder, "*_mask.nii.gz")
    mask = _load(mask_path) > 0

    # the reference filters nilearn's own design and the mean-scaled data
    from nilearn.glm.first_level import make_first_level_design_matrix
    events = pd.read_csv(_events(bids, "01"), sep="\t")
    events = events.assign(trial_type="trial_type." + events["trial_type"])[["onset", "duration", "trial_type"]]
    confounds = pd.read_csv(_confounds(bids, "01"), sep="\t")
    ref_design = make_first_level_design_matrix(
        2.5 * np.arange(121), events, hrf_model="spm", drift_model="cosine", high_pass=0.0078125,
        add_regs=confounds[[c for c in design.columns if c in confounds]],
    ).rename(columns={"constant": "intercept"})[design.columns]
    X = butterworth(ref_design.to_numpy(copy=True), sampling_rate=1 / 2.5, low_pass=0.1, order=5)
    np.testing.assert_allclose(design.to_numpy(), X, rtol=1e-8, atol=1e-10)
    Y = butterworth(mean_scaling(apply_mask(str(_bold(bids, "01")), str(mask_path)))[0].astype(np.float64),
                    sampling_rate=1 / 2.5, low_pass=0.1, order=5)
    labels, results = run_glm(Y, X, noise_model="ar1")
    weights = np.array([{"trial_type.face": 1.0, "trial_type.house": -1.0}.get(c, 0.0) for c in design.columns])
    ref_t = compute_contrast(labels, results, weights, stat_type="t").stat()
    ours = _load(_only(folder, "*contrast-faceVsHouse_stat-t_statmap.nii.gz"))[mask]
    np.testing.assert_allclose(ours, ref_t, rtol=1e-4, atol=1e-6 * np.abs(ref_t).max())
    # and it changed the answer: without the filter t differs
    plain = tmp_path / "plain"
    del model["Nodes"][0]["Model"]["Options"]["LowPassFilterCutoffHz"]
    assert _cli(bids, plain, "run", _write_model(tmp_path, model)) == 0
    unfiltered = _load(_only(plain / "node-run", "*contrast-faceVsHouse_stat-t_statmap.nii.gz"))[mask]
    assert np.max(np.abs(unfiltered - ours)) > 0.1


# ---------------------------------------------------------------- 4. a condition absent from one run

def test_absent_condition_skips_contrasts_in_that_run_only(tmp_path):
    from nilearn.glm.contrasts import compute_fixed_effects

    bids = _haxby(tmp_path, runs=("01", "02", "03"))
    _rewrite_tsv(_events(bids, "02"), lambda t: t[t["trial_type"] != "face"])
    model = _haxby_model()
    model["Nodes"][0]["Contrasts"].append({"Name": "houseVsScrambled", "Test": "t", "Weights": [1, -1],
                                           "ConditionList": ["trial_type.house", "trial_type.scrambledpix"]})
    out = tmp_path / "out"
    assert _cli(bids, out, "subject", _write_model(tmp_path, model)) == 0
    run_node, subject_node = out / "node-run", out / "node-subject"

    design2 = pd.read_csv(_only(run_node, "*run-02_design.tsv"), sep="\t")
    assert "trial_type.face" not in design2  # dropped, not a zero column
    assert "trial_type.face" in pd.read_csv(_only(run_node, "*run-01_design.tsv"), sep="\t")
    for contrast in ("faceVsHouse", "faceVsScrambled"):
        assert not list(run_node.rglob(f"*run-02_contrast-{contrast}_*"))
        for run in ("01", "03"):
            _only(run_node, f"*run-{run}_contrast-{contrast}_stat-effect_statmap.nii.gz")
    _only(run_node, "*run-02_contrast-houseVsScrambled_stat-effect_statmap.nii.gz")
    messages = _provenance(out)["Warnings"]
    for contrast in ("faceVsHouse", "faceVsScrambled"):
        assert [w for w in messages if "run-02" in w and f"'{contrast}' skipped" in w]

    units = {u["Entities"].get("contrast"): u for u in _provenance(out)["Units"] if u["Node"] == "subject"}
    assert units["faceVsHouse"]["NInputs"] == 2 and units["faceVsScrambled"]["NInputs"] == 2
    assert units["houseVsScrambled"]["NInputs"] == 3
    inputs = json.loads(_only(subject_node, "*contrast-faceVsHouse_design.json").read_text())["Inputs"]
    assert sorted(p.split("_run-")[1][:2] for p in inputs) == ["01", "03"]

    # the subject effect is the fixed-effects combination of runs 01 and 03 alone
    mask_img = nb.load(_only(subject_node, "*contrast-faceVsHouse_mask.nii.gz"))
    mask = _load(mask_img.get_filename()) > 0
    effects = [str(_only(run_node, f"*run-{r}_contrast-faceVsHouse_stat-effect_statmap.nii.gz"))
               for r in ("01", "03")]
    variances = [e.replace("stat-effect", "stat-variance") for e in effects]
    ref_effect, _, ref_t, _ = compute_fixed_effects(effects, variances, mask_img, precision_weighted=True)
    ours = _load(_only(subject_node, "*contrast-faceVsHouse_stat-effect_statmap.nii.gz"))
    np.testing.assert_allclose(ours[mask], ref_effect.get_fdata()[mask], rtol=1e-5, atol=1e-7)
    ours_t = _load(_only(subject_node, "*contrast-faceVsHouse_stat-t_statmap.nii.gz"))
    np.testing.assert_allclose(ours_t[mask], ref_t.get_fdata()[mask], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- 5. fMRIPrep-style inputs

MNI = "MNI152NLin2009cAsym"


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    from bids_app.demo.simulate import simulate_dataset

    root = tmp_path_factory.mktemp("simulated") / "bids"
    simulate_dataset(root, n_subjects=2, n_runs=2, seed=1)
    return root


def _fmriprep_copy(tmp_path, simulated):
    """Symlinks to the simulated dataset; the raw BOLD files replaced by junk, so that
    reading any of them fails: a successful run has used only the fMRIPrep BOLD."""
    dst = tmp_path / "bids"
    for path in simulated.rglob("*"):
        if path.is_file():
            target = dst / path.relative_to(simulated)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    for raw in dst.glob("sub-*/func/*_bold.nii.gz"):
        _replace_bytes(raw, b"raw BOLD must not be read when preprocessed BOLD exists")
    return dst


def _add_variant(bids, old: str, new: str, pattern: str):
    """Hard links (same data, their own path) named with ``new`` instead of ``old``."""
    made = []
    for path in sorted(bids.glob(f"derivatives/fmriprep/sub-*/func/*{pattern}*")):
        target = path.with_name(path.name.replace(old, new))
        os.link(path.resolve(), target)
        made.append(target)
    return made


def _sources(out):
    return {p.name.split("_design")[0]: json.loads(p.read_text())["Sources"]
            for p in (out / "node-run").rglob("*_design.json")}


def test_fmriprep_preproc_bold_and_brain_mask_are_used(tmp_path, simulated):
    bids = _fmriprep_copy(tmp_path, simulated)
    out = tmp_path / "out"
    assert _cli(bids, out, "run", MODELS / "demo.json") == 0
    sources = _sources(out)
    assert sorted(sources) == [f"sub-{s}_task-localizer_run-{r}_space-{MNI}" for s in ("01", "02") for r in (1, 2)]
    for name, files in sources.items():
        bold = files[0]
        # BIDS URIs into the fMRIPrep dataset (named in dataset_description.json's DatasetLinks)
        assert bold == f"bids:fmriprep:{name[:6]}/func/{name}_desc-preproc_bold.nii.gz"
        confounds = name.replace(f"_space-{MNI}", "_desc-confounds_timeseries.tsv")
        assert f"bids:fmriprep:{name[:6]}/func/{confounds}" in files
        ours = nb.load(_only(out / "node-run", f"{name}_mask.nii.gz"))
        fmriprep = nb.load(next(bids.glob(f"derivatives/fmriprep/*/func/{name}_desc-brain_mask.nii.gz")))
        np.testing.assert_array_equal(np.asarray(ours.dataobj) > 0, np.asarray(fmriprep.dataobj) > 0)
        np.testing.assert_allclose(ours.affine, fmriprep.affine)
        assert json.loads(_only(out / "node-run", f"{name}_design.json").read_text())["Mask"].endswith(
            f"{name}_desc-brain_mask.nii.gz")


def test_fmriprep_space_desc_and_participant_selection(tmp_path, capsys, simulated):
    bids = _fmriprep_copy(tmp_path, simulated)
    _add_variant(bids, f"space-{MNI}", "space-T1w", "preproc_bold.nii.gz")
    t1w_masks = _add_variant(bids, f"space-{MNI}", "space-T1w", "brain_mask.nii.gz")
    # a smaller T1w mask, so the written mask shows which one was used
    for path in t1w_masks:
        img = nb.load(path)
        data = np.asarray(img.dataobj).copy()
        data[:, :, data.shape[2] // 2:] = 0
        path.unlink()
        nb.save(nb.Nifti1Image(data, img.affine, img.header), path)
    _add_variant(bids, "desc-preproc", "desc-smoothed", "space-T1w_desc-preproc_bold.nii.gz")
    model = MODELS / "demo.json"

    # two spaces and no --space: ambiguous; an unknown space: no inputs
    assert _cli(bids, tmp_path / "ambiguous", "run", model) == 19
    assert "--space" in capsys.readouterr().err
    assert _cli(bids, tmp_path / "nospace", "run", model, "--space", "MNI152NLin6Asym") == 18
    assert not (tmp_path / "ambiguous").exists() and not (tmp_path / "nospace").exists()

    out = tmp_path / "t1w"
    assert _cli(bids, out, "run", model, "--space", "T1w", "--participant-label", "02") == 0
    sources = _sources(out)
    assert sorted(sources) == [f"sub-02_task-localizer_run-{r}_space-T1w" for r in (1, 2)]
    for name, files in sources.items():
        assert files[0] == f"bids:fmriprep:sub-02/func/{name}_desc-preproc_bold.nii.gz"
        mask = _load(_only(out / "node-run", f"{name}_mask.nii.gz")) > 0
        t1w = _load(bids / "derivatives/fmriprep/sub-02/func" / f"{name}_desc-brain_mask.nii.gz") > 0
        np.testing.assert_array_equal(mask, t1w)
    assert not (out / "node-run" / "sub-01").exists()
    assert {u["Entities"]["subject"] for u in _provenance(out)["Units"]} == {"02"}

    out = tmp_path / "smoothed"
    assert _cli(bids, out, "run", model, "--space", "T1w", "--desc-label", "smoothed",
                "--participant-label", "sub-01") == 0
    sources = _sources(out)
    assert sorted(sources) == [f"sub-01_task-localizer_run-{r}_space-T1w" for r in (1, 2)]
    for name, files in sources.items():
        assert files[0] == f"bids:fmriprep:sub-01/func/{name}_desc-smoothed_bold.nii.gz"


def test_parallel_run_fits_equal_serial_ones(tmp_path):
    """--n-procs 2 fits runs in worker processes; maps, warnings and unit order are the serial run's."""
    bids = _haxby(tmp_path)
    model = _write_model(tmp_path, _haxby_model())
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    assert _cli(bids, serial, "subject", model) == 0
    assert _cli(bids, parallel, "subject", model, "--n-procs", "2") == 0
    maps = sorted(p.relative_to(serial) for p in serial.rglob("*_statmap.nii.gz"))
    assert len(maps) > 10 and maps == sorted(p.relative_to(parallel) for p in parallel.rglob("*_statmap.nii.gz"))
    for rel in maps:
        assert (serial / rel).read_bytes() == (parallel / rel).read_bytes(), rel
    assert [u["Entities"] for u in _provenance(serial)["Units"]] == [u["Entities"] for u in _provenance(parallel)["Units"]]
    assert _provenance(serial)["Warnings"] == _provenance(parallel)["Warnings"]
