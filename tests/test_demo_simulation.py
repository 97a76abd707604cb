"""The simulated demo dataset (bids_app.demo) and the demo model (models/demo.json).

The simulation is checked against independent references: nilearn's MNI152
mask, Power's framewise displacement, and a nilearn FirstLevelModel that must
recover the planted activation where and as large as the ground truth says.
"""
import fnmatch
import json
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from bsmschema.models import BIDSStatsModel
from nilearn import datasets, image
from nilearn.glm.first_level import FirstLevelModel

from bids_app.demo import simulate as demo
from bids_app.spec import load_model, model_from_dict

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPO / "models" / "demo.json"
N_SUBJECTS, N_RUNS = 4, 2
PREPROC = "space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
BRAIN_MASK = "space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz"
MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    truth = demo.simulate_dataset(root, n_subjects=N_SUBJECTS, n_runs=N_RUNS, seed=0)
    return root, truth


def runs(root):
    """(raw func dir, fMRIPrep func dir, file stem) of every simulated run."""
    for s in range(1, N_SUBJECTS + 1):
        for r in range(1, N_RUNS + 1):
            sub = f"sub-{s:02d}"
            yield (
                root / sub / "func",
                root / "derivatives" / "fmriprep" / sub / "func",
                f"{sub}_task-{demo.TASK}_run-{r}",
            )


def read_tsv(path):
    return pd.read_csv(path, sep="\t")


def test_dataset_files_and_metadata(dataset):
    root, truth = dataset
    raw_description = json.loads((root / "dataset_description.json").read_text())
    assert raw_description["DatasetType"] == "raw"
    fmriprep = json.loads((root / "derivatives/fmriprep/dataset_description.json").read_text())
    assert fmriprep["DatasetType"] == "derivative"
    assert fmriprep["GeneratedBy"][0]["Name"] == "fMRIPrep"
    task_sidecar = json.loads((root / f"task-{demo.TASK}_bold.json").read_text())
    assert task_sidecar["RepetitionTime"] == 2.0 and task_sidecar["TaskName"] == demo.TASK
    assert json.loads((root / "code/simulation_truth.json").read_text()) == truth

    participants = read_tsv(root / "participants.tsv")
    assert list(participants.columns) == ["participant_id", "age", "group", "sex"]
    assert list(participants["participant_id"]) == [f"sub-{i:02d}" for i in range(1, N_SUBJECTS + 1)]
    assert participants["age"].between(18, 65).all()
    assert sorted(participants["group"].value_counts()) == [N_SUBJECTS // 2] * 2
    assert sorted(participants["sex"].value_counts()) == [N_SUBJECTS // 2] * 2

    for raw, deriv, stem in runs(root):
        for path in (
            raw / f"{stem}_bold.nii.gz",
            raw / f"{stem}_events.tsv",
            deriv / f"{stem}_{PREPROC}",
            deriv / f"{stem}_{PREPROC}".replace(".nii.gz", ".json"),
            deriv / f"{stem}_{BRAIN_MASK}",
            deriv / f"{stem}_desc-confounds_timeseries.tsv",
            deriv / f"{stem}_desc-confounds_timeseries.json",
        ):
            assert path.is_file(), path


def test_pybids_indexes_raw_and_derivatives(dataset):
    from bids import BIDSLayout

    root, _ = dataset
    layout = BIDSLayout(root, derivatives=root / "derivatives" / "fmriprep")
    assert layout.get_subjects() == [f"{i:02d}" for i in range(1, N_SUBJECTS + 1)]
    raw_bold = layout.get(scope="raw", suffix="bold", extension=".nii.gz")
    preproc = layout.get(
        scope="derivatives", suffix="bold", desc="preproc", extension=".nii.gz",
        space="MNI152NLin2009cAsym",
    )
    assert len(raw_bold) == len(preproc) == N_SUBJECTS * N_RUNS
    assert preproc[0].get_metadata()["RepetitionTime"] == 2.0
    assert raw_bold[0].get_metadata()["RepetitionTime"] == 2.0


def test_images_are_consistent_and_on_the_mni_brain(dataset):
    root, truth = dataset
    reference = None
    for raw, deriv, stem in runs(root):
        bold = nib.load(deriv / f"{stem}_{PREPROC}")
        mask = nib.load(deriv / f"{stem}_{BRAIN_MASK}")
        raw_bold = nib.load(raw / f"{stem}_bold.nii.gz")
        assert bold.shape == raw_bold.shape == mask.shape + (truth["n_volumes"],)
        assert np.allclose(bold.affine, mask.affine) and np.allclose(bold.affine, raw_bold.affine)
        assert bold.header.get_zooms() == (4.0, 4.0, 4.0, 2.0)
        if reference is None:
            reference = mask
        assert np.array_equal(mask.get_fdata(), reference.get_fdata())

    # The mask is nilearn's MNI152 brain mask on this 4 mm grid.
    nilearn_mask = image.resample_img(
        datasets.load_mni152_brain_mask(), target_affine=reference.affine,
        target_shape=reference.shape, interpolation="nearest",
    )
    assert np.array_equal(reference.get_fdata() > 0, nilearn_mask.get_fdata() > 0)
    assert np.allclose(reference.affine[:3, :3], 4.0 * np.eye(3))

    inside = reference.get_fdata() > 0
    _, deriv, stem = next(runs(root))
    data = nib.load(deriv / f"{stem}_{PREPROC}").get_fdata()
    assert np.all(data[~inside] == 0)
    mean = data[inside].mean(axis=1)
    assert 100 < mean.min() and mean.max() < 1200
    # T2*-weighted tissue contrast: grey matter brighter than white matter.
    gm, wm = (
        image.resample_to_img(t, reference, interpolation="linear", force_resample=True,
                              copy_header=True).get_fdata()[inside]
        for t in (datasets.load_mni152_gm_template(), datasets.load_mni152_wm_template())
    )
    assert mean[gm > 0.8].mean() > mean[wm > 0.8].mean() + 100
    # Temporal SNR of 4 mm BOLD is typically 50-150.
    tsnr = np.median(mean / data[inside].std(axis=1))
    assert 40 < tsnr < 150

    centre = nib.affines.apply_affine(reference.affine, truth["center_voxel"])
    assert np.allclose(centre, truth["center_mm"])
    assert inside[tuple(truth["center_voxel"])]


def test_events_are_valid(dataset):
    root, truth = dataset
    scan_end = truth["n_volumes"] * truth["repetition_time_s"]
    first_onsets = set()
    for raw, _, stem in runs(root):
        events = read_tsv(raw / f"{stem}_events.tsv")
        assert list(events.columns) == ["onset", "duration", "trial_type", "response_time"]
        assert events["onset"].is_monotonic_increasing and events["onset"].iloc[0] > 0
        offsets = events["onset"] + events["duration"]
        assert (offsets.iloc[:-1].to_numpy() <= events["onset"].iloc[1:].to_numpy()).all()
        # The last response must be sampled: the HRF peaks ~5 s after onset.
        assert offsets.iloc[-1] < scan_end - 10
        assert (events["duration"] > 0).all()
        counts = events["trial_type"].value_counts()
        assert set(counts.index) == set(demo.CONDITIONS) and counts.nunique() == 1
        assert events["response_time"].between(0.1, events["duration"].max()).all()
        first_onsets.add(events["onset"].iloc[0])
    assert len(first_onsets) == N_SUBJECTS * N_RUNS  # jittered: no two runs alike


def test_confounds_follow_fmriprep_conventions(dataset):
    root, truth = dataset
    raw, deriv, stem = next(runs(root))
    confounds = read_tsv(deriv / f"{stem}_desc-confounds_timeseries.tsv")
    compcor = [f"a_comp_cor_{i:02d}" for i in range(5)]
    assert {"global_signal", "framewise_displacement", *compcor, *MOTION} <= set(confounds)
    assert len(confounds) == truth["n_volumes"]
    assert confounds.drop(columns="framewise_displacement").notna().all().all()

    # Framewise displacement (Power et al. 2012): NaN first, then L1 of the
    # motion differences with rotations on a 50 mm sphere.
    fd = confounds["framewise_displacement"]
    assert np.isnan(fd.iloc[0])
    motion = confounds[MOTION].diff().abs().to_numpy()[1:]
    expected = motion[:, :3].sum(axis=1) + 50 * motion[:, 3:].sum(axis=1)
    np.testing.assert_allclose(fd.iloc[1:], expected, rtol=1e-6, atol=1e-6)
    assert 0.01 < fd.mean() < 0.5  # mm: a compliant to moderately moving subject

    bold = nib.load(deriv / f"{stem}_{PREPROC}").get_fdata()
    inside = nib.load(deriv / f"{stem}_{BRAIN_MASK}").get_fdata() > 0
    # The table is computed before int16 storage: equal up to rounding.
    np.testing.assert_allclose(confounds["global_signal"], bold[inside].mean(axis=0), atol=0.01)

    u = confounds[compcor].to_numpy()
    np.testing.assert_allclose(u.T @ u, np.eye(5), atol=1e-6)  # orthonormal components
    sidecar = json.loads((deriv / f"{stem}_desc-confounds_timeseries.json").read_text())
    explained = [sidecar[c]["VarianceExplained"] for c in compcor]
    assert explained == sorted(explained, reverse=True)
    assert all(sidecar[c]["Method"] == "aCompCor" for c in compcor)


def files_under(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_writes_identical_bytes(dataset, tmp_path):
    root, _ = dataset
    demo.simulate_dataset(tmp_path / "a", n_subjects=1, n_runs=1, seed=0)
    demo.simulate_dataset(tmp_path / "b", n_subjects=1, n_runs=1, seed=0)
    demo.simulate_dataset(tmp_path / "c", n_subjects=1, n_runs=1, seed=1)
    a, b, c = (files_under(tmp_path / name) for name in "abc")
    assert a and a == b

    run_files = [p for p in a if "sub-01" in p.parts[-1]]
    random_files = [p for p in run_files if p.name.endswith(("bold.nii.gz", ".tsv"))]
    assert len(random_files) == 4  # raw and preprocessed BOLD, events, confounds
    assert all(a[p] != c[p] for p in random_files)
    # A subject's data do not depend on how many subjects were simulated.
    assert all(a[p] == (root / p).read_bytes() for p in run_files)


# nilearn 0.14 warns about its own mask logic whenever mask_img is given.
@pytest.mark.filterwarnings("ignore:.*Generation of a mask has been requested")
def test_first_level_glm_recovers_the_planted_activation(dataset):
    """nilearn's GLM on one run finds the sphere and its true effect size."""
    root, truth = dataset
    raw, deriv, stem = next(runs(root))
    events = read_tsv(raw / f"{stem}_events.tsv")[["onset", "duration", "trial_type"]]
    confounds = read_tsv(deriv / f"{stem}_desc-confounds_timeseries.tsv")[MOTION]
    mask = nib.load(deriv / f"{stem}_{BRAIN_MASK}")
    centre = np.array(truth["center_mm"])
    radius = truth["radius_mm"]
    coords = nib.affines.apply_affine(mask.affine, np.argwhere(mask.get_fdata() > 0))
    sphere = np.linalg.norm(coords - centre, axis=1) <= radius

    def fit(smoothing_fwhm):
        glm = FirstLevelModel(
            t_r=truth["repetition_time_s"], hrf_model=truth["hrf"], mask_img=mask,
            smoothing_fwhm=smoothing_fwhm, signal_scaling=0, high_pass=0.008,
            noise_model="ar1", minimize_memory=True,
        )
        return glm.fit(deriv / f"{stem}_{PREPROC}", events=events, confounds=confounds)

    def in_mask(img):
        return img.get_fdata()[mask.get_fdata() > 0]

    # Localisation, as a user would do it: smoothed data, peak of the z map.
    z = in_mask(fit(8.0).compute_contrast("faces - houses", output_type="z_score"))
    assert np.linalg.norm(coords[np.argmax(z)] - centre) <= radius
    assert z.max() > 4.5  # far beyond the null maximum over the brain

    # Effect size, on unsmoothed data: with signal_scaling=0 the betas are in
    # percent of the voxel mean, the unit of the truth.
    maps = fit(None).compute_contrast("faces - houses", output_type="all")
    effect = in_mask(maps["effect_size"])[sphere]
    # Voxels are correlated: bound the SE of their mean by the mean single-voxel SE.
    se = np.sqrt(in_mask(maps["effect_variance"])[sphere].mean())
    subject = truth["subject_effects_percent"]["sub-01"]
    true_effect = sum(w * subject[c] for c, w in truth["contrast_weights"].items())
    assert abs(effect.mean() - true_effect) < 3 * se
    assert abs(in_mask(maps["effect_size"])[~sphere].mean()) < 3 * se  # nothing elsewhere


def strict(schema):
    """The bsmschema JSON schema with additionalProperties forbidden everywhere.

    bsmschema 0.1.1 means to forbid extra keys but misspells pydantic's option
    (``extras``), so its own validation accepts typos such as ``"Contrast"``.
    """
    schema = json.loads(json.dumps(schema))
    for definition in [schema, *schema["$defs"].values()]:
        definition["additionalProperties"] = False
    return schema


def test_demo_model_is_valid_and_matches_the_data(dataset):
    root, truth = dataset
    model = json.loads(DEMO_MODEL.read_text())
    load_model(DEMO_MODEL)  # our own validator accepts it
    BIDSStatsModel.model_validate(model)
    jsonschema.validate(model, strict(BIDSStatsModel.model_json_schema()))
    with pytest.raises(jsonschema.ValidationError):  # the strict schema has teeth
        jsonschema.validate({**model, "Extra": 1}, strict(BIDSStatsModel.model_json_schema()))

    parsed = model_from_dict(model)
    assert [(n.level, n.name) for n in parsed.topological_order()] == [
        ("Run", "run"), ("Subject", "subject"), ("Dataset", "dataset")
    ]
    run = parsed.node("run")
    assert {c.name: c.test for c in run.contrasts} == {truth["contrast"]: "t", "anyEffect": "F"}
    assert run.contrasts[1].weights.shape == (2, 2)

    # Every regressor the model asks for exists in the simulated data.
    raw, deriv, stem = next(runs(root))
    columns = {f"trial_type.{t}" for t in read_tsv(raw / f"{stem}_events.tsv")["trial_type"]}
    columns |= set(read_tsv(deriv / f"{stem}_desc-confounds_timeseries.tsv").columns)
    for x in run.model.x:
        if x != 1:
            assert fnmatch.filter(columns, x), x
    assert sorted(fnmatch.filter(columns, "trans_*") + fnmatch.filter(columns, "rot_*")) == sorted(
        MOTION
    )
