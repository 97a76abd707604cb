"""dataset_description.json: GeneratedBy records the container when we run in one."""
import json
from pathlib import Path

from bids_app import __version__
from bids_app.derivatives.dataset import write_dataset_description


def _generated(tmp_path):
    write_dataset_description(tmp_path, tmp_path / "bids", [tmp_path / "fmriprep"])
    return json.loads((tmp_path / "dataset_description.json").read_text())


def test_outside_a_container_generated_by_has_no_container(tmp_path, monkeypatch):
    for var in ("BIDS_STATS_CONTAINER", "APPTAINER_CONTAINER", "SINGULARITY_CONTAINER"):
        monkeypatch.delenv(var, raising=False)
    desc = _generated(tmp_path)
    generated = desc["GeneratedBy"][0]
    assert generated["Name"] == "bids-stats" and generated["Version"] == __version__
    assert desc["DatasetType"] == "derivative"
    assert [s["URL"] for s in desc["SourceDatasets"]] == [(tmp_path / "bids").as_uri(),
                                                         (tmp_path / "fmriprep").as_uri()]
    if not Path("/.dockerenv").exists():  # CI may itself run in Docker
        assert "Container" not in generated


def test_image_variable_is_recorded_as_docker_container(tmp_path, monkeypatch):
    # the Dockerfile sets BIDS_STATS_CONTAINER=bids-stats:<version>
    monkeypatch.delenv("APPTAINER_CONTAINER", raising=False)
    monkeypatch.delenv("SINGULARITY_CONTAINER", raising=False)
    monkeypatch.setenv("BIDS_STATS_CONTAINER", "bids-stats:0.1.0")
    assert _generated(tmp_path)["GeneratedBy"][0]["Container"] == {"Type": "docker", "Tag": "bids-stats:0.1.0"}


def test_apptainer_wins_over_the_image_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("BIDS_STATS_CONTAINER", "bids-stats:0.1.0")
    monkeypatch.setenv("APPTAINER_CONTAINER", "/images/bids-stats.sif")
    monkeypatch.setenv("APPTAINER_NAME", "bids-stats.sif")
    assert _generated(tmp_path)["GeneratedBy"][0]["Container"] == {"Type": "apptainer", "Tag": "bids-stats.sif"}


def test_atomic_writes_have_the_umask_mode_and_leave_no_temporary_file(tmp_path):
    import os

    import numpy as np
    import pandas as pd

    from bids_app.derivatives.atomic import write_json, write_nifti, write_tsv

    umask = os.umask(0)
    os.umask(umask)
    files = [write_json(tmp_path / "a.json", {"x": 1}),
             write_tsv(tmp_path / "b.tsv", pd.DataFrame({"x": [1.0, np.nan]})),
             write_nifti(tmp_path / "c.nii.gz", np.zeros((2, 2, 2)), np.eye(4))]
    for path in files:
        assert (path.stat().st_mode & 0o777) == 0o666 & ~umask, path
    assert (tmp_path / "b.tsv").read_text() == "x\n1.0\nn/a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.tsv", "c.nii.gz"]
