"""Time nilearn's AR(p) ``run_glm`` against ``FirstLevelEstimator``.

Simulates 200 volumes in the MNI152 2 mm brain mask (~230k voxels, package
data: no download) with AR(1) noise of spatially varying coefficient, and a
15-column design (6 task regressors convolved with the SPM HRF, cosine drifts,
constant). Both engines get the same float64, percent-signal-change data in
one process; prints seconds, the speed ratio and the largest differences.

Run: ``python benchmarks/bench_first_level.py [--voxels N] [--repeats R] [--threads T]
[--noise-models ar1 ar2 ar3]``. On a shared machine, ``--threads 1`` avoids BLAS and
OpenMP threads spinning against other processes (it applies to both engines).
AR(p >= 2): both cluster the coefficients with scikit-learn's k-means (100
clusters, n_init=10, seed 0); ours runs it on one OpenMP thread.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from nilearn.datasets import load_mni152_brain_mask
from nilearn.glm.contrasts import compute_contrast
from nilearn.glm.first_level import make_first_level_design_matrix, run_glm

from bids_app.estimation import FirstLevelEstimator, scale_timeseries


def simulate(n_scans, n_voxels, rng):
    """Return (Y (n_scans, n_voxels) raw BOLD, design (n_scans, 15) DataFrame)."""
    t_r = 2.0
    frame_times = np.arange(n_scans) * t_r
    onsets = np.arange(10.0, frame_times[-1] - 20, 15.0)
    events = pd.DataFrame(
        {"onset": onsets, "duration": 3.0, "trial_type": [f"cond{i % 6}" for i in range(len(onsets))]}
    )
    design = make_first_level_design_matrix(
        frame_times, events, hrf_model="spm", drift_model="cosine", high_pass=0.01
    )
    rho = rng.uniform(-0.1, 0.5, n_voxels)
    noise = rng.standard_normal((n_scans, n_voxels))
    for t in range(1, n_scans):
        noise[t] += rho * noise[t - 1]
    betas = rng.standard_normal((design.shape[1], n_voxels)) * 0.5
    betas[-1] = 1000.0  # baseline so scaling gives percent signal change
    return design.values @ betas + 5.0 * noise, design


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=200)
    parser.add_argument("--voxels", type=int, default=None, help="default: voxels in the MNI152 2 mm mask")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="BLAS threads (default: library default)")
    parser.add_argument("--noise-models", nargs="+", default=["ar1", "ar2", "ar3"])
    args = parser.parse_args()
    if args.threads:
        threadpool_limits(args.threads)

    n_voxels = args.voxels or int(np.asarray(load_mni152_brain_mask(resolution=2).dataobj).astype(bool).sum())
    Y, design = simulate(args.scans, n_voxels, np.random.default_rng(0))
    Y, _ = scale_timeseries(Y)
    X = design.values
    contrast = np.zeros(X.shape[1])
    contrast[:2] = [1.0, -1.0]
    print(f"{args.scans} scans x {n_voxels} voxels, {X.shape[1]} regressors, BLAS threads: {args.threads or 'default'}")

    for noise_model, repeat in [(m, r) for m in args.noise_models for r in range(args.repeats)]:
        start = time.perf_counter()
        labels, results = run_glm(Y, X, noise_model=noise_model, random_state=0)
        nl = compute_contrast(labels, results, contrast, "t")
        nl_t, nl_z = nl.stat(), nl.z_score()
        t_nilearn = time.perf_counter() - start
        del results

        start = time.perf_counter()
        ours = FirstLevelEstimator(noise_model=noise_model, random_state=0).fit(Y, X).contrast(contrast, "t")
        t_ours = time.perf_counter() - start

        print(
            f"[{noise_model} {repeat + 1}] nilearn run_glm+contrast {t_nilearn:.2f} s | bids_app {t_ours:.2f} s | "
            f"ratio {t_nilearn / t_ours:.2f}x | max |t diff| {np.max(np.abs(ours.stat - nl_t)):.2e} | "
            f"max rel effect diff {np.max(np.abs(ours.effect - nl.effect) / np.abs(nl.effect)):.2e} | "
            f"max |z diff| {np.max(np.abs(ours.z - nl_z)):.2e}"
        )


if __name__ == "__main__":
    main()
