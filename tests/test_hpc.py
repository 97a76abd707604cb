"""The SLURM scripts of docs/hpc.md, run without SLURM: array tasks, then the dataset job.

``container/slurm/bids-stats.sbatch`` is run as SLURM would run each array
task (``SLURM_ARRAY_TASK_ID``) and then the dependent dataset job, with the
host's bids-stats in place of ``apptainer run`` (``BIDS_STATS``);
``submit.sh`` runs against a stand-in ``sbatch`` that records its arguments.
"""
import json
import os
import subprocess
import sys

from conftest import REPO
from simulate_maps import simulate_maps
from test_graph_semantics import TASK, _model, _node

import pandas as pd

SLURM = REPO / "container" / "slurm"
SUBJECTS = ["01", "02", "03"]


def _data(tmp_path):
    data = tmp_path / "maps"
    participants = pd.DataFrame({"participant_id": [f"sub-{s}" for s in SUBJECTS], "age": [30, 41, 25]})
    simulate_maps(data, task=TASK, subjects=SUBJECTS, contrasts=["a"], runs=["1", "2"], participants=participants)
    model = _model(tmp_path, [_node("subject", "Subject", ["subject", "contrast"], "meta"),
                              _node("dataset", "Dataset", ["contrast"])])
    return data, model


def test_array_tasks_then_dataset_job(tmp_path):
    data, model = _data(tmp_path)
    out = tmp_path / "out"
    env = {**os.environ, "BIDS": str(data), "OUT": str(out), "MODEL": str(model), "TMPDIR": str(tmp_path),
           "BIDS_STATS": f"{sys.executable} -m bids_app", "EXTRA": "--quiet", "SLURM_CPUS_PER_TASK": "1"}
    for task in (1, 2, 3):
        subprocess.run(["bash", str(SLURM / "bids-stats.sbatch")], check=True,
                       env={**env, "SLURM_ARRAY_TASK_ID": str(task), "SLURM_JOB_ID": "7"})
    subprocess.run(["bash", str(SLURM / "bids-stats.sbatch")], check=True, env=env)

    prov = json.loads((out / "provenance.json").read_text())
    assert [c["ParticipantLabel"] for c in prov["Calls"]] == [["01"], ["02"], ["03"], None]
    assert sorted(u["Entities"]["subject"] for u in prov["Units"] if u["Node"] == "subject") == SUBJECTS
    assert [u["Reused"] for u in prov["Units"] if u["Node"] == "dataset"] == [False]
    assert not list(tmp_path.glob("bids-stats.*")), "the job's scratch folder is removed"

    bad = subprocess.run(["bash", str(SLURM / "bids-stats.sbatch")], env={**env, "SLURM_ARRAY_TASK_ID": "4"},
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no participant in row 4" in bad.stderr


def test_submit_makes_an_array_then_a_dependent_dataset_job(tmp_path):
    data, model = _data(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sbatch.log"
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho "$@" >> {log}\necho 1234\n')
    (bin_dir / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    subprocess.run(["bash", str(SLURM / "submit.sh"), str(data), str(tmp_path / "out"), str(model),
                    "img.sif", "--", "--n-perm", "100"], check=True, env=env, cwd=tmp_path)
    calls = log.read_text().splitlines()
    assert calls == [f"--parsable --export=ALL --array=1-3 {SLURM / 'bids-stats.sbatch'}",
                     f"--parsable --export=ALL --dependency=afterok:1234 {SLURM / 'bids-stats.sbatch'}"]


def test_a_shard_summarises_the_folder_holding_its_lock(tmp_path, monkeypatch):
    """Shards finishing together take turns to save their call and write provenance.json, so the
    last writer has seen every call (another process cannot take the lock meanwhile)."""
    import bids_app.graph.pipeline as pipeline
    from bids_app.cli import main
    from bids_app.graph.history import LOCK
    from bids_app.report.html import WrittenReport

    data, model = _data(tmp_path)
    out = tmp_path / "out"
    probe = "import fcntl, sys; fcntl.lockf(open(sys.argv[1], 'a'), fcntl.LOCK_EX | fcntl.LOCK_NB)"
    real, other_process = pipeline.folder_record, []

    def summarise(out_dir, record):
        other_process.append(subprocess.run([sys.executable, "-c", probe, str(out_dir / LOCK)],
                                            capture_output=True, text=True))
        return real(out_dir, record)

    monkeypatch.setattr(pipeline, "folder_record", summarise)
    monkeypatch.setattr(pipeline, "write_report", lambda *args, **kwargs: WrittenReport(out / "report.html", []))
    assert main([str(data), str(out), "subject", "--model", str(model), "--participant-label", "01"]) == 0
    assert len(other_process) == 1
    assert other_process[0].returncode != 0 and "BlockingIOError" in other_process[0].stderr
    after = subprocess.run([sys.executable, "-c", probe, str(out / LOCK)], capture_output=True, text=True)
    assert after.returncode == 0, after.stderr
