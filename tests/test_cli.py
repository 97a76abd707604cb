"""Command-line behaviour: exit codes, messages, and no partial output on bad input."""
import json
import shutil

import nibabel as nb
import numpy as np
import pytest

from bids_app import __version__
from bids_app.cli import main
from conftest import MODELS, real_data
from simulate_maps import simulate_maps


def _wager_copy(tmp_path, n=6):
    """A small copy of real wager2008 maps (first n subjects) that tests may break."""
    src = real_data("wager2008_emoreg")
    dst = tmp_path / "wager"
    dst.mkdir()
    for name in ("dataset_description.json",):
        shutil.copy(src / name, dst / name)
    lines = (src / "participants.tsv").read_text().splitlines()
    (dst / "participants.tsv").write_text("\n".join(lines[: n + 1]) + "\n")
    for sub in sorted(p.name for p in src.glob("sub-*"))[:n]:
        shutil.copytree(src / sub, dst / sub)
    return dst


def _emoreg_maps(tmp_path, n=6):
    """n simulated subjects' maps laid out as the wager2008 set (task emoreg): input that
    the tests below may break, needing no real data."""
    import pandas as pd

    subjects = [f"{i:02d}" for i in range(1, n + 1)]
    simulate_maps(tmp_path / "maps", task="emoreg", subjects=subjects, contrasts=["reappNegVsLookNeg"],
                  participants=pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects]}))
    return tmp_path / "maps"


def _refused(tmp_path, capsys, code, phrase, *options, model=MODELS / "one_sample_existing_maps.json", data=None):
    """A dataset-level run exits with ``code``, says ``phrase`` on stderr and leaves no output folder."""
    out = tmp_path / "out"
    data = _emoreg_maps(tmp_path) if data is None else data
    assert main([str(data), str(out), "dataset", "--model", str(model), *options]) == code
    assert phrase in capsys.readouterr().err
    assert not out.exists()


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_missing_bids_dir(tmp_path, capsys):
    out = tmp_path / "out"
    code = main([str(tmp_path / "nope"), str(out), "dataset", "--model", str(MODELS / "one_sample_existing_maps.json")])
    assert code == 16
    assert "not found" in capsys.readouterr().err
    assert not out.exists()


def test_unknown_level(tmp_path, capsys):
    code = main([str(tmp_path), str(tmp_path / "out"), "group", "--model", str(MODELS / "one_sample_existing_maps.json")])
    assert code == 17
    assert "unknown analysis level" in capsys.readouterr().err


def test_missing_model_argument_means_the_default_model(tmp_path, capsys):
    # --model is optional (a default model is built from the dataset); an empty dataset stops first
    assert main([str(tmp_path), str(tmp_path / "out"), "dataset"]) == 16
    assert "the following arguments are required" not in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_noise_model_argument(tmp_path, capsys):
    model = str(MODELS / "one_sample_existing_maps.json")
    assert main([str(tmp_path), str(tmp_path / "out"), "dataset", "--model", model, "--run-noise-model", "ar0"]) == 2
    assert "'ols', 'ar1', 'ar2'" in capsys.readouterr().err
    from bids_app.cli import app_parser

    args = app_parser().parse_args([str(tmp_path), str(tmp_path / "out"), "run", "--model", model,
                                    "--run-noise-model", "AR3"])
    assert args.noise_model == "ar3"


def test_model_not_json(tmp_path, capsys):
    bad = tmp_path / "model.json"
    bad.write_text("{ not json")
    _refused(tmp_path, capsys, 3, "line 1", model=bad)


def test_filters_select_nothing(tmp_path, capsys):
    model = json.loads((MODELS / "one_sample_existing_maps.json").read_text())
    model["Input"] = {"task": ["doesnotexist"]}
    path = tmp_path / "m.json"
    path.write_text(json.dumps(model))
    _refused(tmp_path, capsys, 18, "doesnotexist", model=path)


def test_unknown_participant(tmp_path, capsys):
    _refused(tmp_path, capsys, 18, "sub-99", "--participant-label", "sub-99")


def test_unreadable_nifti(tmp_path, capsys):
    data = _emoreg_maps(tmp_path)
    broken = next(data.glob("sub-02/*.nii.gz"))
    broken.write_bytes(b"this is not a NIfTI file")
    _refused(tmp_path, capsys, 19, broken.name, data=data)


def test_validate_command(capsys):
    assert main(["validate", str(MODELS / "haxby_run_subject.json")]) == 0
    assert "valid" in capsys.readouterr().out


def test_validate_reports_json_path(tmp_path, capsys):
    model = json.loads((MODELS / "haxby_run_subject.json").read_text())
    model["Nodes"][0]["Contrasts"][0]["Weights"] = [1, -1, 0]
    path = tmp_path / "m.json"
    path.write_text(json.dumps(model))
    assert main(["validate", str(path)]) == 3
    assert "Nodes[0].Contrasts[0].Weights" in capsys.readouterr().err


def test_participant_label_and_rerun_reuses(tmp_path):
    data = _wager_copy(tmp_path)
    out = tmp_path / "out"
    args = [str(data), str(out), "dataset", "--model", str(MODELS / "one_sample_existing_maps.json")]
    assert main(args) == 0
    tmap = next(out.rglob("*_stat-t_statmap.nii.gz"))
    first = tmap.read_bytes()
    mtime = tmap.stat().st_mtime_ns
    assert main(args) == 0
    assert tmap.stat().st_mtime_ns == mtime  # reused, not rewritten
    prov = json.loads((out / "provenance.json").read_text())
    assert all(u.get("Reused") for u in prov["Units"])
    # a fresh run with the same inputs and seed gives byte-identical maps
    out2 = tmp_path / "out2"
    assert main([str(data), str(out2), "dataset", "--model", str(MODELS / "one_sample_existing_maps.json")]) == 0
    assert (out2 / tmap.relative_to(out)).read_bytes() == first
    # a participant subset gives a different group (5 of 6 inputs)
    out3 = tmp_path / "out3"
    labels = ["01", "sub-02", "03", "04", "05"]
    assert main([str(data), str(out3), "dataset", "--participant-label", *labels,
                 "--model", str(MODELS / "one_sample_existing_maps.json")]) == 0
    prov3 = json.loads((out3 / "provenance.json").read_text())
    assert prov3["Units"][0]["NInputs"] == 5
    t3 = np.asarray(nb.load(out3 / tmap.relative_to(out)).dataobj)
    assert not np.allclose(np.nan_to_num(t3), np.nan_to_num(np.asarray(nb.load(tmap).dataobj)))


def test_relative_paths_give_the_same_outputs_and_a_complete_report(tmp_path, monkeypatch):
    """BIDS and output folders given relative to the working directory (a common shell habit)."""
    _wager_copy(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["wager", "out", "dataset", "--model", str(MODELS / "one_sample_existing_maps.json")]) == 0
    out = tmp_path / "out"
    prov = json.loads((out / "provenance.json").read_text())
    unit = prov["Units"][0]
    assert not unit["Design"].startswith("/") and (out / unit["Design"]).exists()
    assert all(p["Path"].startswith(str(tmp_path / "wager")) for p in prov["Inputs"])
    report = (out / "report.html").read_text()
    assert "design matrix file not found" not in report and "Design matrices (1 distinct" in report


@pytest.mark.parametrize("old, new, value, dest", [
    ("--estimator", "--group-estimator", "mixed", "estimator"),
    ("--noise-model", "--run-noise-model", "ols", "noise_model"),
    ("--cluster-threshold", "--cluster-forming-z", "2.5", "cluster_threshold"),
])
def test_old_option_names_are_deprecated_aliases(capsys, old, new, value, dest):
    from bids_app.cli import app_parser

    base = ["bids", "out", "dataset", "--model", "m.json"]
    current = app_parser().parse_args([*base, new, value])
    assert capsys.readouterr().err == ""
    aliased = app_parser().parse_args([*base, old, value])
    assert getattr(aliased, dest) == getattr(current, dest) == (float(value) if dest == "cluster_threshold" else value)
    assert f"{old} is deprecated" in capsys.readouterr().err and new in app_parser().format_help()
    defaults = app_parser().parse_args(base)
    assert (defaults.estimator, defaults.noise_model, defaults.cluster_threshold) == ("ols", "ar1", None)
