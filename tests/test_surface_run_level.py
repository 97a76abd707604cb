"""Run -> subject -> dataset on surface BOLD: a GIFTI pair per run and a CIFTI-2 dtseries per run.

No surface BOLD is stored in ../shared/data, so the fixtures sample real BOLD
(Haxby 2001, subject 1, eight runs) onto fsaverage5 with nilearn's
``vol_to_surf`` (at mid-thickness) and write what fMRIPrep writes: one ``.func.gii`` per
hemisphere, or one ``.dtseries.nii`` (cortex without a midline strip standing
in for the medial wall, plus a block of subcortical voxels taken from the
volume), assembled with nibabel's ``cifti2`` axes. Pairs of runs play four
subjects so the dataset level has four maps.
"""
import json

import nibabel as nb
import numpy as np
import pandas as pd
import pytest
from nibabel import cifti2

from bids_app.cli import main
from bids_app.io.surface import read_surface
from conftest import real_data

TR = 2.5
MODEL = {
    "Name": "haxby_surface", "BIDSModelVersion": "1.0.0", "Input": {"task": ["objectviewing"]},
    "Nodes": [
        {"Level": "Run", "Name": "run", "GroupBy": ["run", "subject"],
         "Transformations": {"Transformer": "pybids-transforms-v1",
                             "Instructions": [{"Name": "Factor", "Input": ["trial_type"]}]},
         "Model": {"Type": "glm", "X": ["trial_type.*", "trans_*", 1],
                   "HRF": {"Variables": ["trial_type.*"], "Model": "spm"}},
         "Contrasts": [{"Name": "faceVsHouse", "ConditionList": ["trial_type.face", "trial_type.house"],
                        "Weights": [1, -1], "Test": "t"}]},
        {"Level": "Subject", "Name": "subject", "GroupBy": ["subject", "contrast"],
         "Model": {"Type": "meta", "X": [1]}, "DummyContrasts": {"Test": "t"}},
        {"Level": "Dataset", "Name": "group", "GroupBy": ["contrast"],
         "Model": {"Type": "glm", "X": [1]}, "DummyContrasts": {"Test": "t"}},
    ]}
#: (subject, run) -> Haxby run: four subjects of two runs each, so the dataset level has some residual dof
RUNS = {(str(sub), f"{run:02d}"): f"{2 * sub + run - 2:02d}" for sub in range(1, 5) for run in (1, 2)}


@pytest.fixture(scope="module")
def sampled():
    """Real Haxby runs sampled on fsaverage5: {source run: (left (t, 10242), right (t, 10242), volume)}."""
    from nilearn.datasets import load_fsaverage
    from nilearn.surface import vol_to_surf

    src = real_data("haxby2001_sub1")
    fs = load_fsaverage("fsaverage5")
    out = {}
    for run in sorted(set(RUNS.values())):
        img = nb.load(src / "sub-1" / "func" / f"sub-1_task-objectviewing_run-{run}_bold.nii.gz")
        # one sample per vertex, halfway between white and pial (a mid-thickness surface): fast
        hemis = [vol_to_surf(img, fs["pial"].parts[p], inner_mesh=fs["white_matter"].parts[p], kind="depth",
                             depth=[0.5]).T.astype(np.float32) for p in ("left", "right")]
        out[run] = (*hemis, img)
    return src, out


def _bids(root, src):
    """Raw part of the dataset: events, TR sidecar, participants; confounds in the derivatives."""
    (root / "derivatives" / "fmriprep").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "haxby surface", "BIDSVersion": "1.9.0"}))
    (root / "derivatives" / "fmriprep" / "dataset_description.json").write_text(json.dumps(
        {"Name": "fmriprep", "BIDSVersion": "1.9.0", "DatasetType": "derivative"}))
    (root / "participants.tsv").write_text("participant_id\n" + "".join(f"sub-{s}\n" for s in range(1, 5)))
    for (sub, run), source in RUNS.items():
        func = root / f"sub-{sub}" / "func"
        func.mkdir(parents=True, exist_ok=True)
        (func / f"sub-{sub}_task-objectviewing_run-{run}_events.tsv").write_bytes(
            (src / "sub-1" / "func" / f"sub-1_task-objectviewing_run-{source}_events.tsv").read_bytes())
        deriv = root / "derivatives" / "fmriprep" / f"sub-{sub}" / "func"
        deriv.mkdir(parents=True, exist_ok=True)
        (deriv / f"sub-{sub}_task-objectviewing_run-{run}_desc-confounds_timeseries.tsv").write_bytes(
            (src / "derivatives" / "motion" / "sub-1" / "func"
             / f"sub-1_task-objectviewing_run-{source}_desc-confounds_timeseries.tsv").read_bytes())
    return root / "derivatives" / "fmriprep"


def _dataset(sampled, tmp_path_factory, kind, write_run, *options):
    """A BIDS folder whose runs ``write_run(stem, left, right, img)`` writes from the sampled
    Haxby runs, run to the dataset level: the folder and the output folder."""
    src, data = sampled
    root = tmp_path_factory.mktemp(kind) / "bids"
    deriv = _bids(root, src)
    for (sub, run), source in RUNS.items():
        write_run(deriv / f"sub-{sub}" / "func" / f"sub-{sub}_task-objectviewing_run-{run}", *data[source])
    out = root.parent / "out"
    assert main([str(root), str(out), "dataset", "--model", _model(root), "--space", "fsaverage5", *options]) == 0
    return root, out


@pytest.fixture(scope="module")
def gifti_dataset(sampled, tmp_path_factory):
    def write_run(stem, left, right, img):
        for hemi, values in zip("LR", (left, right)):
            gifti = nb.gifti.GiftiImage(darrays=[nb.gifti.GiftiDataArray(row, intent="NIFTI_INTENT_TIME_SERIES")
                                                 for row in values])
            nb.save(gifti, f"{stem}_hemi-{hemi}_space-fsaverage5_bold.func.gii")
            (stem.parent / f"{stem.name}_hemi-{hemi}_space-fsaverage5_bold.json").write_text(
                json.dumps({"RepetitionTime": TR}))

    return _dataset(sampled, tmp_path_factory, "gifti", write_run)


def _model(root):
    path = root.parent / "model.json"
    path.write_text(json.dumps(MODEL))
    return str(path)


def _cifti_axis(img):
    """fsaverage5 cortex without a midline strip (|x| < 8 mm on the pial mesh), and 18 voxels of the volume."""
    from nilearn.datasets import load_fsaverage

    fs = load_fsaverage("fsaverage5")["pial"]
    axis = None
    for part, structure in (("left", "CortexLeft"), ("right", "CortexRight")):
        keep = np.flatnonzero(np.abs(np.asarray(fs.parts[part].coordinates)[:, 0]) >= 8)
        piece = cifti2.BrainModelAxis.from_surface(keep, 10242, structure)
        axis = piece if axis is None else axis + piece
    block = np.zeros(img.shape[:3], bool)
    block[2:4, 4:7, 4:7] = True
    return axis + cifti2.BrainModelAxis.from_mask(block, "thalamus_left", affine=img.affine), block


@pytest.fixture(scope="module")
def cifti_dataset(sampled, tmp_path_factory):
    def write_run(stem, left, right, img):
        axis, block = _cifti_axis(img)
        cortex = [np.hstack([left, right])[:, np.r_[model.vertex[model.surface_mask]] + (10242 if "RIGHT" in name else 0)]
                  for name, _, model in axis.iter_structures() if "CORTEX" in name]
        voxels = np.asarray(img.dataobj, dtype=np.float32)[block].T
        series = np.hstack([*cortex, voxels])
        cimg = cifti2.Cifti2Image(series, header=(cifti2.SeriesAxis(0, TR, series.shape[0]), axis))
        cimg.nifti_header.set_intent("ConnDenseSeries")
        stem = stem.with_name(stem.name + "_space-fsaverage5_bold")
        nb.save(cimg, f"{stem}.dtseries.nii")
        stem.with_name(stem.name + ".json").write_text(json.dumps({"RepetitionTime": TR}))

    return _dataset(sampled, tmp_path_factory, "cifti", write_run, "--n-perm", "15", "--tfce")


def _values(path):
    return read_surface(path)[0][0]


def _nilearn_face_house_t(Y, design):
    """nilearn's AR(1) GLM (mean scaling, run_glm, compute_contrast) of face > house on (scans, units) data."""
    from nilearn.glm.contrasts import compute_contrast
    from nilearn.glm.first_level import mean_scaling, run_glm

    labels, results = run_glm(mean_scaling(Y)[0], design.to_numpy(float), noise_model="ar1")
    weights = (design.columns == "trial_type.face") * 1.0 - (design.columns == "trial_type.house")
    return compute_contrast(labels, results, weights, "t").stat().ravel()


def test_gifti_run_to_dataset(gifti_dataset, sampled):
    root, out = gifti_dataset
    run_t = out / "node-run" / "sub-1" / "sub-1_task-objectviewing_run-01_hemi-L_space-fsaverage5_contrast-faceVsHouse_stat-t_statmap.func.gii"
    assert run_t.exists() and run_t.with_name(run_t.name.replace("hemi-L", "hemi-R")).exists()
    # the run fit on surface data equals nilearn's AR(1) GLM on the same array and design
    design = pd.read_csv(next((out / "node-run" / "sub-1").glob("*run-01*_design.tsv")), sep="\t")
    Y = np.hstack(sampled[1]["01"][:2]).astype(np.float64)
    mask = _values(next((out / "node-run" / "sub-1").glob("*run-01_hemi-L*_mask.func.gii"))) > 0
    # vertices whose samples fell outside the volume (NaN) are excluded, the rest kept
    finite = np.isfinite(Y).all(axis=0)
    assert np.array_equal(mask, finite & (np.ptp(np.where(finite, Y, 0), axis=0) > 0))
    assert mask.sum() > 19000
    np.testing.assert_allclose(_values(run_t)[mask], _nilearn_face_house_t(Y[:, mask], design), rtol=1e-4, atol=1e-4)
    # subject fixed effects, then the dataset, each with both hemispheres
    for node, name in (("subject", "sub-4/sub-4_task-objectviewing_hemi-R_space-fsaverage5_contrast-faceVsHouse"),
                       ("group", "task-objectviewing_hemi-L_space-fsaverage5_contrast-faceVsHouse")):
        t = out / f"node-{node}" / f"{name}_stat-t_statmap.func.gii"
        assert t.exists(), t
        values = nb.load(t).darrays[0].data
        assert values.shape == (10242,) and np.isfinite(values).sum() > 9000
    # real face > house contrast: the subject level finds strong effects of both signs
    z = _values(out / "node-subject" / "sub-1" / "sub-1_task-objectviewing_hemi-L_space-fsaverage5_contrast-faceVsHouse_stat-z_statmap.func.gii")
    assert np.nanmax(np.abs(z)) > 4
    prov = json.loads((out / "provenance.json").read_text())
    assert sum("hemi-R_space-fsaverage5_bold.func.gii" in p["Path"] for p in prov["Inputs"]) == 8
    report = (out / "report.html").read_text()
    assert "vertices/grayordinates analysed" in report and 'alt="z faceVsHouse' in report


def test_cifti_run_to_dataset(cifti_dataset, sampled):
    root, out = cifti_dataset
    run_dir = out / "node-run" / "sub-1"
    t_path = run_dir / "sub-1_task-objectviewing_run-01_space-fsaverage5_contrast-faceVsHouse_stat-t_statmap.dscalar.nii"
    img = nb.load(t_path)
    assert isinstance(img, cifti2.Cifti2Image) and img.nifti_header.get_intent()[0] == "ConnDenseScalar"
    source = nb.load(next((root / "derivatives").rglob("sub-1_*run-01*_bold.dtseries.nii")))
    assert img.header.get_axis(1) == source.header.get_axis(1)  # same grayordinates as the input
    # equals nilearn's AR(1) GLM on the same grayordinates (cortex vertices and subcortical voxels alike)
    Y = source.get_fdata(dtype=np.float64)
    mask = np.isfinite(Y).all(axis=0)
    mask[mask] = np.ptp(Y[:, mask], axis=0) > 0
    assert 15000 < mask.sum() < Y.shape[1]   # grayordinates sampled outside the volume (NaN) are left out
    design = pd.read_csv(next(run_dir.glob("*run-01*_design.tsv")), sep="\t")
    t = img.get_fdata()[0]
    np.testing.assert_allclose(t[mask], _nilearn_face_house_t(Y[:, mask], design), rtol=1e-4, atol=1e-4)
    assert np.isnan(t[~mask]).all()
    group = out / "node-group"
    for stat in ("effect", "variance", "t", "z", "p"):
        assert (group / f"task-objectviewing_space-fsaverage5_contrast-faceVsHouse_stat-{stat}_statmap.dscalar.nii").exists()
    # permutation on grayordinates: meshes for the cortex, face neighbours for the voxels
    tfce = json.loads((group / "task-objectviewing_space-fsaverage5_contrast-faceVsHouse_stat-logp_desc-tfce_statmap.json").read_text())
    assert tfce["connectivity"] == "faces (6) + mesh edges" and tfce["n_perm"] == 15
    table = pd.read_csv(next(group.glob("*faceVsHouse_desc-uncorrected_clusters.tsv")), sep="\t")
    assert list(table.columns[:4]) == ["cluster_id", "peak", "hemi", "vertex"]
    assert json.loads((group / "task-objectviewing_space-fsaverage5_contrast-faceVsHouse_stat-t_statmap.json").read_text())["Test"] == "t"
