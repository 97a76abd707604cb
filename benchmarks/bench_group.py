"""Group-level OLS: bids_app's OLSEstimator against nilearn's SecondLevelModel.

Simulated effect maps in the MNI152 2 mm brain mask (nilearn package data,
no download; ~235k voxels) are written as NIfTI files to a temporary
directory, and both tools read those files:

* nilearn: ``SecondLevelModel(mask_img).fit(files, design)`` then
  ``compute_contrast(..., output_type="all")`` per contrast (nilearn reloads
  and refits the maps for each contrast; that is its cost).
* ours: load the maps once (nibabel + mask, float32), ``OLSEstimator().fit``,
  then ``fit.contrast`` per contrast (each gives effect, variance, stat, z, p).

Designs: intercept + 2 covariates for N = 16, 94, 500 maps (t on the
intercept), and a 3x3 within-subject design (9 cells + 15 subject columns,
16 subjects = 144 maps; F on the main effect of factor A). One contrast per
design: nilearn refits for every contrast, so more contrasts would only
favour us and lengthen the run. Both run side by side in this process, with the same BLAS
thread count (1 by default, OLSEstimator's default); printed: seconds, ratio,
max |stat difference|. Our peak memory (resident set size, Linux VmHWM) is
measured in a fresh subprocess per case, and for N = 1000 maps (ours only).

Usage::

    python benchmarks/bench_group.py            # writes ~4.4 GB of temporary files
    python benchmarks/bench_group.py --quick    # N = 16, 94 and the 144-map design
    python benchmarks/bench_group.py --sizes 16 94 --no-n1000

Run time: ``--quick`` ~2-3 min; the default took 12 min on the shared 2-core
test machine, 7.5 min of it nilearn at N = 500. On file inputs
``SecondLevelModel.fit`` checks the field of view of every pair of images
(``check_same_fov`` reloads headers: 9,682 nibabel loads for 94 files), so
its cost grows as N^2.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from bids_app.estimation.ols import OLSEstimator

SEED = 0


def brain_mask():
    """MNI152 2 mm brain mask shipped with nilearn (no download)."""
    from nilearn.datasets import load_mni152_brain_mask

    img = load_mni152_brain_mask(resolution=2)
    return np.asarray(img.dataobj) > 0, img.affine


def write_maps(directory: Path, n_maps: int, mask, affine) -> list[Path]:
    """Write ``n_maps`` float32 maps: noise plus a smooth group effect, 0 outside the mask."""
    rng = np.random.default_rng(SEED)
    effect = np.linspace(0.0, 1.0, int(mask.sum()), dtype=np.float32)
    files = []
    volume = np.zeros(mask.shape, dtype=np.float32)
    for i in range(n_maps):
        volume[mask] = effect + rng.standard_normal(effect.size, dtype=np.float32)
        path = directory / f"sub-{i:04d}_stat-effect_statmap.nii"
        nib.save(nib.Nifti1Image(volume, affine), path)
        files.append(path)
    return files


def covariate_design(n_maps: int):
    """Intercept + 2 covariates; one contrast: the group mean (t)."""
    rng = np.random.default_rng(SEED + n_maps)
    X = np.column_stack([np.ones(n_maps), rng.standard_normal((n_maps, 2))])
    return X, ["intercept", "cov1", "cov2"], {"intercept": (np.array([1.0, 0.0, 0.0]), "t")}


def repeated_measures_design(n_subjects: int = 16):
    """3x3 within-subject cells + subject columns (last dropped: full rank)."""
    cells = [(a, b) for a in range(3) for b in range(3)]
    rows = [(s, a, b) for s in range(n_subjects) for a, b in cells]
    X = np.zeros((len(rows), 9 + n_subjects - 1))
    for i, (s, a, b) in enumerate(rows):
        X[i, 3 * a + b] = 1
        if s < n_subjects - 1:
            X[i, 9 + s] = 1
    names = [f"A{a}B{b}" for a, b in cells] + [f"sub{s:02d}" for s in range(n_subjects - 1)]
    weights = np.zeros((2, X.shape[1]))
    weights[0, 0:3], weights[0, 3:6] = 1 / 3, -1 / 3
    weights[1, 3:6], weights[1, 6:9] = 1 / 3, -1 / 3
    return X, names, {"main effect A": (weights, "F")}


def load_masked(files, mask) -> np.ndarray:
    """Maps as a float32 (n_maps, n_voxels) array, one file at a time."""
    Y = np.empty((len(files), int(mask.sum())), dtype=np.float32)
    for i, path in enumerate(files):
        Y[i] = np.asarray(nib.load(path).dataobj, dtype=np.float32)[mask]
    return Y


def run_ours(files, mask, X, contrasts):
    """Load + fit + contrasts; returns (load seconds, total seconds, {name: stat})."""
    start = time.perf_counter()
    Y = load_masked(files, mask)
    loaded = time.perf_counter()
    fit = OLSEstimator().fit(Y, X)
    stats = {name: fit.contrast(w, test).stat for name, (w, test) in contrasts.items()}
    return loaded - start, time.perf_counter() - start, stats


def run_nilearn(files, mask, affine, X, names, contrasts, blas_threads):
    """SecondLevelModel fit + compute_contrast(output_type="all") per contrast."""
    from nilearn.glm.second_level import SecondLevelModel

    start = time.perf_counter()
    with warnings.catch_warnings(), threadpool_limits(blas_threads, user_api="blas"):
        warnings.simplefilter("ignore")
        model = SecondLevelModel(mask_img=nib.Nifti1Image(mask.astype(np.uint8), affine))
        model.fit([str(f) for f in files], design_matrix=pd.DataFrame(X, columns=names))
        maps = {
            name: model.compute_contrast(w, second_level_stat_type=test, output_type="all")
            for name, (w, test) in contrasts.items()
        }
    seconds = time.perf_counter() - start
    return seconds, {name: np.asarray(m["stat"].dataobj)[mask] for name, m in maps.items()}


def _status_gb(field: str) -> float:
    """A memory field of /proc/self/status (Linux), in GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20  # kB -> GB
    raise KeyError(field)


def peak_memory(files, design: str) -> tuple[float, float]:
    """Our run in a fresh process: (peak RSS during the run, peak - RSS before it), in GB."""
    manifest = Path(files[0]).parent / f"manifest-{design}-{len(files)}.json"
    manifest.write_text(json.dumps({"files": [str(f) for f in files], "design": design}))
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(manifest)],
        check=True, capture_output=True, text=True,
    )
    peak, baseline = json.loads(out.stdout.strip().splitlines()[-1])
    return peak, peak - baseline


def _child(manifest: str) -> None:
    """Subprocess entry: run ours once and print peak RSS (GB) as JSON."""
    spec = json.loads(Path(manifest).read_text())
    mask, _ = brain_mask()
    files = [Path(f) for f in spec["files"]]
    X, _, contrasts = (
        repeated_measures_design() if spec["design"] == "rm" else covariate_design(len(files))
    )
    baseline = _status_gb("VmRSS")
    # getrusage's ru_maxrss survives exec (it would report the parent's
    # peak); instead reset this process's high-water mark and read VmHWM.
    Path("/proc/self/clear_refs").write_text("5")
    run_ours(files, mask, X, contrasts)
    print(json.dumps([_status_gb("VmHWM"), baseline]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 16, 94 and 144 only")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 94, 500],
                        help="numbers of maps for the covariate design (default 16 94 500)")
    parser.add_argument("--no-n1000", action="store_true", help="skip the N = 1000 memory run")
    parser.add_argument(
        "--nilearn-blas-threads", type=int, default=1,
        help="BLAS threads for nilearn (default 1, as OLSEstimator's default); 0: library default",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child)
        return

    sizes = [16, 94] if args.quick else args.sizes
    with_n1000 = not (args.quick or args.no_n1000)
    mask, affine = brain_mask()
    print(f"MNI152 2 mm mask: {int(mask.sum())} voxels in a {mask.shape} grid")
    header = (
        f"{'case':<24}{'ours s':>8}{'(load)':>8}{'nilearn s':>11}{'ratio':>8}"
        f"{'max|dstat|':>12}{'peak GB':>9}{'(+data)':>9}"
    )
    with tempfile.TemporaryDirectory(prefix="bench_group_") as tmp:
        n_files = 1000 if with_n1000 else max(sizes + [144])
        start = time.perf_counter()
        files = write_maps(Path(tmp), n_files, mask, affine)
        print(f"wrote {n_files} maps in {time.perf_counter() - start:.1f} s (uncompressed NIfTI)\n")
        # Warm-up: imports and first-call costs of both tools stay out of the timings.
        X, names, contrasts = covariate_design(4)
        run_ours(files[:4], mask, X, contrasts)
        run_nilearn(files[:4], mask, affine, X, names, contrasts, args.nilearn_blas_threads or None)
        print(header)
        cases = [(f"N={n} int+2 cov (t)", files[:n], "cov") for n in sizes]
        cases.append(("N=144 3x3 RM (F)", files[:144], "rm"))
        for label, subset, design in cases:
            X, names, contrasts = (
                repeated_measures_design() if design == "rm" else covariate_design(len(subset))
            )
            load_s, ours_s, ours = run_ours(subset, mask, X, contrasts)
            nilearn_s, theirs = run_nilearn(
                subset, mask, affine, X, names, contrasts, args.nilearn_blas_threads or None
            )
            diff = max(float(np.max(np.abs(ours[k] - theirs[k]))) for k in contrasts)
            peak, extra = peak_memory(subset, design)
            print(
                f"{label:<24}{ours_s:>8.2f}{load_s:>8.2f}{nilearn_s:>11.2f}"
                f"{nilearn_s / ours_s:>7.1f}x{diff:>12.1e}{peak:>9.2f}{extra:>9.2f}",
                flush=True,
            )
        if with_n1000:
            X, _, contrasts = covariate_design(1000)
            load_s, ours_s, _ = run_ours(files, mask, X, contrasts)
            peak, extra = peak_memory(files, "cov")
            print(
                f"{'N=1000 int+2 cov (ours)':<24}{ours_s:>8.2f}{load_s:>8.2f}{'-':>11}{'-':>8}"
                f"{'-':>12}{peak:>9.2f}{extra:>9.2f}"
            )
    print(
        "\nours s: load (nibabel + mask, float32) + fit + contrasts; nilearn s: fit + "
        "compute_contrast(output_type='all') per contrast.\npeak GB: peak resident memory of "
        "our run in a fresh process; (+data): above that process before the run."
    )


if __name__ == "__main__":
    main()
