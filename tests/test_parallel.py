"""Units on a local process pool and on Dask distributed give the serial run's files, byte for byte.

Also: the backends' map contract (order, failures), the documented
dask-jobqueue SLURM recipe (its job script, rendered without SLURM),
progress output, and provenance/report of sharded runs into one folder.
"""
import io
import json
from pathlib import Path
import runpy

import numpy as np
import pytest

import bids_app.graph.pipeline as pipeline
from bids_app.cli import main
from bids_app.report.html import WrittenReport
from bids_app.graph.parallel import DaskBackend, ProcessBackend, SerialBackend, open_backend
from bids_app.graph.progress import Progress
from conftest import REPO
from simulate_maps import simulate_maps
from test_graph_semantics import SUBJECTS, TASK, _model, _node, _participants
from test_run_level_e2e import _haxby, _haxby_model, _write_model


@pytest.fixture(autouse=True)
def _no_report(request, monkeypatch):
    # the report draws every map (seconds each); only the sharded-run test reads it
    if "report" not in request.node.name:
        monkeypatch.setattr(pipeline, "write_report", lambda *args, **kwargs: WrittenReport(Path("report.html"), []))


@pytest.fixture
def maps_data(tmp_path):
    data = tmp_path / "maps"
    simulate_maps(data, task=TASK, subjects=SUBJECTS, contrasts=["a", "b"], runs=["1", "2"],
                  participants=_participants(), mean=lambda e: 0.8 if e["contrast"] == "a" else -0.3)
    model = _model(tmp_path, [_node("subject", "Subject", ["subject", "contrast"], "meta"),
                              _node("dataset", "Dataset", ["contrast"])])
    return data, model


def _cli(data, out, model, level="dataset", *extra):
    return main([str(data), str(out), level, "--model", str(model), "--quiet", *extra])


def _files(out):
    """Every derivative file under the node folders (provenance and report carry times, so not those)."""
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.glob("node-*/**/*")) if p.is_file()}


def _prov(out):
    return json.loads((out / "provenance.json").read_text())


def _square(x):
    return x * x


def _fail_on_three(x):
    if x == 3:
        raise ValueError("three")
    return x


# ---------------------------------------------------------------- backends

@pytest.mark.parametrize("make", [SerialBackend, lambda: ProcessBackend(2), lambda: DaskBackend("local:2")],
                         ids=["serial", "processes", "dask"])
def test_backends_keep_item_order_and_report_each_item(make):
    backend = make()
    try:
        seen = []
        assert backend.map(_square, range(7), lambda i, r: seen.append((i, r))) == [i * i for i in range(7)]
        assert sorted(seen) == [(i, i * i) for i in range(7)]
        assert backend.map(_square, []) == []
    finally:
        backend.close()


@pytest.mark.parametrize("make, started_before", [
    (SerialBackend, {0, 1, 2}),
    # a pool takes items in order: 0-2 have started (so finish and are reported) before 3 fails
    (lambda: ProcessBackend(2), {0, 1, 2}),
    # Dask's scheduler may start any item first: only what finished is reported
    (lambda: DaskBackend("local:2"), set())], ids=["serial", "processes", "dask"])
def test_backends_raise_the_failure_after_reporting_finished_items(make, started_before):
    backend = make()
    seen = []
    try:
        with pytest.raises(ValueError, match="three"):
            backend.map(_fail_on_three, range(6), lambda i, r: seen.append((i, r)))
    finally:
        backend.close()
    assert all(i == r != 3 for i, r in seen) and len(seen) == len(set(seen))
    assert started_before <= {i for i, _ in seen}


def _mapped_name(fn) -> str:
    """The unit or scan function a backend's ``map`` was given (map_units wraps units in a partial)."""
    return fn.__name__ if hasattr(fn, "__name__") else fn.args[0].__name__


def test_bold_scans_run_on_the_backend_before_any_unit(tmp_path, monkeypatch):
    """--n-procs 2: every BOLD series is read in full (the input scan) in one map of the process
    backend, the first of the run, so the scans finish before any unit plans or writes; each scan
    equals the serial one."""
    from bids_app.io.bold import scan_bold
    from test_bad_inputs import _bold, _bold_dataset, _bold_model, _rewrite_bold

    bids = _bold_dataset(tmp_path, subjects=("01", "02", "03"))

    def spoil(data):  # one voxel with a NaN, one constant: what a scan finds
        data[2, 2, 2, 5] = np.nan
        data[3, 3, 3, :] = 7.0

    _rewrite_bold(_bold(bids, "03"), spoil)
    calls, original = [], ProcessBackend.map

    def recording(self, fn, items, on_done=None):
        items = list(items)
        results = original(self, fn, items, on_done)
        calls.append((_mapped_name(fn), items, results))
        return results

    monkeypatch.setattr(ProcessBackend, "map", recording)
    assert main([str(bids), str(tmp_path / "out"), "run", "--model", str(_bold_model(tmp_path)),
                 "--n-procs", "2", "--quiet"]) == 0
    assert [name for name, _, _ in calls] == ["scan_input", "plan_run", "_run_unit"]
    name, paths, scans = calls[0]
    assert [Path(p).name for p in paths] == [_bold(bids, s).name for s in ("01", "02", "03")]
    for path, scan in zip(paths, scans):
        serial = scan_bold(path)
        assert scan.shape == serial.shape and scan.bad_volumes == serial.bad_volumes == []
        assert (scan.nonfinite == serial.nonfinite).all() and (scan.constant == serial.constant).all()
        assert (scan.affine == serial.affine).all()
    assert [(int(s.nonfinite.sum()), int(s.constant.sum())) for s in scans] == [(0, 0), (0, 0), (1, 1)]
    assert scans[2].nonfinite[2, 2, 2] and scans[2].constant[3, 3, 3]


def test_open_backend_choice_and_bad_local_worker_count():
    assert isinstance(open_backend(1, None), SerialBackend)
    assert isinstance(open_backend(3, None), ProcessBackend)
    assert isinstance(open_backend(1, "local:2"), DaskBackend)
    with pytest.raises(Exception, match="local:N"):
        open_backend(1, "local:zero")


# ---------------------------------------------------------------- byte identity

def test_group_levels_on_processes_and_dask_equal_serial(tmp_path, maps_data):
    """12 subject groups then 2 dataset groups (with permutations) in parallel: the serial run's bytes."""
    data, model = maps_data
    outs = {name: tmp_path / name for name in ("serial", "procs", "dask")}
    perm = ("--n-perm", "20")
    assert _cli(data, outs["serial"], model, "dataset", *perm) == 0
    assert _cli(data, outs["procs"], model, "dataset", *perm, "--n-procs", "2") == 0
    assert _cli(data, outs["dask"], model, "dataset", *perm, "--dask-scheduler", "local:2") == 0
    serial = _files(outs["serial"])
    assert sum(p.match("node-dataset/*_stat-t_statmap.nii.gz") for p in serial) == 2
    assert sum(p.match("node-dataset/*_desc-maxT_statmap.nii.gz") for p in serial) == 2
    for name in ("procs", "dask"):
        assert _files(outs[name]) == serial, name
        for key in ("Units", "Warnings"):
            strip = [{k: v for k, v in u.items() if k not in ("Finished", "Command")} if key == "Units" else u
                     for u in _prov(outs[name])[key]]
            assert strip == [{k: v for k, v in u.items() if k not in ("Finished", "Command")}
                             if key == "Units" else u for u in _prov(outs["serial"])[key]], (name, key)


def test_dask_local_cluster_run_level_on_real_data_equals_serial(tmp_path):
    """Real Haxby runs fitted by two Dask worker processes: maps byte-identical to the serial fits."""
    bids = _haxby(tmp_path)
    model = _write_model(tmp_path, _haxby_model())
    serial, dask = tmp_path / "serial", tmp_path / "dask"
    assert _cli(bids, serial, model, "subject") == 0
    assert _cli(bids, dask, model, "subject", "--dask-scheduler", "local:2") == 0
    files = _files(serial)
    assert sum(p.name.endswith("_statmap.nii.gz") for p in files) > 10
    assert _files(dask) == files
    assert _prov(dask)["Settings"]["DaskScheduler"] == "local:2"


def test_slurm_recipe_renders_a_job_script_without_slurm(tmp_path):
    """docs/examples/slurm_dask.py (the recipe docs/hpc.md shows) builds a SLURMCluster whose job
    script runs a Dask worker inside the Apptainer image, bound to the study folders."""
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is in the [dask] extra")
    recipe = runpy.run_path(str(REPO / "docs/examples/slurm_dask.py"))
    cluster = recipe["slurm_cluster"](image=str(tmp_path / "bids-stats.sif"), binds=["/data", "/scratch/out"],
                                      account="lab", walltime="02:00:00", cores=4, memory="16GB")
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH -A lab" in script and "#SBATCH -t 02:00:00" in script
    assert "#SBATCH --mem=15G" in script or "#SBATCH --mem=16G" in script
    assert f"apptainer exec --cleanenv -B /data -B /scratch/out {tmp_path / 'bids-stats.sif'}" in script
    assert "distributed.cli.dask_worker" in script and "--nthreads 1" in script and "--nworkers 4" in script


# ---------------------------------------------------------------- progress

def test_progress_lines_when_not_a_terminal_and_quiet_silences(tmp_path, maps_data, capsys):
    data, model = maps_data
    assert main([str(data), str(tmp_path / "a"), "subject", "--model", str(model)]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("bids-stats: node")]
    assert len(lines) == 12
    assert lines[0].startswith("bids-stats: node subject 1/12 subject-01_contrast-a done (")
    assert lines[-1].startswith("bids-stats: node subject 12/12 ") and "ETA 00:00" in lines[-1]
    assert main([str(data), str(tmp_path / "b"), "subject", "--model", str(model), "--quiet"]) == 0
    assert "bids-stats: node" not in capsys.readouterr().err


def test_progress_bar_on_a_terminal():
    stream = io.StringIO()
    with Progress(stream=stream, terminal=True).node("subject", 3) as tick:
        for label in ("a", "b", "c"):
            tick(label)
    text = stream.getvalue()
    assert "node subject: 3/3 units" in text and "<00:00" in text


# ---------------------------------------------------------------- sharded runs

def test_two_subject_shards_then_dataset_describe_every_unit_in_provenance_and_report(tmp_path, maps_data, monkeypatch):
    data, model = maps_data
    out = tmp_path / "out"
    assert _cli(data, out, model, "subject", "--participant-label", "01", "02", "03") == 0
    assert _cli(data, out, model, "subject", "--participant-label", "04", "05", "06") == 0
    assert _cli(data, out, model, "dataset") == 0

    prov = _prov(out)
    subject_units = [u for u in prov["Units"] if u["Node"] == "subject"]
    assert sorted((u["Entities"]["subject"], u["Entities"]["contrast"]) for u in subject_units) == \
        [(s, c) for s in SUBJECTS for c in ("a", "b")]
    assert len([u for u in prov["Units"] if u["Node"] == "dataset"]) == 2
    for u in subject_units:  # each unit keeps the command of the shard that fitted it
        shard = ["01", "02", "03"] if u["Entities"]["subject"] <= "03" else ["04", "05", "06"]
        assert u["Command"][-len(shard):] == shard and u["Reused"] and u["Finished"]
    assert [c["ParticipantLabel"] for c in prov["Calls"]] == [["01", "02", "03"], ["04", "05", "06"], None]
    assert [(c["UnitsFitted"], c["UnitsReused"]) for c in prov["Calls"]] == [(6, 0), (6, 0), (2, 12)]
    assert {p["Path"].split("/")[-1][:6] for p in prov["Inputs"]} >= {f"sub-{s}" for s in SUBJECTS}

    report = (out / "report.html").read_text()
    assert "3 calls into this folder" in report
    for s in SUBJECTS:
        assert report.count(f" subject-{s} task-sim</td><td>2</td>") == 2  # its units, contrasts a and b
    assert report.count("--participant-label 01 02 03</td>") == 1 + 6  # calls table, then its 6 units
    assert report.count("--participant-label 04 05 06</td>") == 1 + 6
