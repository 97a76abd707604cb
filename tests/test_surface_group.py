"""Group models on real fsaverage5 surface maps (GIFTI pairs) against nilearn's SurfaceImage GLM."""
import json

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from bids_app.cli import main
from bids_app.io.surface import read_surface
from conftest import MODELS, real_data

WAGER = "surface_fsaverage5/wager2008_emoreg"


def _surface(path):
    """Both hemispheres of a GIFTI map (named by either file) as one vector."""
    return read_surface(path)[0][0]


def _nilearn_maps(files):
    from nilearn.datasets import load_fsaverage
    from nilearn.surface import SurfaceImage

    mesh = load_fsaverage("fsaverage5")["pial"]
    images = []
    for left in files:
        right = left.with_name(left.name.replace("hemi-L", "hemi-R"))
        images.append(SurfaceImage(mesh, {"left": str(left), "right": str(right)}))
    return images


def _nilearn_vector(img):
    return np.concatenate([np.asarray(img.data.parts["left"]).ravel(), np.asarray(img.data.parts["right"]).ravel()])


@pytest.fixture(scope="module")
def wager_covariate(tmp_path_factory):
    data = real_data(WAGER)
    out = tmp_path_factory.mktemp("surface-wager") / "out"
    assert main([str(data), str(out), "dataset", "--model", str(MODELS / "covariate_existing_maps.json"),
                 "--space", "fsaverage5", "--height-control", "fdr", "--two-sided"]) == 0
    return data, out


def test_surface_one_sample_and_covariate_equal_nilearn(wager_covariate):
    from nilearn.glm.second_level import SecondLevelModel

    data, out = wager_covariate
    node = out / "node-group"
    participants = pd.read_csv(data / "participants.tsv", sep="\t")
    files = [next((data / s).glob("*hemi-L*_stat-effect_statmap.func.gii")) for s in participants["participant_id"]]
    assert len(files) == 30
    mask = _surface(next(node.glob("*hemi-L*contrast-reappNegVsLookNeg_mask.func.gii"))) > 0
    # vertices 0 or NaN in some input, or equal in all, are excluded (wager2008's volumes fill their
    # box, so its samples cover the medial wall too; pain21's do not, see below)
    inputs = np.stack([_surface(f) for f in files])
    assert np.array_equal(mask, (inputs != 0).all(axis=0) & (np.ptp(inputs, axis=0) > 0))
    assert 15000 < mask.sum()
    cov = participants["Y_Reappraisal_Success"].to_numpy()
    design = pd.DataFrame({"intercept": np.ones(len(files)), "success": cov - cov.mean()})
    slm = SecondLevelModel().fit(_nilearn_maps(files), design_matrix=design)
    for contrast, name in (("intercept", "reappNegVsLookNeg"), ("success", "reappNegVsLookNegSuccess")):
        ref = slm.compute_contrast(contrast, output_type="all")
        for ours_stat, ref_stat in (("t", "stat"), ("effect", "effect_size"), ("z", "z_score")):
            ours = _surface(next(node.glob(f"*hemi-L*contrast-{name}_stat-{ours_stat}_statmap.func.gii")))
            np.testing.assert_allclose(ours[mask], _nilearn_vector(ref[ref_stat])[mask], rtol=1e-5, atol=1e-5)
            assert np.isnan(ours[~mask]).all()


def test_surface_outputs_are_standard(wager_covariate):
    from nilearn.surface import SurfaceImage

    data, out = wager_covariate
    node = out / "node-group"
    names = {p.name for p in node.iterdir()}
    for hemi in "LR":
        for stat in ("effect", "variance", "t", "z", "p"):
            name = f"task-emoreg_hemi-{hemi}_space-fsaverage5_contrast-reappNegVsLookNeg_stat-{stat}_statmap"
            assert name + ".func.gii" in names and name + ".json" in names
    t_json = json.loads((node / "task-emoreg_hemi-R_space-fsaverage5_contrast-reappNegVsLookNeg_"
                                 "stat-t_statmap.json").read_text())
    assert t_json["DegreesOfFreedom"] == 28 and t_json["Test"] == "t"
    # loads in nibabel (one float32 array per hemisphere) and nilearn
    gii = nb.load(node / "task-emoreg_hemi-L_space-fsaverage5_contrast-reappNegVsLookNeg_stat-t_statmap.func.gii")
    assert gii.darrays[0].data.shape == (10242,) and gii.darrays[0].data.dtype == np.float32
    from nilearn.datasets import load_fsaverage

    img = SurfaceImage(load_fsaverage("fsaverage5")["inflated"], {
        h: str(node / f"task-emoreg_hemi-{h[0].upper()}_space-fsaverage5_contrast-reappNegVsLookNeg_stat-z_statmap.func.gii")
        for h in ("left", "right")})
    assert img.shape == (20484,)
    design = json.loads(next(node.glob("*reappNegVsLookNeg_design.json")).read_text())
    excluded = design["Mask"]["Excluded"]
    assert set(excluded) == {"L", "R"} and all(e["Units"] == 10242 for e in excluded.values())
    assert design["Surface"]["Kind"] == "GIFTI"
    # FDR-thresholded z and an FDR cluster table on the mesh (area in mm², Destrieux labels)
    thr = json.loads(next(node.glob("*contrast-reappNegVsLookNeg_stat-z_desc-fdr_statmap.json")).read_text())
    assert thr["Method"] == "fdr" and thr["Connectivity"] == "mesh edges"
    table = pd.read_csv(next(node.glob("*contrast-reappNegVsLookNeg_desc-fdr_clusters.tsv")), sep="\t")
    assert {"hemi", "vertex", "cluster_area_mm2", "destrieux"} <= set(table.columns)
    prov = json.loads((out / "provenance.json").read_text())
    hashed = [p["Path"] for p in prov["Inputs"]]
    assert sum("hemi-R" in p for p in hashed) == sum("hemi-L" in p for p in hashed) == 30


def test_surface_rerun_resumes(wager_covariate):
    """A rerun with the same inputs reuses the finished unit (both hemispheres' files checked) and rewrites nothing."""
    data, out = wager_covariate
    t_file = next((out / "node-group").glob("*hemi-R*contrast-reappNegVsLookNeg_stat-t_statmap.func.gii"))
    before = t_file.stat().st_mtime_ns
    assert main([str(data), str(out), "dataset", "--model", str(MODELS / "covariate_existing_maps.json"),
                 "--space", "fsaverage5", "--height-control", "fdr", "--two-sided"]) == 0
    units = json.loads((out / "provenance.json").read_text())["Units"]
    assert units and all(u.get("Reused") for u in units)
    assert t_file.stat().st_mtime_ns == before


def test_pain21_mixed_effects_on_surface(tmp_path):
    """The mixed-effects model (lower-level variances) runs on surface maps; equals the volume engine there."""
    from bids_app.estimation.mixed import MixedEffectsEstimator

    data = real_data("surface_fsaverage5/pain21")
    out = tmp_path / "out"
    model = {"Name": "pain21_mixed", "BIDSModelVersion": "1.0.0", "Input": {"task": ["pain"]},
             "Nodes": [{"Level": "Dataset", "Name": "group", "GroupBy": ["contrast"],
                        "Model": {"Type": "glm", "X": [1], "Software": {"bids-stats": {"Estimator": "mixed"}}},
                        "DummyContrasts": {"Test": "t"}}]}
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model))
    assert main([str(data), str(out), "dataset", "--model", str(path), "--space", "fsaverage5"]) == 0
    node = out / "node-group"
    t = _surface(next(node.glob("*hemi-L*contrast-pain_stat-t_statmap.func.gii")))
    mask = np.isfinite(t)
    effects = np.stack([_surface(f) for f in sorted(data.glob("sub-*/*hemi-L*stat-effect_statmap.func.gii"))])
    variances = np.stack([_surface(f) for f in sorted(data.glob("sub-*/*hemi-L*stat-variance_statmap.func.gii"))])
    assert effects.shape == (21, 20484) and 10000 < mask.sum() < 20484
    # vertices outside some study's coverage (0) are out, and said so per hemisphere
    excluded = json.loads(next(node.glob("*contrast-pain_design.json")).read_text())["Mask"]["Excluded"]
    assert sum(e["ZeroOrMissing"] for e in excluded.values()) == 20484 - mask.sum()
    fit = MixedEffectsEstimator().fit(effects[:, mask], np.ones((21, 1)), variances=variances[:, mask])
    np.testing.assert_allclose(t[mask], fit.contrast(np.array([1.0]), "t").stat, rtol=1e-5, atol=1e-5)
    assert json.loads(next(node.glob("*contrast-pain_stat-t_statmap.json")).read_text())["Estimator"].startswith("mixed")


def _renamed_space(data, root, space, n=12):
    """The first ``n`` wager2008 maps under another space label (a template nilearn does not ship)."""
    root.mkdir()
    (root / "participants.tsv").write_text((data / "participants.tsv").read_text())
    for f in sorted(data.glob("sub-*/*_statmap.func.gii"))[: 2 * n]:
        target = root / f.parent.name / f.name.replace("space-fsaverage5", f"space-{space}")
        target.parent.mkdir(exist_ok=True)
        target.symlink_to(f)
    return root


def test_surface_without_mesh_is_maxT_only_and_says_so(tmp_path):
    """A space without a packaged mesh: vertex-wise maxT only, stated; with --surface-mesh, mesh clusters."""
    data = real_data(WAGER)
    bids = _renamed_space(data, tmp_path / "bids", "custom")
    model = str(MODELS / "one_sample_existing_maps.json")
    common = ["--space", "custom", "--n-perm", "20", "--tfce", "--cluster-min-size", "5"]
    assert main([str(bids), str(tmp_path / "no-mesh"), "dataset", "--model", model, *common]) == 0
    node = tmp_path / "no-mesh" / "node-group"
    names = {p.name for p in node.iterdir()}
    assert any("desc-maxT" in n for n in names) and not any("desc-tfce" in n or "desc-cluster" in n for n in names)
    maxt = json.loads(next(node.glob("*hemi-L*desc-maxT_statmap.json")).read_text())
    assert maxt["Connectivity"].startswith("none: no mesh")
    assert not list(node.glob("*_clusters.tsv"))
    warnings = json.loads((tmp_path / "no-mesh" / "provenance.json").read_text())["Warnings"]
    assert any("maxT only" in w for w in warnings) and any("ClusterMinSize not applied" in w for w in warnings)

    # the same maps with the fsaverage5 meshes given as files, as for fsLR
    from nilearn.datasets import load_fsaverage

    meshes = []
    for hemi, part in (("L", "left"), ("R", "right")):
        mesh = load_fsaverage("fsaverage5")["pial"].parts[part]
        img = nb.gifti.GiftiImage(darrays=[
            nb.gifti.GiftiDataArray(np.asarray(mesh.coordinates, np.float32), intent="NIFTI_INTENT_POINTSET"),
            nb.gifti.GiftiDataArray(np.asarray(mesh.faces, np.int32), intent="NIFTI_INTENT_TRIANGLE")])
        meshes.append(tmp_path / f"tpl_hemi-{hemi}_pial.surf.gii")
        nb.save(img, meshes[-1])
    out = tmp_path / "mesh"
    assert main([str(bids), str(out), "dataset", "--model", model, *common,
                 "--surface-mesh", *map(str, meshes)]) == 0
    node = out / "node-group"
    tfce = json.loads(next(node.glob("*hemi-R*desc-tfce_statmap.json")).read_text())
    assert tfce["connectivity"] == "mesh edges"
    table = pd.read_csv(next(node.glob("*_clusters.tsv")), sep="\t")
    assert "cluster_area_mm2" in table and "destrieux" not in table  # labels only for fsaverage's own meshes
