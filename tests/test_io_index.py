"""The file index (io/index.py): what it walks, and what it refuses to pass over in silence."""
import os

import pytest

from bids_app.errors import InputDataError
from bids_app.io.index import FileIndex


def test_an_unlistable_subject_folder_stops_the_index(tmp_path, monkeypatch):
    """os.walk passes over a folder it cannot list: a whole subject would be left out of the
    analysis without a word. The index names the folder instead; hidden folders (.git,
    .datalad) are not walked at all."""
    for sub in ("01", "02"):
        func = tmp_path / f"sub-{sub}" / "func"
        func.mkdir(parents=True)
        (func / f"sub-{sub}_task-x_bold.nii.gz").write_bytes(b"")
    (tmp_path / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.8.0"}')
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / ".git" / "objects" / "sub-03_task-x_bold.nii.gz").write_bytes(b"")
    assert sorted(FileIndex.build(tmp_path).select(suffix="bold")["subject"]) == ["01", "02"]

    scandir = os.scandir

    def refuse(folder):
        if os.fspath(folder).endswith(("sub-02", ".git")):
            raise PermissionError(13, "Permission denied", os.fspath(folder))
        return scandir(folder)

    monkeypatch.setattr(os, "scandir", refuse)
    with pytest.raises(InputDataError, match=r"cannot list 1 folder\(s\) under .*Permission denied: '.*sub-02'"):
        FileIndex.build(tmp_path)
