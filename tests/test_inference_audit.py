"""Every inference option either runs or says why not, in the sidecars, provenance and report.

Real data: wager2008 (30 maps, OLS with a covariate, t and F contrasts) and
the pain21 studies on fsaverage5 (effects + variances, for the mixed and
fixed-effects estimators). F contrasts get permutation maxF, cluster and TFCE
maps (the same maps :func:`permutation_test` gives on the same inputs);
estimators that cannot be permuted, F with ``TwoSided``, permutation options
without permutations, and options given where no node uses them are named in
``InferenceNotes`` / provenance warnings / the report, never dropped silently.
"""
import json

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from bids_app.cli import main
from bids_app.graph.inference_step import scope_notes
from bids_app.inference.permutation import permutation_test
from bids_app.spec import load_model_dict
from conftest import MODELS, real_data


def _write(tmp_path, model):
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model))
    return str(path)


def _covariate_model(**inference):
    model = json.loads((MODELS / "covariate_existing_maps.json").read_text())
    node = model["Nodes"][0]
    node["Contrasts"].append({"Name": "both", "ConditionList": [1, "Y_Reappraisal_Success"],
                              "Weights": [[1, 0], [0, 1]], "Test": "F"})
    if inference:
        node["Model"]["Software"] = {"bids-stats": {"Inference": inference}}
    return model


def _sidecar(path):
    return json.loads(path.with_name(path.name.replace(".nii.gz", ".json").replace(".func.gii", ".json")).read_text())


def _warnings(out):
    return json.loads((out / "provenance.json").read_text())["Warnings"]


@pytest.fixture(scope="module")
def wager_f(tmp_path_factory):
    data = real_data("wager2008_emoreg")
    tmp = tmp_path_factory.mktemp("audit_f")
    out = tmp / "out"
    args = [str(data), str(out), "dataset", "--model", _write(tmp, _covariate_model()), "--n-perm", "20",
            "--two-sided", "--tfce", "--cluster-threshold", "2.3", "--seed", "4"]
    assert main(args) == 0
    return data, out / "node-group"


def test_f_contrast_gets_permutation_maps_equal_to_the_engine(wager_f):
    data, node = wager_f
    for desc in ("maxF", "clusterSize", "clusterMass", "tfce"):
        assert len(list(node.glob(f"*contrast-reappNegVsLookNegBoth_stat-logp_desc-{desc}_statmap.nii.gz"))) == 1
    assert list(node.glob("*contrast-reappNegVsLookNegSuccess_stat-logp_desc-maxT_statmap.nii.gz"))
    logp_path = next(node.glob("*Both_stat-logp_desc-maxF_statmap.nii.gz"))
    info = _sidecar(logp_path)
    assert info["statistic"] == "F" and info["rank"] == 2 and info["two_sided"] is False
    assert info["nuisance"] == "none" and info["scheme"] == "permutation and sign-flip" and info["n_perm"] == 20
    # the same maps as the engine on the same inputs, design and seed
    mask = nb.load(next(node.glob("*_mask.nii.gz"))).get_fdata() > 0
    design = pd.read_csv(next(node.glob("*_design.tsv")), sep="\t")
    inputs = json.loads(next(node.glob("*_design.json")).read_text())["Inputs"]
    # inputs are named as BIDS URIs, bids:<dataset>:<path inside it>
    Y = np.stack([nb.load(data / p.split(":", 2)[2]).get_fdata()[mask] for p in inputs])
    ref = permutation_test(Y, design.to_numpy(), np.eye(2), mask, n_perm=20, seed=4, two_sided=True,
                           cluster_threshold=2.3, tfce=True)
    for desc, expected in (("maxF", ref.logp_max_t), ("clusterSize", ref.logp_max_size),
                           ("tfce", ref.logp_max_tfce)):
        ours = nb.load(next(node.glob(f"*Both_stat-logp_desc-{desc}_statmap.nii.gz"))).get_fdata()[mask]
        np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6, err_msg=desc)
    F = nb.load(next(node.glob("*Both_stat-F_statmap.nii.gz"))).get_fdata()[mask]
    np.testing.assert_allclose(F, ref.t, rtol=1e-5)
    assert ref.logp_max_t.max() == pytest.approx(np.log10(21))  # real effects: not vacuous


def test_two_sided_f_is_one_sided_and_says_so(wager_f):
    _, node = wager_f
    notes = _sidecar(next(node.glob("*Both_stat-F_statmap.nii.gz")))["InferenceNotes"]
    assert any("F has no sign" in n for n in notes)
    assert "InferenceNotes" not in _sidecar(next(node.glob("*Success_stat-t_statmap.nii.gz")))
    assert _sidecar(next(node.glob("*Both_stat-z_desc-uncorrected_statmap.nii.gz")))["TwoSided"] is False
    assert _sidecar(next(node.glob("*Success_stat-z_desc-uncorrected_statmap.nii.gz")))["TwoSided"] is True
    out = node.parent
    assert any("contrast reappNegVsLookNeg_both" in w and "F has no sign" in w for w in _warnings(out))
    assert "F has no sign" in (out / "report.html").read_text()


@pytest.mark.parametrize(("node_model", "estimator"), [
    ({"Type": "glm", "X": [1], "Software": {"bids-stats": {"Estimator": "mixed"}}}, "mixed-reml"),
    ({"Type": "meta", "X": [1]}, "fixed-effects")], ids=["mixed", "meta"])
def test_estimators_that_cannot_be_permuted_say_so(tmp_path, node_model, estimator):
    data = real_data("surface_fsaverage5/pain21")
    model = {"Name": "pain21", "BIDSModelVersion": "1.0.0", "Input": {"task": ["pain"]},
             "Nodes": [{"Level": "Dataset", "Name": "group", "GroupBy": ["contrast"], "Model": node_model,
                        "DummyContrasts": {"Test": "t"}}]}
    out = tmp_path / "out"
    assert main([str(data), str(out), "dataset", "--model", _write(tmp_path, model), "--space", "fsaverage5",
                 "--n-perm", "20"]) == 0
    node = out / "node-group"
    assert not list(node.glob("*stat-logp*"))
    assert list(node.glob("*contrast-pain_stat-z_desc-uncorrected_statmap*"))  # thresholds still made
    side = _sidecar(next(node.glob("*hemi-L*contrast-pain_stat-t_statmap.func.gii")))
    assert side["Estimator"] == estimator
    assert any("NPerm=20 not applied" in n and estimator in n for n in side["InferenceNotes"])
    assert any("NPerm=20 not applied" in w for w in _warnings(out))
    assert "NPerm=20 not applied" in (out / "report.html").read_text()


def test_permutation_options_without_permutations_are_named(tmp_path):
    data = real_data("wager2008_emoreg")
    out = tmp_path / "out"
    model = _covariate_model(ExchangeabilityBlocks="subject")
    assert main([str(data), str(out), "dataset", "--model", _write(tmp_path, model), "--tfce"]) == 0
    side = _sidecar(next((out / "node-group").glob("*Success_stat-t_statmap.nii.gz")))
    assert any(n.startswith("TFCE and ExchangeabilityBlocks not applied") for n in side["InferenceNotes"])
    assert not list((out / "node-group").glob("*stat-logp*"))


def test_unknown_exchangeability_block_column_is_an_error(tmp_path, capsys):
    data = real_data("wager2008_emoreg")
    out = tmp_path / "out"
    model = _covariate_model(NPerm=10, ExchangeabilityBlocks="site")
    assert main([str(data), str(out), "dataset", "--model", _write(tmp_path, model)]) == 19
    err = capsys.readouterr().err
    assert "ExchangeabilityBlocks 'site' is not a column" in err and "Y_Reappraisal_Success" in err
    assert not out.exists()


def test_options_no_node_uses_are_named():
    model = json.loads((MODELS / "haxby_run_subject.json").read_text())
    nodes = load_model_dict(model).topological_order()
    notes = scope_notes(nodes, {"n_perm": 100, "tfce": True, "alpha": None})
    assert len(notes) == 1 and notes[0].startswith("--n-perm, --tfce not applied")
    assert scope_notes(nodes, {"n_perm": None}) == []
    model["Nodes"][0]["Model"]["Software"] = {"bids-stats": {"Inference": {"NPerm": 10}}}
    model["Nodes"][1]["Model"]["Software"] = {"bids-stats": {"Inference": {"HeightControl": "fdr"}}}
    notes = scope_notes(load_model_dict(model).topological_order(), {"n_perm": 100})
    assert notes == ["node 'run': Model.Software['bids-stats'].Inference is not applied at the Run level "
                     "(thresholds and permutations are group-level inference)"]


def test_more_permutations_than_possible_is_reported(tmp_path):
    data = real_data("wager2008_emoreg")
    out = tmp_path / "out"
    model = str(MODELS / "one_sample_existing_maps.json")
    assert main([str(data), str(out), "dataset", "--model", model, "--participant-label", "01", "02", "03", "04",
                 "--n-perm", "20"]) == 0
    logp = next((out / "node-group").glob("*stat-logp_desc-maxT_statmap.nii.gz"))
    assert _sidecar(logp)["n_possible"] == 16
    assert any("distinct resamplings" in n for n in _sidecar(logp)["Notes"])
    assert any("distinct resamplings" in w for w in _warnings(out))
