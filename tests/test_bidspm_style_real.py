"""A bidspm-style model (``trial_type.<value>`` in X, no Factor step) on real data equals nilearn.

bidspm and the model zoo name conditions ``trial_type.face`` without a
``Factor`` transformation. On the real studyforrest run and two real Haxby
runs, the model runs as written, and every map equals nilearn's
FirstLevelModel fitted with nilearn's own design matrix built from the same
events (SPM HRF, cosine drift at 1/128 Hz, AR(1)) on our mask.
"""
import json
import warnings

import nibabel as nb
import numpy as np
import pandas as pd

from bids_app.cli import main
from conftest import real_data

CONDITIONS = {"studyforrest": ("face", "body", "house", "object", "scene", "scramble"),
              "haxby": ("face", "house", "cat", "bottle", "chair", "scissors", "shoe", "scrambledpix")}


def _model(task, conditions, **inp):
    names = [f"trial_type.{c}" for c in conditions]
    pair = ["trial_type.face", "trial_type.house"]
    return {
        "Name": f"bidspm_style_{task}", "BIDSModelVersion": "1.0.0", "Input": {"task": [task], **inp},
        "Nodes": [{
            "Level": "Run", "Name": "run_level", "GroupBy": ["run", "subject"],
            "Model": {"Type": "glm", "X": [*names, 1], "HRF": {"Variables": names, "Model": "spm"},
                      "Options": {"HighPassFilterCutoffHz": 1 / 128}},
            "DummyContrasts": {"Test": "t", "Contrasts": pair},
            "Contrasts": [{"Name": "face_gt_house", "ConditionList": pair, "Weights": [1, -1],
                           "Test": "t"}]}]}


def _load(path):
    return np.asarray(nb.load(path).dataobj, dtype=np.float64)


def _nilearn_maps(bold_path, events_path, mask_path, tr, conditions):
    from nilearn.glm.first_level import FirstLevelModel, make_first_level_design_matrix

    bold = nb.load(bold_path)  # as it is: nilearn and we scale integer BOLD in float32
    events = pd.read_csv(events_path, sep="\t")[["onset", "duration", "trial_type"]]
    design = make_first_level_design_matrix(tr * np.arange(bold.shape[3]), events, hrf_model="spm",
                                            drift_model="cosine", high_pass=1 / 128)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flm = FirstLevelModel(noise_model="ar1", mask_img=str(mask_path), minimize_memory=True)
        flm.fit(str(bold_path), design_matrices=[design])
    weights = {"faceGtHouse": {"face": 1.0, "house": -1.0}, "trialTypeFace": {"face": 1.0},
               "trialTypeHouse": {"house": 1.0}}
    return {name: flm.compute_contrast(np.array([w.get(c, 0.0) for c in design.columns]), output_type="all")
            for name, w in weights.items()}


def _check(folder, stem, reference, mask):
    for name, ref in reference.items():
        for stat, key in (("effect", "effect_size"), ("variance", "effect_variance"), ("t", "stat"),
                          ("z", "z_score")):
            ours = _load(folder / f"{stem}_contrast-{name}_stat-{stat}_statmap.nii.gz")
            expected = ref[key].get_fdata()[mask]
            np.testing.assert_allclose(ours[mask], expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max(),
                                       err_msg=f"{stem} {name} {stat}")


def _run(tmp_path, data, model):
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model))
    out = tmp_path / "out"
    assert main([str(data), str(out), "run", "--model", str(path)]) == 0
    return out / "node-runLevel"  # node names become camelCase labels


def test_studyforrest_bidspm_style_equals_nilearn(tmp_path):
    data = real_data("studyforrest_sub02")
    folder = _run(tmp_path, data, _model("oneback", CONDITIONS["studyforrest"])) / "sub-02"
    stem = "sub-02_task-oneback_run-1"
    sidecar = json.loads((folder / f"{stem}_design.json").read_text())
    assert [r["Name"] for r in sidecar["Resolved"]][:2] == ["trial_type.face", "trial_type.body"]
    assert all(r["Column"] == "trial_type" for r in sidecar["Resolved"])
    mask_path = folder / f"{stem}_mask.nii.gz"
    mask = _load(mask_path) > 0
    reference = _nilearn_maps(data / "sub-02/func/sub-02_task-oneback_run-1_bold.nii.gz",
                              data / "sub-02/func/sub-02_task-oneback_run-1_events.tsv", mask_path, 2.0,
                              CONDITIONS["studyforrest"])
    _check(folder, stem, reference, mask)
    assert reference["faceGtHouse"]["z_score"].get_fdata()[mask].max() > 4  # a real face response


def test_haxby_bidspm_style_equals_nilearn(tmp_path):
    data = real_data("haxby2001_sub1")
    # acquisition "" selects the files without an acq- entity (the full 25 mm runs, not acq-1slice)
    model = _model("objectviewing", CONDITIONS["haxby"], run=[1, 2], acquisition=[""])
    folder = _run(tmp_path, data, model) / "sub-1"
    tr = json.loads((data / "task-objectviewing_bold.json").read_text())["RepetitionTime"]
    for run in ("01", "02"):
        stem = f"sub-1_task-objectviewing_run-{run}"
        mask_path = folder / f"{stem}_mask.nii.gz"
        mask = _load(mask_path) > 0
        assert mask.sum() > 10  # 25 mm voxels: a brain of a few dozen
        reference = _nilearn_maps(data / f"sub-1/func/{stem}_bold.nii.gz", data / f"sub-1/func/{stem}_events.tsv",
                                  mask_path, tr, CONDITIONS["haxby"])
        _check(folder, stem, reference, mask)
    assert not list(folder.glob("*acq-1slice*"))
