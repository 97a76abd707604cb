"""Region (ROI) models: ``Model.Options.Aggregate`` "mean" / "pca" with ``Options.Mask``.

The Haxby 25 mm runs go through the CLI with a label image built here (three
slabs along y, named in a ``_dseg.tsv``, plus one region outside the brain).
The written region series must equal nilearn's ``NiftiLabelsMasker`` (mean) or
a numpy SVD computed here (pca); the region t statistics must equal nilearn's
``run_glm`` on those series; the subject node's fixed effects must equal the
closed form over the run tables; bad models and label images must stop with
their exit code before anything is written.
"""
import json
import warnings

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from bids_app.cli import main
from bids_app.design.regions import first_component, label_values, region_timeseries
from test_run_level_e2e import _bold, _cli, _haxby, _haxby_model, _load, _only, _provenance, _write_model

SLABS = {1: "posterior", 2: "middle", 3: "anterior", 7: "outside"}
FIT = ["posterior", "middle", "anterior"]  # "outside" has no voxel in the brain mask
CONTRAST = {"trial_type.face": 1.0, "trial_type.house": -1.0}


# ---------------------------------------------------------------- helpers

def _slabs(bids, with_names=True):
    """A dseg over the whole box: y <= 3, y == 4, y >= 5 (the 25 mm brain spans y 2..6), and one
    voxel labelled 7 in a corner outside the brain. Written to a derivatives folder of ``bids``."""
    bold = nb.load(_bold(bids, "01"))
    y = np.arange(bold.shape[1])
    labels = np.broadcast_to(np.select([y <= 3, y == 4], [1, 2], 3)[None, :, None], bold.shape[:3]).astype(np.int16)
    labels[0, 9, 9] = 7
    folder = bids / "derivatives" / "rois" / "sub-1" / "anat"
    folder.mkdir(parents=True)
    path = folder / "sub-1_desc-slabs_dseg.nii.gz"
    nb.save(nb.Nifti1Image(labels, bold.affine), path)
    if with_names:
        pd.DataFrame({"index": list(SLABS), "name": list(SLABS.values())}).to_csv(
            folder / "sub-1_desc-slabs_dseg.tsv", sep="\t", index=False)
    return path


def _roi_model(method="mean", nodes=2, mask=None):
    model = _haxby_model()
    model["Nodes"] = model["Nodes"][:nodes]
    model["Nodes"][0]["Model"]["Options"].update(
        {"Aggregate": method, "Mask": mask or {"desc": ["slabs"], "suffix": ["dseg"]}})
    return model


def _table(path):
    return pd.read_csv(path, sep="\t", dtype={"region": str}, keep_default_na=False,
                       na_values=["n/a"]).set_index("region")


def _weights(design):
    return np.array([CONTRAST.get(c, 0.0) for c in design.columns])


def _masked_bold(bids, run, mask_path):
    from nilearn.masking import apply_mask

    return apply_mask(str(_bold(bids, run)), str(mask_path)).astype(np.float64)


# ---------------------------------------------------------------- mean: run -> subject

@pytest.fixture(scope="module")
def roi_mean(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("roi_mean")
    bids = _haxby(tmp)
    labels = _slabs(bids)
    out = tmp / "out"
    assert _cli(bids, out, "subject", _write_model(tmp, _roi_model("mean"))) == 0
    return bids, labels, out


def test_outputs_are_region_tables_not_maps(roi_mean):
    _, labels, out = roi_mean
    run = out / "node-run" / "sub-1"
    stem = "sub-1_task-objectviewing_run-01"
    names = {p.name for p in run.iterdir() if p.name.startswith(stem)}
    assert names == {f"{stem}_{s}" for s in (
        "design.tsv", "design.json", "mask.nii.gz", "desc-mean_timeseries.tsv", "desc-mean_timeseries.json",
        "contrast-faceVsHouse_roistats.tsv", "contrast-faceVsHouse_roistats.json",
        "contrast-faceVsScrambled_roistats.tsv", "contrast-faceVsScrambled_roistats.json")}
    assert not list(out.rglob("*_statmap.nii.gz"))
    table = pd.read_csv(run / f"{stem}_contrast-faceVsHouse_roistats.tsv", sep="\t")
    assert list(table.columns) == ["region", "effect", "variance", "t", "z", "p", "dof"]
    assert list(table["region"]) == list(SLABS.values())
    side = json.loads((run / f"{stem}_contrast-faceVsHouse_roistats.json").read_text())
    assert side["Aggregate"] == "mean" and side["Mask"] == ["bids:rois:sub-1/anat/sub-1_desc-slabs_dseg.nii.gz"]
    assert (side["Node"], side["Level"], side["Contrast"], side["Test"]) == ("run", "Run", "faceVsHouse", "t")
    assert side["ConditionList"] == list(CONTRAST) and side["Weights"] == [1.0, -1.0]
    assert side["Estimator"] == "first-level-ar1" and side["DegreesOfFreedom"] == table["dof"][0]
    # the region outside the brain: n/a rows, a warning per run, 0 voxels in the sidecar
    assert table.set_index("region").loc["outside"].isna().all()
    warned = [w for w in _provenance(out)["Warnings"] if "'outside'" in w and "no voxel" in w]
    assert len(warned) == 2
    series_meta = json.loads((run / f"{stem}_desc-mean_timeseries.json").read_text())
    assert series_meta["SamplingFrequency"] == pytest.approx(1 / 2.5)
    assert [r["Name"] for r in series_meta["Regions"]] == list(SLABS.values())
    assert series_meta["Regions"][-1]["Voxels"] == 0
    assert (out / "report.html").read_text().count('class="regions"') == 2  # the subject node's tables


def test_mean_series_equal_nilearn_labels_masker(roi_mean):
    from nilearn.maskers import NiftiLabelsMasker

    bids, labels, out = roi_mean
    worst = 0.0
    for run in ("01", "02"):
        folder = out / "node-run" / "sub-1"
        mask = _only(folder, f"*run-{run}_mask.nii.gz")
        ours = pd.read_csv(_only(folder, f"*run-{run}_desc-mean_timeseries.tsv"), sep="\t")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            masker = NiftiLabelsMasker(str(labels), mask_img=str(mask), strategy="mean")
            ref = masker.fit_transform(str(_bold(bids, run)))
        assert list(masker.region_ids_.values()) == [1, 2, 3]  # 7 lies outside the mask
        np.testing.assert_allclose(ours[FIT].to_numpy(), ref, rtol=1e-6)
        worst = max(worst, float(np.max(np.abs(ours[FIT].to_numpy() / ref - 1))))
        assert ours["outside"].isna().all() and len(ours) == 121
        # voxel counts: label voxels inside the brain mask, so the intersection really happened
        counts = {r["Name"]: r["Voxels"] for r in json.loads(
            _only(folder, f"*run-{run}_desc-mean_timeseries.json").read_text())["Regions"]}
        inside = _load(mask) > 0
        lab = _load(labels)
        assert counts == {name: int((inside & (lab == v)).sum()) for v, name in SLABS.items()}
        assert sum(counts.values()) == inside.sum() < (lab > 0).sum()
    print(f"max relative difference to NiftiLabelsMasker: {worst:.2e}")


def test_mean_region_glm_equals_nilearn_run_glm(roi_mean):
    from nilearn.glm.contrasts import compute_contrast
    from nilearn.glm.first_level import run_glm
    from nilearn.glm.first_level.first_level import mean_scaling
    from nilearn.maskers import NiftiLabelsMasker

    bids, labels, out = roi_mean
    folder = out / "node-run" / "sub-1"
    for run in ("01", "02"):
        design = pd.read_csv(_only(folder, f"*run-{run}_design.tsv"), sep="\t")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            series = NiftiLabelsMasker(str(labels), mask_img=str(_only(folder, f"*run-{run}_mask.nii.gz")),
                                       strategy="mean").fit_transform(str(_bold(bids, run)))
        Y = mean_scaling(series.astype(np.float64))[0]
        results = run_glm(Y, design.to_numpy(), noise_model="ar1")
        ref = compute_contrast(*results, _weights(design), stat_type="t")
        ours = _table(_only(folder, f"*run-{run}_contrast-faceVsHouse_roistats.tsv")).loc[FIT]
        expected_columns = {"effect": np.ravel(ref.effect), "variance": np.ravel(ref.variance), "t": ref.stat(),
                            "z": ref.z_score(), "p": ref.p_value()}
        for column, expected in expected_columns.items():
            np.testing.assert_allclose(ours[column], expected, rtol=1e-6, err_msg=f"run {run} {column}")
        assert (ours["dof"] == ref.dof).all()
        # real data, real effects: some slab tells faces from houses in each run
        assert ours["t"].abs().max() > 2


def test_subject_fixed_effects_over_regions(roi_mean):
    _, _, out = roi_mean
    runs = [_table(_only(out / "node-run", f"*run-{r}_contrast-faceVsHouse_roistats.tsv")) for r in ("01", "02")]
    effect = np.stack([t.loc[FIT, "effect"] for t in runs])
    variance = np.stack([t.loc[FIT, "variance"] for t in runs])
    precision = (1 / variance).sum(axis=0)
    expected_effect = (effect / variance).sum(axis=0) / precision
    ours = _table(_only(out / "node-subject", "*contrast-faceVsHouse_roistats.tsv"))
    np.testing.assert_allclose(ours.loc[FIT, "effect"], expected_effect, rtol=1e-10)
    np.testing.assert_allclose(ours.loc[FIT, "variance"], 1 / precision, rtol=1e-10)
    np.testing.assert_allclose(ours.loc[FIT, "t"], expected_effect * np.sqrt(precision), rtol=1e-10)
    assert (ours.loc[FIT, "dof"] == runs[0]["dof"].iloc[0] + runs[1]["dof"].iloc[0]).all()
    assert ours.loc["outside"].isna().all()
    side = json.loads(_only(out / "node-subject", "*contrast-faceVsHouse_roistats.json").read_text())
    assert side["Estimator"] == "fixed-effects" and side["Aggregate"] == "mean" and len(side["Inputs"]) == 2
    design = json.loads(_only(out / "node-subject", "*contrast-faceVsHouse_design.json").read_text())
    assert design["Regions"]["Fitted"] == 3 and design["Regions"]["NotFitted"] == ["outside"]


def test_rerun_reuses_region_units(roi_mean, tmp_path):
    bids, _, out = roi_mean
    before = _table(_only(out / "node-subject", "*contrast-faceVsHouse_roistats.tsv"))
    assert _cli(bids, out, "subject", _write_model(tmp_path, _roi_model("mean"))) == 0
    assert all(u.get("Reused") for u in _provenance(out)["Units"])
    pd.testing.assert_frame_equal(_table(_only(out / "node-subject", "*contrast-faceVsHouse_roistats.tsv")), before)


# ---------------------------------------------------------------- pca, binary masks, no names table

def test_pca_series_equal_numpy_svd(tmp_path):
    bids = _haxby(tmp_path, runs=("01",))
    labels = _slabs(bids, with_names=False)
    out = tmp_path / "out"
    assert _cli(bids, out, "run", _write_model(tmp_path, _roi_model("pca", nodes=1))) == 0
    folder = out / "node-run" / "sub-1"
    mask = _only(folder, "*_mask.nii.gz")
    ours = pd.read_csv(_only(folder, "*_desc-pca_timeseries.tsv"), sep="\t")
    assert list(ours.columns) == ["region-1", "region-2", "region-3", "region-7"]  # no _dseg.tsv
    data = _masked_bold(bids, "01", mask)
    in_mask = _load(labels)[_load(mask) > 0]
    worst = 0.0
    for value in (1, 2, 3):
        block = data[:, in_mask == value]
        regional_mean = block.mean(axis=1)
        u, s, _ = np.linalg.svd(block - block.mean(axis=0), full_matrices=False)
        pc = u[:, 0] * s[0]
        pc *= np.sign(np.corrcoef(pc, regional_mean)[0, 1]) * regional_mean.std() / pc.std()
        expected = regional_mean.mean() + pc
        np.testing.assert_allclose(ours[f"region-{value}"], expected, rtol=1e-6)
        worst = max(worst, float(np.max(np.abs(ours[f"region-{value}"] / expected - 1))))
        assert np.corrcoef(ours[f"region-{value}"], regional_mean)[0, 1] > 0
        # with several voxels the component is not the mean
        assert np.max(np.abs(ours[f"region-{value}"] - regional_mean)) > 1
    print(f"max relative difference to numpy SVD: {worst:.2e}")
    side = json.loads(_only(folder, "*_contrast-faceVsHouse_roistats.json").read_text())
    assert side["Aggregate"] == "pca"
    assert "first principal component" in json.loads(_only(folder, "*_desc-pca_timeseries.json").read_text())["Method"]


def test_first_component_conventions():
    rng = np.random.default_rng(0)
    signal = np.sin(np.linspace(0, 6, 50))
    block = 1000 + 10 * np.outer(signal, [1.0, 2.0, 0.5]) + rng.normal(0, 0.1, (50, 3))
    pc = first_component(block)
    assert pc.mean() == pytest.approx(block.mean())
    assert pc.std() == pytest.approx(block.mean(axis=1).std())
    assert np.corrcoef(pc, signal)[0, 1] > 0.99
    np.testing.assert_allclose(first_component(block[:, :1]), block[:, 0], rtol=1e-12)  # one voxel: itself
    np.testing.assert_allclose(first_component(-block + 2000), -pc + 2000, rtol=1e-12)  # sign follows the mean
    series = region_timeseries(block, (np.array([0, 2]), np.array([], dtype=int)), "mean")
    np.testing.assert_allclose(series[:, 0], block[:, [0, 2]].mean(axis=1))
    assert np.isnan(series[:, 1]).all()
    with pytest.raises(ValueError, match="non-integer"):
        label_values(np.array([0, 1, 1.5]))


def test_several_binary_masks_are_regions_named_by_label(tmp_path):
    """Two overlapping binary masks: each is one region, named by its label- entity."""
    bids = _haxby(tmp_path, runs=("01",))
    bold = nb.load(_bold(bids, "01"))
    folder = bids / "derivatives" / "rois" / "sub-1" / "anat"
    folder.mkdir(parents=True)
    y = np.arange(bold.shape[1])[None, :, None]
    boxes = {"A": np.broadcast_to(y <= 4, bold.shape[:3]), "B": np.broadcast_to(y >= 4, bold.shape[:3])}
    for name, box in boxes.items():
        nb.save(nb.Nifti1Image(box.astype(np.uint8), bold.affine), folder / f"sub-1_label-{name}_mask.nii.gz")
    out = tmp_path / "out"
    model = _roi_model("mean", nodes=1, mask={"suffix": ["mask"], "label": ["A", "B"]})
    assert _cli(bids, out, "run", _write_model(tmp_path, model)) == 0
    run = out / "node-run" / "sub-1"
    mask = _only(run, "*_mask.nii.gz")
    ours = pd.read_csv(_only(run, "*_desc-mean_timeseries.tsv"), sep="\t")
    assert list(ours.columns) == ["A", "B"]
    data, inside = _masked_bold(bids, "01", mask), _load(mask) > 0
    for name, box in boxes.items():
        np.testing.assert_allclose(ours[name], data[:, box[inside]].mean(axis=1), rtol=1e-12)
    assert list(_table(_only(run, "*contrast-faceVsHouse_roistats.tsv")).index) == ["A", "B"]
    info = json.loads(_only(run, "*_design.json").read_text())
    assert info["Aggregate"] == "mean" and info["Mask"].startswith("EPI mask")
    assert [r["Name"] for r in info["Regions"]] == ["A", "B"]


# ---------------------------------------------------------------- errors, before anything is written

def _without_mask(model):
    del model["Nodes"][0]["Model"]["Options"]["Mask"]
    return model, "Nodes[0].Model.Options.Aggregate"


def _on_subject_node(model):
    model["Nodes"][1]["Model"]["Options"] = {"Aggregate": "pca"}
    return model, "Nodes[1].Model.Options.Aggregate"


@pytest.mark.parametrize("edit", [_without_mask, _on_subject_node], ids=["without-mask", "on-subject-node"])
def test_invalid_aggregate_is_a_model_error(tmp_path, capsys, edit):
    bids = _haxby(tmp_path, runs=("01",))
    model, path = edit(_roi_model("mean"))
    out = tmp_path / "out"
    assert _cli(bids, out, "subject", _write_model(tmp_path, model)) == 3
    err = capsys.readouterr().err
    assert path in err and ("Options.Mask" in err or "Run node" in err)
    assert not out.exists()
    assert main(["validate", str(tmp_path / "model.json")]) == 3


def _no_label_image(bids):
    return {"desc": ["aparc"], "suffix": ["dseg"]}, 18, ["Options.Mask", "aparc", "run-01_bold"]


def _fractional_labels(bids):
    path = _slabs(bids)
    img = nb.load(path)
    halved = nb.Nifti1Image(np.asarray(img.dataobj) * 0.5, img.affine)
    path.unlink()
    nb.save(halved, path)
    return None, 19, [str(path), "non-integer"]


def _several_images_one_multivalued(bids):
    path = _slabs(bids)
    nb.save(nb.load(path), path.with_name("sub-1_label-V1_mask.nii.gz"))
    return {"subject": ["1"]}, 19, [str(path), "binary"]


def _bad_names_table(bids):
    path = _slabs(bids)
    path.with_name("sub-1_desc-slabs_dseg.tsv").write_text("value\tlabel\n1\tfoo\n")
    return None, 19, ["sub-1_desc-slabs_dseg.tsv", "'index' and 'name'"]


def _space_mismatch(bids):
    path = _slabs(bids)
    path.rename(path.with_name("sub-1_space-MNI152NLin2009cAsym_desc-slabs_dseg.nii.gz"))
    return None, 18, ["matched no label image"]


@pytest.mark.parametrize("corrupt", [_no_label_image, _fractional_labels, _several_images_one_multivalued,
                                     _bad_names_table, _space_mismatch],
                         ids=lambda f: f.__name__.strip("_"))
def test_bad_label_images_stop_before_writing(tmp_path, capsys, corrupt):
    bids = _haxby(tmp_path)
    mask, code, expected = corrupt(bids)
    out = tmp_path / "out"
    assert _cli(bids, out, "subject", _write_model(tmp_path, _roi_model("mean", mask=mask))) == code
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"
    assert not out.exists()


def test_voxel_options_above_region_node_stop_before_writing(tmp_path, capsys):
    bids = _haxby(tmp_path)
    _slabs(bids)
    out = tmp_path / "out"
    model = _write_model(tmp_path, _roi_model("mean"))
    assert _cli(bids, out, "subject", model, "--smoothing", "8:subject") == 20
    err = capsys.readouterr().err
    assert "node 'subject' receives region (ROI) tables of node 'run'" in err and "--smoothing" in err
    assert not out.exists()
