"""Speed of permutation_test against nilearn's non_parametric_inference, 2 mm maps.

Run from the repository root::

    python benchmarks/bench_permutation.py            # full: 1000 permutations, N = 16 and 94
    python benchmarks/bench_permutation.py --quick    # 100 permutations, N = 16 only
    python benchmarks/bench_permutation.py --n-procs 2 --sizes 16 --configs "maxT 2 covariates"

Data (real maps, MNI 2 mm grid 91 x 109 x 91): the pain21 effect maps, and the
wager2008 effect maps resampled (linear) to that grid. N = 16 is the first 16
pain21 studies. No real 94-map 2 mm set fits this machine, so N = 94 draws
(seeded, with replacement) from the 51 real maps: timings do not depend on the
values. The mask is nilearn's packaged MNI152 brain mask on that grid, within
the voxels non-zero in every map.

Configurations, all two-sided: maxT one-sample (sign flips); maxT with two
covariates (random, seeded; Freedman-Lane permutations); cluster size and
mass (cluster-forming p < 0.001); TFCE. nilearn runs with ``n_jobs=1`` (its
default; ``--nilearn-jobs``), ours in one process (``--n-procs`` spreads the
blocks of resamplings as the CLI does, pool start-up timed); both sides use
the BLAS threads. nilearn's time includes masking its in-memory images (~1 s). With ``--nilearn-perm`` nilearn runs fewer
permutations and its time is scaled to ``--n-perm`` (its cost is one loop
iteration per permutation); such rows are marked "scaled".
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import stats

from bids_app.graph.parallel import block_map
from bids_app.inference.permutation import permutation_test

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_pain21():
    """pain21 effect maps (21 studies) on their 2 mm grid, and their affine."""
    files = sorted((DATA / "pain21").glob("sub-*/*_stat-effect_statmap.nii.gz"))
    if not files:
        raise SystemExit(f"pain21 maps not found under {DATA} (see ../shared/data/README.md)")
    images = [nib.load(f) for f in files]
    return np.stack([img.get_fdata() for img in images]), images[0].affine


def load_wager(target_affine=None, target_shape=None):
    """wager2008 effect maps (30 subjects), resampled (linear) to a grid if given."""
    from nilearn.image import resample_img

    files = sorted((DATA / "wager2008_emoreg").glob("sub-*/*_stat-effect_statmap.nii.gz"))
    if not files:
        raise SystemExit(f"wager2008 maps not found under {DATA} (see ../shared/data/README.md)")
    images = [nib.load(f) for f in files]
    if target_affine is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            images = [resample_img(nib.Nifti1Image(np.nan_to_num(img.get_fdata()), img.affine),
                                   target_affine=target_affine, target_shape=target_shape,
                                   interpolation="linear", force_resample=True, copy_header=True)
                      for img in images]
    return np.stack([img.get_fdata() for img in images]), images[0].affine


def brain_mask(data, affine):
    """MNI152 brain mask (nilearn's packaged copy) on the grid, where every map is non-zero."""
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_to_img

    reference = nib.Nifti1Image(np.zeros(data.shape[1:], dtype=np.float32), affine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mni = resample_to_img(load_mni152_brain_mask(resolution=2), reference,
                              interpolation="nearest", copy_header=True, force_resample=True)
    return (mni.get_fdata() > 0) & np.all(np.isfinite(data) & (data != 0), axis=0)


def group_data(n_maps, seed=0):
    """(volumes (N, x, y, z), mask, affine) for N = n_maps at 2 mm."""
    pain, affine = load_pain21()
    if n_maps <= len(pain):
        volumes = pain[:n_maps]
    else:
        wager, _ = load_wager(affine, pain.shape[1:])
        pool = np.concatenate([pain, wager])
        volumes = pool[np.random.default_rng(seed).choice(len(pool), n_maps, replace=True)]
    return volumes, brain_mask(volumes, affine), affine


def run_ours(Y, X, contrast, mask, n_perm, n_procs=1, **kwargs):
    start = time.perf_counter()
    # the pool's start-up is timed: --n-procs pays it on every run
    with block_map(n_procs) as map_blocks:
        result = permutation_test(Y, X, contrast, mask, n_perm=n_perm, seed=0, map_blocks=map_blocks, **kwargs)
    return time.perf_counter() - start, result


def run_nilearn(volumes, affine, mask, design, column, n_perm, n_jobs=1, **kwargs):
    from nilearn.glm.second_level import non_parametric_inference

    images = [nib.Nifti1Image(v.astype(np.float32), affine) for v in volumes]
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), affine)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = non_parametric_inference(images, design_matrix=design,
                                       second_level_contrast=column, mask=mask_img,
                                       n_perm=n_perm, two_sided_test=True, random_state=0,
                                       n_jobs=n_jobs, **kwargs)
    return time.perf_counter() - start, out


def configurations(n, rng):
    """name -> (our X, contrast, our kwargs, nilearn design, column, nilearn kwargs)."""
    one = np.ones((n, 1))
    cov = rng.standard_normal((n, 2))
    one_sample = (one, [1.0], pd.DataFrame({"intercept": one[:, 0]}), "intercept")
    # nilearn sign-flips when its confounds hold an intercept: leave it implicit
    covariates = (np.column_stack([one, cov]), [0.0, 1.0, 0.0],
                  pd.DataFrame(cov, columns=["a", "b"]), "a")
    return {
        "maxT one-sample": (*one_sample, {}, {}),
        "maxT 2 covariates": (*covariates, {}, {}),
        "cluster p<0.001": (*one_sample, {"cluster_threshold": stats.norm.isf(0.0005)},
                            {"threshold": 0.001}),
        "TFCE": (*one_sample, {"tfce": True}, {"tfce": True}),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 permutations, N = 16 only")
    parser.add_argument("--n-perm", type=int, default=1000)
    parser.add_argument("--nilearn-perm", type=int, nargs="*", default=None, metavar="N",
                        help="permutations for nilearn per configuration, in order "
                             "(default: --n-perm); times are scaled to --n-perm")
    parser.add_argument("--n-procs", type=int, default=1,
                        help="our processes for the blocks of resamplings, as the CLI's --n-procs "
                             "(its pool start-up is timed)")
    parser.add_argument("--nilearn-jobs", type=int, default=1, help="n_jobs of non_parametric_inference")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 94])
    parser.add_argument("--configs", nargs="+", default=None,
                        help="subset of: 'maxT one-sample', 'maxT 2 covariates', "
                             "'cluster p<0.001', 'TFCE'")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_perm, args.sizes = 100, [16]

    rows = []
    for n in args.sizes:
        volumes, mask, affine = group_data(n)
        Y = volumes[:, mask]
        print(f"N = {n}: {mask.sum()} voxels in mask", flush=True)
        configs = configurations(n, np.random.default_rng(1))
        names = args.configs or list(configs)
        for i, name in enumerate(names):
            X, contrast, design, column, ours_kw, nilearn_kw = configs[name]
            n_nilearn = args.n_perm
            if args.nilearn_perm:
                n_nilearn = args.nilearn_perm[min(i, len(args.nilearn_perm) - 1)]
            ours_s, ours = run_ours(Y, X, contrast, mask, args.n_perm, args.n_procs, **ours_kw)
            theirs_s, theirs = run_nilearn(volumes, affine, mask, design, column, n_nilearn, args.nilearn_jobs,
                                           **nilearn_kw)
            scaled = theirs_s * args.n_perm / n_nilearn
            logp = theirs if not isinstance(theirs, dict) else theirs["logp_max_t"]
            agree = np.corrcoef(ours.logp_max_t, logp.get_fdata()[mask])[0, 1]
            rows.append({"N": n, "configuration": name, "n_perm": args.n_perm, "n_procs": args.n_procs,
                         "n_jobs": args.nilearn_jobs,
                         "ours_s": round(ours_s, 2), "nilearn_s": round(scaled, 1),
                         "nilearn": "measured" if n_nilearn == args.n_perm
                         else f"scaled from {n_nilearn}",
                         "ratio": round(scaled / ours_s, 1),
                         "logp_maxT_corr": round(agree, 3)})
            print("  " + ", ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    print()
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
