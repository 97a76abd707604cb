"""The bids-stats command end to end against the hand-written nilearn script a user would run.

Every row runs each side as a fresh process (``python -m bids_app ...`` and
``python script.py``), one after the other, and prints the load average,
wall time, peak resident memory of the process tree (workers included),
their ratio and, where both write the same map, the largest difference. ``--repeat R``
alternates the two sides R times and prints the median (the test machine is
shared: single timings vary by 2x). Our package's bytecode is compiled first,
as ``pip install`` does for nilearn and every other installed package.

Rows (``--rows`` selects):

* ``validate``, ``version``: ``bids-stats validate MODEL`` and
  ``bids-stats --version`` (targets 0.5 s and 0.3 s; nothing to compare).
* ``maps16``: dataset-level one-sample t over 16 real maps (wager2008,
  resampled to nilearn's 3 mm MNI grid), FDR 0.05, default outputs and
  report, against SecondLevelModel + threshold_stats_img (FDR) +
  get_clusters_table + a glass-brain PNG.
* ``perm16``: the same with ``--n-perm 1000 --n-procs N`` (``--n-procs``
  option, default 2: all cores; maxT and cluster size/mass at z 3.1,
  one-sided, the defaults) against ``non_parametric_inference`` (n_perm
  1000, threshold 0.001: the same three corrections; ``n_jobs`` from
  ``--nilearn-jobs``, default 1). The cost of
  the permutations is our time minus the ``maps16``-like run without FDR.
* ``perm2cov``: the same 16 maps with two real covariates (wager2008's
  X_RVLPFC and Y_Reappraisal_Success), contrast on X_RVLPFC (Freedman-Lane),
  ``--n-perm 1000 --n-procs N`` against ``non_parametric_inference``
  (target: at least 20x).
* ``haxby``: Haxby subject 1, 12 real runs -> subject fixed effects, against
  FirstLevelModel per run + compute_fixed_effects, and against FitLins with
  the same model when ``--fitlins`` (or ``fitlins`` on PATH) is given: FitLins
  0.11 pins pybids 0.15, nilearn 0.9, numpy < 2 and pandas < 2.2, so it lives
  in its own venv (``pip install fitlins 'matplotlib<3.9' 'numpy<2'
  'pandas<2.2'``); it reads the runs from an fMRIPrep-style copy of links.
  ``haxby-procs``: the same with our ``--n-procs N`` (FitLins ``--n-cpus N``).
* ``fullsize``: simulated BOLD at real size (nilearn's 2 mm MNI grid, 200
  volumes, TR 2 s, 10 subjects x 2 runs, real ds000003 events, int16 like a
  scanner) through run -> subject -> dataset with ``--n-procs 2``, against
  FirstLevelModel per run + compute_fixed_effects + SecondLevelModel +
  threshold_stats_img + get_clusters_table + glass brain. The dataset
  (~3 GB) is written once under ``--work``.

Usage::

    python benchmarks/bench_cli.py                         # every row (fullsize: ~20 min)
    python benchmarks/bench_cli.py --rows validate version maps16 perm16 --repeat 3
"""
from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PY = sys.executable
APP = [PY, "-m", "bids_app"]


# --- measuring ------------------------------------------------------------------------------

def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            pass
    return total


def run(cmd, *, cwd=None, env=None) -> tuple[float, int, float]:
    """Wall seconds, peak tree RSS (bytes) and CPU seconds (user + system, workers included) of one command.

    On a loaded machine wall time mostly measures the load; CPU time is the
    better estimate of the wall time on an idle machine for serial work.
    """
    peak = [0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    done = threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            done.wait(0.05)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    output = proc.communicate()[0]
    seconds = time.perf_counter() - start
    done.set()
    watcher.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{output[-3000:]}")
    return seconds, peak[0], cpu


def side_by_side(name, ours, theirs, repeat, *, prepare=None, diff=None):
    """Alternate both commands ``repeat`` times; print medians and the ratio."""
    times = {"ours": [], "nilearn": []}
    mems = {"ours": [], "nilearn": []}
    cpus = {"ours": [], "nilearn": []}
    load_before = os.getloadavg()[0]
    for _ in range(repeat):
        for side, cmd in (("ours", ours), ("nilearn", theirs)):
            if prepare:
                prepare(side)
            t, m, c = run(cmd)
            print(f"  ({name}: {side} wall {t:.2f} s, CPU {c:.2f} s, peak {m / 2**30:.2f} GB, "
                  f"load {os.getloadavg()[0]:.1f})", flush=True)
            times[side].append(t)
            mems[side].append(m)
            cpus[side].append(c)
    t_ours, t_nl = statistics.median(times["ours"]), statistics.median(times["nilearn"])
    c_ours, c_nl = statistics.median(cpus["ours"]), statistics.median(cpus["nilearn"])
    line = (f"{name:<34} load {load_before:.1f}->{os.getloadavg()[0]:.1f} | wall: ours {t_ours:7.2f} s, nilearn {t_nl:7.2f} s, nilearn/ours {t_nl / t_ours:5.2f}x | "
            f"CPU: ours {c_ours:6.2f} s, nilearn {c_nl:6.2f} s, {c_nl / c_ours:5.2f}x | peak RSS: ours "
            f"{max(mems['ours']) / 2**30:5.2f} GB, nilearn {max(mems['nilearn']) / 2**30:5.2f} GB")
    if diff:
        line += f" | {diff()}"
    print(line + f"   (wall runs: ours {_fmt(times['ours'])}, nilearn {_fmt(times['nilearn'])})", flush=True)
    return t_ours, t_nl, c_ours, c_nl


def alone(name, cmd, repeat, target=None):
    measured = [run(cmd) for _ in range(repeat)]
    t = statistics.median(m[0] for m in measured)
    cpu = statistics.median(m[2] for m in measured)
    verdict = "" if target is None else (f"  target < {target} s: wall {'holds' if t < target else 'MISSED'}, "
                                         f"CPU {'holds' if cpu < target else 'MISSED'}")
    print(f"{name:<34} load {os.getloadavg()[0]:.1f} | wall {t:6.3f} s, CPU {cpu:6.3f} s "
          f"(wall runs {_fmt(m[0] for m in measured)}){verdict}", flush=True)
    return t


def _fmt(values):
    return " ".join(f"{v:.2f}" for v in values)


def _fresh(path: Path):
    shutil.rmtree(path, ignore_errors=True)


def _max_diff(a, b):
    import nibabel as nib
    import numpy as np

    x, y = nib.load(a).get_fdata(), nib.load(b).get_fdata()
    both = np.isfinite(x) & np.isfinite(y) & (x != 0) & (y != 0)
    return float(np.abs(x[both] - y[both]).max()), int(both.sum())


def _write_script(work: Path, name: str, body: str) -> Path:
    path = work / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


# --- data ---------------------------------------------------------------------------------------

def maps16(work: Path) -> Path:
    """16 wager2008 maps resampled (continuous) to nilearn's 3 mm MNI grid, as BIDS derivatives."""
    out = work / "maps16"
    if (out / "participants.tsv").exists():
        return out
    import warnings

    import nibabel as nib
    import numpy as np
    import pandas as pd
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_to_img

    src = DATA / "wager2008_emoreg"
    if not src.exists():
        raise SystemExit(f"{src} not found (see ../shared/data/README.md)")
    target = load_mni152_brain_mask(resolution=3)
    out.mkdir(parents=True)
    shutil.copy(src / "dataset_description.json", out)
    pd.read_csv(src / "participants.tsv", sep="\t").iloc[:16].to_csv(out / "participants.tsv", sep="\t", index=False)
    for f in sorted(src.glob("sub-*/*_stat-effect_statmap.nii.gz"))[:16]:
        img = nib.load(f)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = resample_to_img(nib.Nifti1Image(np.nan_to_num(img.get_fdata()), img.affine), target,
                                interpolation="continuous", force_resample=True, copy_header=True)
        (out / f.parent.name).mkdir()
        nib.save(nib.Nifti1Image(r.get_fdata().astype(np.float32), r.affine), out / f.parent.name / f.name)
    return out


MODEL_2COV = {
    "Name": "two_covariates", "BIDSModelVersion": "1.0.0", "Input": {"task": ["emoreg"]},
    "Nodes": [{"Level": "Dataset", "Name": "group", "GroupBy": ["contrast"],
               "Model": {"Type": "glm", "X": [1, "X_RVLPFC", "Y_Reappraisal_Success"]},
               "Contrasts": [{"Name": "rvlpfc", "ConditionList": ["X_RVLPFC"], "Weights": [1], "Test": "t"}]}]}

NILEARN_GROUP = """
import sys, time
from pathlib import Path
import numpy as np, pandas as pd, nibabel as nib
from nilearn.datasets import load_mni152_brain_mask
from nilearn.image import resample_to_img
from nilearn.glm.second_level import SecondLevelModel, non_parametric_inference
from nilearn.glm import threshold_stats_img
from nilearn.reporting import get_clusters_table
from nilearn.plotting import plot_glass_brain

data, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
out.mkdir(parents=True, exist_ok=True)
maps = sorted(str(p) for p in data.glob("sub-*/*_stat-effect_statmap.nii.gz"))
participants = pd.read_csv(data / "participants.tsv", sep="\\t")
design = pd.DataFrame({"intercept": np.ones(len(maps))})
if mode == "perm2cov":
    for col in ("X_RVLPFC", "Y_Reappraisal_Success"):
        design[col] = participants[col].to_numpy()
mask = resample_to_img(load_mni152_brain_mask(resolution=2), maps[0], interpolation="nearest",
                       force_resample=True, copy_header=True)
if mode == "fdr":
    model = SecondLevelModel(mask_img=mask).fit(maps, design_matrix=design)
    res = model.compute_contrast("intercept", output_type="all")
    for key in ("z_score", "stat", "effect_size", "effect_variance", "p_value"):
        res[key].to_filename(out / f"{key}.nii.gz")
    thr_map, thr = threshold_stats_img(res["z_score"], mask_img=mask, alpha=0.05, height_control="fdr")
    thr_map.to_filename(out / "z_fdr.nii.gz")
    get_clusters_table(thr_map, stat_threshold=thr).to_csv(out / "clusters.tsv", sep="\\t", index=False)
    plot_glass_brain(thr_map, threshold=thr, plot_abs=False, colorbar=True).savefig(out / "glass.png")
else:
    contrast = "intercept" if mode == "perm16" else "X_RVLPFC"
    jobs = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    res = non_parametric_inference(maps, design_matrix=design, second_level_contrast=contrast, mask=mask,
                                   n_perm=1000, two_sided_test=False, threshold=0.001, n_jobs=jobs,
                                   random_state=0)
    for key, img in res.items():
        img.to_filename(out / f"{key}.nii.gz")
    plot_glass_brain(res["logp_max_t"], threshold=1.3, colorbar=True).savefig(out / "glass.png")
"""


def group_rows(work: Path, rows, repeat, nilearn_jobs, n_procs):
    data = maps16(work)
    script = _write_script(work, "nilearn_group", NILEARN_GROUP)
    out_ours, out_nl = work / "out-ours", work / "out-nilearn"

    def prepare(side):
        _fresh(out_ours if side == "ours" else out_nl)

    def z_diff():
        ours = next(out_ours.rglob("*_stat-z_statmap.nii.gz"))
        d, n = _max_diff(ours, out_nl / "z_score.nii.gz")
        return f"max |z diff| {d:.2e} over {n} voxels"

    one_sample = ROOT / "models" / "one_sample_existing_maps.json"
    results = {}
    if "maps16" in rows:
        results["maps16"] = side_by_side(
            "16 maps 3 mm, FDR, report", [*APP, data, out_ours, "dataset", "--model", one_sample,
                                         "--height-control", "fdr"],
            [PY, script, data, out_nl, "fdr"], repeat, prepare=prepare, diff=z_diff)
    if "perm16" in rows:
        without, without_cpu = [], []
        for _ in range(repeat):
            prepare("ours")
            measured = run([*APP, data, out_ours, "dataset", "--model", one_sample])
            without.append(measured[0])
            without_cpu.append(measured[2])
        base, base_cpu = statistics.median(without), statistics.median(without_cpu)
        t_ours, t_nl, c_ours, c_nl = side_by_side(
            f"16 maps, 1000 perm, n-procs {n_procs}/n_jobs {nilearn_jobs}",
            [*APP, data, out_ours, "dataset", "--model", one_sample, "--n-perm", "1000", "--n-procs", str(n_procs)],
            [PY, script, data, out_nl, "perm16", str(nilearn_jobs)], repeat, prepare=prepare)
        for what, ours_with, ours_without, theirs in (("wall", t_ours, base, t_nl), ("CPU", c_ours, base_cpu, c_nl)):
            added = ours_with - ours_without
            print(f"{'':<34} {what}: permutations add {added:.2f} s to our run ({ours_without:.2f} s without); "
                  f"a tenth of nilearn's non_parametric_inference run is {theirs / 10:.2f} s: "
                  f"{'holds' if added <= theirs / 10 else 'MISSED'}", flush=True)
    if "perm2cov" in rows:
        model = work / "two_covariates.json"
        model.write_text(json.dumps(MODEL_2COV))
        t_ours, t_nl, _, _ = side_by_side(
            f"2 cov., 1000 perm, n-procs {n_procs}/n_jobs {nilearn_jobs}",
            [*APP, data, out_ours, "dataset", "--model", model, "--n-perm", "1000", "--n-procs", str(n_procs)],
            [PY, script, data, out_nl, "perm2cov", str(nilearn_jobs)], repeat, prepare=prepare)
        print(f"{'':<34} two-covariate Freedman-Lane at least 20x nilearn: "
              f"{'holds' if t_nl >= 20 * t_ours else 'MISSED'} ({t_nl / t_ours:.1f}x)", flush=True)
    return results


# --- Haxby ------------------------------------------------------------------------------------------

NILEARN_HAXBY = """
import sys
from pathlib import Path
import numpy as np, pandas as pd
from nilearn.glm.first_level import FirstLevelModel
from nilearn.glm.contrasts import compute_fixed_effects

bids, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
motion = ["rot_x", "rot_y", "rot_z", "trans_x", "trans_y", "trans_z"]
runs = sorted(p for p in (bids / "sub-1/func").glob("*_bold.nii.gz") if "acq-" not in p.name)
# nilearn's automatic EPI mask is empty on these 6x10x10 images: non-zero mean signal instead
import nibabel as nib
first = nib.load(runs[0])
mask = nib.Nifti1Image((first.get_fdata().mean(axis=3) > 0).astype(np.uint8), first.affine)
effects = {"faceVsHouse": [], "faceVsScrambled": []}
variances = {"faceVsHouse": [], "faceVsScrambled": []}
for run in runs:
    events = pd.read_csv(str(run).replace("_bold.nii.gz", "_events.tsv"), sep="\\t")
    conf = pd.read_csv(bids / "derivatives/motion/sub-1/func" / run.name.replace(
        "_bold.nii.gz", "_desc-confounds_timeseries.tsv"), sep="\\t")[motion]
    flm = FirstLevelModel(t_r=2.5, hrf_model="spm", drift_model="cosine", high_pass=1 / 128,
                          noise_model="ar1", mask_img=mask, minimize_memory=True)
    flm.fit(str(run), events=events, confounds=conf)
    for name, other in (("faceVsHouse", "house"), ("faceVsScrambled", "scrambledpix")):
        res = flm.compute_contrast(f"face - {other}", output_type="all")
        stem = run.name.split("_bold")[0]
        for key in ("effect_size", "effect_variance", "stat", "z_score"):
            res[key].to_filename(out / f"{stem}_{name}_{key}.nii.gz")
        effects[name].append(res["effect_size"])
        variances[name].append(res["effect_variance"])
for name in effects:
    # precision-weighted, as a fixed-effects ('meta') node (nilearn's default is the plain mean)
    maps = compute_fixed_effects(effects[name], variances[name], mask, precision_weighted=True)
    for key, img in zip(("effect", "variance", "t", "z"), maps):
        img.to_filename(out / f"sub-1_{name}_{key}.nii.gz")
"""


def haxby_row(work: Path, repeat, n_procs=1, fitlins=None):
    src = DATA / "haxby2001_sub1"
    if not src.exists():
        print("haxby: data not found, skipped")
        return
    # the default 6x10x10 runs only (the folder also holds a 1-slice variant), as links
    bids = work / "haxby"
    if not bids.exists():
        for path in src.rglob("*"):
            if path.is_file() and "acq-1slice" not in path.name:
                target = bids / path.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(path)
    src = bids
    script = _write_script(work, "nilearn_haxby", NILEARN_HAXBY)
    out_ours, out_nl = work / "haxby-ours", work / "haxby-nilearn"
    model = ROOT / "models" / "haxby_run_subject.json"

    def prepare(side):
        _fresh(out_ours if side == "ours" else out_nl)

    t_ours, *_ = side_by_side(f"Haxby 12 runs -> subject, n-procs {n_procs}",
                              [*APP, src, out_ours, "subject", "--model", model, "--n-procs", str(n_procs)],
                              [PY, script, src, out_nl], repeat, prepare=prepare)
    if fitlins is None:
        print("haxby: FitLins not given (--fitlins): compared with nilearn only")
        return
    # FitLins reads fMRIPrep-style derivatives only: the same runs, named as preprocessed BOLD
    fl_bids = fitlins_layout(src, work / "haxby-fitlins-bids")
    out_fl = work / "haxby-fitlins"
    measured = []
    for _ in range(repeat):
        _fresh(out_fl)
        _fresh(work / "haxby-fitlins-work")
        measured.append(run([fitlins, fl_bids, out_fl, "participant", "--model", model,
                             "--derivatives", fl_bids / "derivatives" / "fmriprep", "--space", FITLINS_SPACE,
                             "--estimator", "nilearn", "--drift-model", "cosine", "--n-cpus", str(n_procs),
                             "--work-dir", work / "haxby-fitlins-work"]))
    t_fl = statistics.median(m[0] for m in measured)
    print(f"{'  FitLins, the same runs and model':<34} load {os.getloadavg()[0]:.1f} | wall {t_fl:7.2f} s, "
          f"CPU {statistics.median(m[2] for m in measured):6.2f} s, peak {max(m[1] for m in measured) / 2**30:.2f} GB"
          f" | FitLins/ours {t_fl / t_ours:5.1f}x   (wall runs {_fmt(m[0] for m in measured)})", flush=True)


FITLINS_SPACE = "MNI152NLin2009cAsym"


def fitlins_layout(src: Path, root: Path) -> Path:
    """``src`` (raw BOLD, confounds in derivatives/motion) as FitLins reads it: an fMRIPrep-style
    derivatives folder with each BOLD linked as ``desc-preproc``, its sidecar, the confounds and
    a brain mask (voxels of non-zero mean signal, as the nilearn script)."""
    import nibabel as nib
    import numpy as np

    if root.exists():
        return root
    func = root / "derivatives" / "fmriprep" / "sub-1" / "func"
    func.mkdir(parents=True)
    for path in src.rglob("*"):
        if path.is_file() and "derivatives" not in path.parts:
            target = root / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
    (root / "derivatives" / "fmriprep" / "dataset_description.json").write_text(json.dumps(
        {"Name": "Haxby runs as fMRIPrep outputs", "BIDSVersion": "1.8.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "fMRIPrep"}]}))
    sidecar = (src / "task-objectviewing_bold.json").read_text()
    for bold in sorted((src / "sub-1" / "func").glob("*_bold.nii.gz")):
        stem = bold.name.removesuffix("_bold.nii.gz")
        prefix = func / f"{stem}_space-{FITLINS_SPACE}"
        Path(f"{prefix}_desc-preproc_bold.nii.gz").symlink_to(bold.resolve())
        Path(f"{prefix}_desc-preproc_bold.json").write_text(sidecar)
        img = nib.load(bold)
        mask = (np.asarray(img.dataobj).mean(axis=3) > 0).astype(np.uint8)
        nib.save(nib.Nifti1Image(mask, img.affine), f"{prefix}_desc-brain_mask.nii.gz")
        confounds = src / "derivatives" / "motion" / "sub-1" / "func" / f"{stem}_desc-confounds_timeseries.tsv"
        (func / confounds.name).symlink_to(confounds.resolve())
    return root


# --- full size ------------------------------------------------------------------------------------

N_SUBJECTS, N_RUNS, N_VOLUMES, TR = 10, 2, 200, 2.0
SPACE = "MNI152NLin2009cAsym"
TASK = "rhymejudgment"
MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]

MODEL_FULL = {
    "Name": "fullsize", "BIDSModelVersion": "1.0.0", "Input": {"task": [TASK]},
    "Nodes": [
        {"Level": "Run", "Name": "run", "GroupBy": ["run", "subject"],
         "Transformations": {"Transformer": "pybids-transforms-v1",
                             "Instructions": [{"Name": "Factor", "Input": ["trial_type"]}]},
         "Model": {"Type": "glm", "X": ["trial_type.word", "trial_type.pseudoword", "trans_*", "rot_*", 1],
                   "HRF": {"Variables": ["trial_type.word", "trial_type.pseudoword"], "Model": "spm"},
                   "Options": {"HighPassFilterCutoffHz": 0.0078125}},
         "Contrasts": [{"Name": "wordVsPseudo", "ConditionList": ["trial_type.word", "trial_type.pseudoword"],
                        "Weights": [1, -1], "Test": "t"}]},
        {"Level": "Subject", "Name": "subject", "GroupBy": ["subject", "contrast"],
         "Model": {"Type": "meta", "X": [1]}, "DummyContrasts": {"Test": "t"}},
        {"Level": "Dataset", "Name": "dataset", "GroupBy": ["contrast"],
         "Model": {"Type": "glm", "X": [1]}, "DummyContrasts": {"Test": "t"}},
    ]}


def fullsize_data(work: Path) -> Path:
    """Simulated fMRIPrep-style dataset at real size (written once, ~3 GB)."""
    root = work / "fullsize"
    if (root / "done").exists():
        return root
    import nibabel as nib
    import numpy as np
    import pandas as pd
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.glm.first_level import make_first_level_design_matrix

    events_root = DATA / "events_only" / "ds000003"
    if not events_root.exists():
        raise SystemExit(f"{events_root} not found")
    _fresh(root)
    deriv = root / "derivatives" / "fmriprep"
    mask_img = load_mni152_brain_mask(resolution=2)
    mask = np.asarray(mask_img.dataobj) > 0
    coords = nib.affines.apply_affine(mask_img.affine, np.argwhere(mask))
    active = np.linalg.norm(coords - [-44.0, 20.0, 10.0], axis=1) <= 10  # left inferior frontal
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "fullsize", "BIDSVersion": "1.8.0"}))
    (root / f"task-{TASK}_bold.json").write_text(json.dumps({"RepetitionTime": TR, "TaskName": TASK}))
    deriv.mkdir(parents=True)
    (deriv / "dataset_description.json").write_text(json.dumps(
        {"Name": "fmriprep", "BIDSVersion": "1.8.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "bench_cli simulation"}]}))
    subjects = sorted(p.name for p in events_root.glob("sub-*"))[:N_SUBJECTS]
    rows = ["participant_id"] + subjects
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    rng = np.random.default_rng(0)
    for sub in subjects:
        events = pd.read_csv(next((events_root / sub / "func").glob("*_events.tsv")), sep="\t")
        for r in range(1, N_RUNS + 1):
            stem = f"{sub}_task-{TASK}_run-{r:02d}"
            func, dfunc = root / sub / "func", deriv / sub / "func"
            func.mkdir(parents=True, exist_ok=True)
            dfunc.mkdir(parents=True, exist_ok=True)
            events.to_csv(func / f"{stem}_events.tsv", sep="\t", index=False)
            design = make_first_level_design_matrix(np.arange(N_VOLUMES) * TR, events, hrf_model="spm",
                                                    drift_model=None)
            signal = design[["word", "pseudoword"]].to_numpy() @ np.array([1.0, 0.4])  # % change
            motion = np.cumsum(rng.normal(0, 0.02, (N_VOLUMES, 6)), axis=0)
            pd.DataFrame(motion, columns=MOTION).to_csv(dfunc / f"{stem}_desc-confounds_timeseries.tsv",
                                                        sep="\t", index=False)
            noise = rng.standard_normal((N_VOLUMES, int(mask.sum())), dtype=np.float32)
            noise[1:] += 0.3 * noise[:-1]
            percent = 2.0 * noise
            percent[:, active] += signal[:, None].astype(np.float32)
            series = 1000.0 * (1 + percent / 100)
            data = np.zeros(mask.shape + (N_VOLUMES,), dtype=np.int16)
            data[mask] = np.round(series.T).astype(np.int16)
            img = nib.Nifti1Image(data, mask_img.affine)
            img.header.set_xyzt_units("mm", "sec")
            img.header["pixdim"][4] = TR
            bold = dfunc / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz"
            nib.save(img, bold)
            (dfunc / f"{stem}_space-{SPACE}_desc-preproc_bold.json").write_text(json.dumps({"RepetitionTime": TR}))
            nib.save(nib.Nifti1Image(mask.astype(np.uint8), mask_img.affine),
                     dfunc / f"{stem}_space-{SPACE}_desc-brain_mask.nii.gz")
            try:
                os.link(bold, func / f"{stem}_bold.nii.gz")
            except OSError:
                shutil.copy(bold, func / f"{stem}_bold.nii.gz")
    (root / "done").write_text("")
    return root


NILEARN_FULL = """
import sys
from pathlib import Path
import numpy as np, pandas as pd
from nilearn.glm.first_level import FirstLevelModel
from nilearn.glm.contrasts import compute_fixed_effects
from nilearn.glm.second_level import SecondLevelModel
from nilearn.glm import threshold_stats_img
from nilearn.reporting import get_clusters_table
from nilearn.plotting import plot_glass_brain

root, out, n_subjects = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
deriv = root / "derivatives" / "fmriprep"
motion = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
subject_maps = []
for sub in sorted(p.name for p in root.glob("sub-*"))[:n_subjects]:
    effects, variances = [], []
    for bold in sorted((deriv / sub / "func").glob("*_desc-preproc_bold.nii.gz")):
        stem = bold.name.split("_space-")[0]
        mask = str(bold).replace("desc-preproc_bold", "desc-brain_mask")
        events = pd.read_csv(root / sub / "func" / f"{stem}_events.tsv", sep="\\t")
        conf = pd.read_csv(deriv / sub / "func" / f"{stem}_desc-confounds_timeseries.tsv", sep="\\t")[motion]
        flm = FirstLevelModel(t_r=2.0, hrf_model="spm", drift_model="cosine", high_pass=1 / 128,
                              noise_model="ar1", mask_img=mask, minimize_memory=True)
        flm.fit(str(bold), events=events, confounds=conf)
        res = flm.compute_contrast("word - pseudoword", output_type="all")
        for key in ("effect_size", "effect_variance", "stat", "z_score"):
            res[key].to_filename(out / f"{stem}_{key}.nii.gz")
        effects.append(res["effect_size"])
        variances.append(res["effect_variance"])
    # precision-weighted, as a fixed-effects ('meta') node (nilearn's default is the plain mean)
    fx = compute_fixed_effects(effects, variances, mask, precision_weighted=True)
    for key, img in zip(("effect", "variance", "t", "z"), fx):
        img.to_filename(out / f"{sub}_{key}.nii.gz")
    subject_maps.append(str(out / f"{sub}_effect.nii.gz"))
design = pd.DataFrame({"intercept": np.ones(len(subject_maps))})
model = SecondLevelModel(mask_img=mask).fit(subject_maps, design_matrix=design)
res = model.compute_contrast("intercept", output_type="all")
for key in ("z_score", "stat", "effect_size", "effect_variance", "p_value"):
    res[key].to_filename(out / f"group_{key}.nii.gz")
thr_map, thr = threshold_stats_img(res["z_score"], mask_img=mask, alpha=0.001, height_control="fpr")
thr_map.to_filename(out / "group_z_fpr.nii.gz")
get_clusters_table(thr_map, stat_threshold=thr).to_csv(out / "clusters.tsv", sep="\\t", index=False)
plot_glass_brain(thr_map, threshold=thr, plot_abs=False, colorbar=True).savefig(out / "glass.png")
"""


def fullsize_row(work: Path, repeat, n_subjects=N_SUBJECTS):
    start = time.perf_counter()
    root = fullsize_data(work)
    print(f"{'':<34} full-size dataset ready in {time.perf_counter() - start:.0f} s ({root})", flush=True)
    model = work / "fullsize_model.json"
    model.write_text(json.dumps(MODEL_FULL))
    script = _write_script(work, "nilearn_fullsize", NILEARN_FULL)
    out_ours, out_nl = work / "full-ours", work / "full-nilearn"

    def prepare(side):
        _fresh(out_ours if side == "ours" else out_nl)

    def diffs():
        parts = []
        for ours, theirs, what in (
                (next(out_ours.rglob("node-dataset/*_stat-z_statmap.nii.gz")), out_nl / "group_z_score.nii.gz",
                 "dataset z"),
                (next(out_ours.rglob("node-dataset/*_stat-effect_statmap.nii.gz")),
                 out_nl / "group_effect_size.nii.gz", "dataset effect"),
                (next(out_ours.rglob("node-subject/sub-01/**/*_stat-effect_statmap.nii.gz")),
                 out_nl / "sub-01_effect.nii.gz", "sub-01 effect"),
                (next(out_ours.rglob("node-run/sub-01/**/*run-01*_stat-t_statmap.nii.gz")),
                 out_nl / f"sub-01_task-{TASK}_run-01_stat.nii.gz", "run t")):
            d, _ = _max_diff(ours, theirs)
            parts.append(f"{what} {d:.1e}")
        return "max |diff|: " + ", ".join(parts)

    labels = sorted(p.name.removeprefix("sub-") for p in root.glob("sub-*"))[:n_subjects]
    side_by_side(f"full size {len(labels)}x{N_RUNS} runs, n-procs 2",
                 [*APP, root, out_ours, "dataset", "--model", model, "--derivatives", root / "derivatives" / "fmriprep",
                  "--n-procs", "2", "--participant-label", *labels],
                 [PY, script, root, out_nl, str(n_subjects)], repeat, prepare=prepare, diff=diffs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=["validate", "version", "maps16", "perm16", "perm2cov",
                                                      "haxby", "haxby-procs", "fullsize"])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_cli"))
    parser.add_argument("--nilearn-jobs", type=int, default=1, help="n_jobs of non_parametric_inference")
    parser.add_argument("--n-procs", type=int, default=2,
                        help="our --n-procs in the permutation and Haxby rows (fullsize always uses 2)")
    parser.add_argument("--fitlins", default=shutil.which("fitlins"),
                        help="FitLins executable for the Haxby rows (e.g. from its own venv: it pins old "
                             "pybids, nilearn, numpy and pandas); default: fitlins on PATH")
    parser.add_argument("--fullsize-subjects", type=int, default=N_SUBJECTS,
                        help="subjects of the simulated dataset to run (all 10 are written)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    # what pip install does for every package: without it (an editable install run with
    # PYTHONDONTWRITEBYTECODE set, as on this machine) every run compiled our ~90 modules, ~0.2 s
    compileall.compile_dir(ROOT / "bids_app", quiet=1)
    print(f"bench_cli: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; medians of {args.repeat} "
          "run(s); each side a fresh process", flush=True)
    alone("python -c pass (load reference)", [PY, "-c", "pass"], 3)
    if "validate" in args.rows:
        alone("bids-stats validate (demo.json)", [*APP, "validate", ROOT / "models" / "demo.json"],
              max(args.repeat, 3), target=0.5)
        alone("bids-stats validate (one-sample)", [*APP, "validate", ROOT / "models" / "group_one_sample.json"],
              max(args.repeat, 3), target=0.5)
    if "version" in args.rows:
        alone("bids-stats --version", [*APP, "--version"], max(args.repeat, 3), target=0.3)
    if {"maps16", "perm16", "perm2cov"} & set(args.rows):
        results = group_rows(args.work, args.rows, args.repeat, args.nilearn_jobs, args.n_procs)
        if "maps16" in results:
            t, cpu = results["maps16"][0], results["maps16"][2]
            print(f"{'':<34} 16-map run under 3 s: wall {'holds' if t < 3 else 'MISSED'} ({t:.2f} s), "
                  f"CPU {'holds' if cpu < 3 else 'MISSED'} ({cpu:.2f} s)", flush=True)
    if "haxby" in args.rows:
        haxby_row(args.work, args.repeat, fitlins=args.fitlins)
    if "haxby-procs" in args.rows:
        haxby_row(args.work, args.repeat, args.n_procs, fitlins=args.fitlins)
    if "fullsize" in args.rows:
        fullsize_row(args.work, args.repeat, args.fullsize_subjects)


if __name__ == "__main__":
    main()
