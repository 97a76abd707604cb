"""End to end on real data: our derivatives against nilearn on the same inputs."""
import json

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from bids_app.cli import main
from conftest import MODELS, real_data


def _load(path):
    return np.asarray(nb.load(path).dataobj, dtype=float)


@pytest.fixture(scope="module")
def wager_one_sample(tmp_path_factory):
    data = real_data("wager2008_emoreg")
    out = tmp_path_factory.mktemp("wager") / "out"
    assert main([str(data), str(out), "dataset", "--model", str(MODELS / "one_sample_existing_maps.json")]) == 0
    return data, out


def test_wager_one_sample_equals_nilearn(wager_one_sample):
    from nilearn.glm.second_level import SecondLevelModel

    data, out = wager_one_sample
    maps = sorted(data.glob("sub-*/*_stat-effect_statmap.nii.gz"))
    assert len(maps) == 30
    node = out / "node-group"
    mask_img = nb.load(next(node.glob("*_mask.nii.gz")))
    mask = _load(mask_img.get_filename()) > 0
    assert 20000 < mask.sum() < np.prod(mask.shape)  # the MNI brain, not the whole box
    ours = _load(next(node.glob("*contrast-reappNegVsLookNeg_stat-t_statmap.nii.gz")))
    slm = SecondLevelModel(mask_img=nb.Nifti1Image(mask.astype(np.uint8), mask_img.affine))
    slm.fit([str(m) for m in maps], design_matrix=pd.DataFrame({"intercept": np.ones(len(maps))}))
    ref = slm.compute_contrast("intercept", output_type="all")
    np.testing.assert_allclose(ours[mask], _load_img(ref["stat"])[mask], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(_load(next(node.glob("*reappNegVsLookNeg_stat-z_statmap.nii.gz")))[mask],
                               _load_img(ref["z_score"])[mask], atol=1e-4)
    np.testing.assert_allclose(_load(next(node.glob("*reappNegVsLookNeg_stat-effect_statmap.nii.gz")))[mask],
                               _load_img(ref["effect_size"])[mask], rtol=1e-5, atol=1e-6)
    assert np.isnan(ours[~mask]).all()


def _load_img(img):
    return np.asarray(img.get_fdata(), dtype=float)


def test_wager_outputs_are_standard(wager_one_sample):
    data, out = wager_one_sample
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "bids-stats"
    prov = json.loads((out / "provenance.json").read_text())
    hashed = {p["Path"] for p in prov["Inputs"]}
    assert len([p for p in hashed if p.endswith("stat-effect_statmap.nii.gz")]) == 30
    assert all(len(p["SHA256"]) == 64 for p in prov["Inputs"])
    assert prov["RandomSeed"] == 0 and len(prov["Model"]["SHA256"]) == 64
    assert "numpy" in prov["Software"] and "nilearn" in prov["Software"]
    tjson = json.loads(next((out / "node-group").glob("*stat-t_statmap.json")).read_text())
    assert tjson["DegreesOfFreedom"] == 29
    assert tjson["Test"] == "t" and tjson["ConditionList"] == ["intercept"]
    names = {p.name for p in (out / "node-group").iterdir()}
    for stat in ("effect", "variance", "t", "z", "p"):
        assert f"task-emoreg_space-MNI152_contrast-reappNegVsLookNeg_stat-{stat}_statmap.nii.gz" in names
    assert (out / "report.html").stat().st_size > 1000
    assert not list(out.rglob(".tmp-*"))


def test_wager_covariate_equals_nilearn(tmp_path):
    from nilearn.glm.second_level import SecondLevelModel

    data = real_data("wager2008_emoreg")
    out = tmp_path / "out"
    assert main([str(data), str(out), "dataset", "--model", str(MODELS / "covariate_existing_maps.json")]) == 0
    node = out / "node-group"
    mask_img = nb.load(next(node.glob("*_mask.nii.gz")))
    mask = _load(mask_img.get_filename()) > 0
    participants = pd.read_csv(data / "participants.tsv", sep="\t")
    maps = [str(next((data / s).glob("*_stat-effect_statmap.nii.gz"))) for s in participants["participant_id"]]
    cov = participants["Y_Reappraisal_Success"].to_numpy()
    design = pd.DataFrame({"intercept": np.ones(len(maps)), "success": cov - cov.mean()})
    slm = SecondLevelModel(mask_img=nb.Nifti1Image(mask.astype(np.uint8), mask_img.affine)).fit(maps, design_matrix=design)
    ref = _load_img(slm.compute_contrast("success", output_type="stat"))
    ours = _load(next(node.glob("*contrast-reappNegVsLookNegSuccess_stat-t_statmap.nii.gz")))
    np.testing.assert_allclose(ours[mask], ref[mask], atol=1e-5, rtol=1e-5)
    ref_mean = _load_img(slm.compute_contrast("intercept", output_type="stat"))
    ours_mean = _load(next(node.glob("*contrast-reappNegVsLookNeg_stat-t_statmap.nii.gz")))
    np.testing.assert_allclose(ours_mean[mask], ref_mean[mask], atol=1e-5, rtol=1e-5)


def _haxby_bids(tmp_path):
    """The 12 full-resolution Haxby runs (the acq-1slice variants left out), as symlinks."""
    src = real_data("haxby2001_sub1")
    dst = tmp_path / "haxby"
    for path in src.rglob("*"):
        if path.is_file() and "acq-1slice" not in path.name:
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    return dst


def test_haxby_run_to_subject(tmp_path):
    from nilearn.glm.first_level import FirstLevelModel, make_first_level_design_matrix

    bids = _haxby_bids(tmp_path)
    out = tmp_path / "out"
    assert main([str(bids), str(out), "subject", "--model", str(MODELS / "haxby_run_subject.json")]) == 0
    run_maps = sorted((out / "node-run").rglob("*contrast-faceVsHouse_stat-effect_statmap.nii.gz"))
    assert len(run_maps) == 12
    zpath = next((out / "node-subject").rglob("*contrast-faceVsHouse_stat-z_statmap.nii.gz"))
    ours = _load(zpath)
    # nilearn on the same runs, same design settings
    runs = sorted(p for p in bids.glob("sub-1/func/*_bold.nii.gz"))
    designs = []
    for run in runs:
        events = pd.read_csv(str(run).replace("_bold.nii.gz", "_events.tsv"), sep="\t")
        conf = pd.read_csv(bids / "derivatives/motion/sub-1/func" / run.name.replace(
            "_bold.nii.gz", "_desc-confounds_timeseries.tsv"), sep="\t")
        n = nb.load(run).shape[3]
        designs.append(make_first_level_design_matrix(
            2.5 * np.arange(n), events, hrf_model="spm", drift_model="cosine", high_pass=1 / 128,
            add_regs=conf[["rot_x", "rot_y", "rot_z", "trans_x", "trans_y", "trans_z"]].to_numpy(),
            add_reg_names=["rot_x", "rot_y", "rot_z", "trans_x", "trans_y", "trans_z"]))
    mask_path = next((out / "node-run").rglob("*run-01_mask.nii.gz"))
    mask = _load(mask_path) > 0
    effects, variances, dofs = [], [], []
    for run, design in zip(runs, designs):
        flm = FirstLevelModel(noise_model="ar1", mask_img=str(mask_path)).fit(str(run), design_matrices=[design])
        w = np.array([{"face": 1.0, "house": -1.0}.get(c, 0.0) for c in design.columns])
        ref = flm.compute_contrast(w, output_type="all")
        effects.append(ref["effect_size"])
        variances.append(ref["effect_variance"])
        dofs.append(121 - design.shape[1])
        ours_run = _load(next((out / "node-run").rglob(
            f"*{run.name.split('_bold')[0].split('_')[-1]}_contrast-faceVsHouse_stat-t_statmap.nii.gz")))
        np.testing.assert_allclose(ours_run[mask], _load_img(ref["stat"])[mask], rtol=1e-4, atol=1e-4)
    # subject level: inverse-variance fixed effects over the 12 runs, as nilearn computes them
    from nilearn.glm.contrasts import compute_fixed_effects

    fx_effect, fx_var, fx_t, fx_z = compute_fixed_effects(effects, variances, mask_path, dofs=dofs,
                                                          precision_weighted=True)
    node = out / "node-subject"
    np.testing.assert_allclose(_load(next(node.rglob("*faceVsHouse_stat-effect_statmap.nii.gz")))[mask],
                               _load_img(fx_effect)[mask], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_load(next(node.rglob("*faceVsHouse_stat-t_statmap.nii.gz")))[mask],
                               _load_img(fx_t)[mask], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours[mask], _load_img(fx_z)[mask], rtol=1e-4, atol=1e-4)
    # face < house in the ventral temporal voxels: the strong negative z nilearn also gives
    assert ours[mask].min() < -4


def test_dataset_level_smoothing_equals_nilearn(tmp_path):
    from nilearn.glm.second_level import SecondLevelModel

    data = real_data("wager2008_emoreg")
    out = tmp_path / "out"
    assert main([str(data), str(out), "dataset", "--model", str(MODELS / "one_sample_existing_maps.json"),
                 "--smoothing", "8:dataset"]) == 0
    node = out / "node-group"
    mask_img = nb.load(next(node.glob("*_mask.nii.gz")))
    mask = _load(mask_img.get_filename()) > 0
    maps = sorted(str(p) for p in data.glob("sub-*/*_stat-effect_statmap.nii.gz"))
    slm = SecondLevelModel(mask_img=mask_img, smoothing_fwhm=8).fit(
        maps, design_matrix=pd.DataFrame({"intercept": np.ones(len(maps))}))
    ref = _load_img(slm.compute_contrast("intercept", output_type="stat"))
    ours = _load(next(node.glob("*reappNegVsLookNeg_stat-t_statmap.nii.gz")))
    np.testing.assert_allclose(ours[mask], ref[mask], rtol=1e-5, atol=1e-5)
    assert json.loads(next(node.glob("*_design.json")).read_text())["SmoothingFWHM"] == 8
