"""Family-wise error rate of maxT, cluster and TFCE inference on real null data.

Run from the repository root::

    python benchmarks/null_fwer.py                         # 1000 experiments per dataset
    python benchmarks/null_fwer.py --n-experiments 200     # the minimum asked for
    python benchmarks/null_fwer.py --statistic F           # F contrasts

Each experiment makes real maps null, then runs :func:`permutation_test`
(two-sided, 99 resamplings) and records whether anything is significant at
FWE 5% for each of maxT, cluster size (cluster-forming z = 3.1) and TFCE.
Experiments alternate between

* random sign flips of the subjects' maps, tested with a one-sample t (the
  flipped data are symmetric about 0: H0 holds exactly);
* a random Gaussian covariate regressed on the real maps (independent of
  them: H0 holds exactly), tested by Freedman-Lane permutation.

``--statistic F`` runs F contrasts instead, alternating between

* two random Gaussian covariates tested together (F, rank 2; the intercept
  is nuisance: Freedman-Lane permutation);
* sign-flipped maps with the intercept and one random covariate tested
  together (F, rank 2, the constant is tested: permutations and sign flips).

With 99 resamplings the test rejects when the observed maximum ranks in the
top 5 of 100 values, so the family-wise error is exactly 5% for continuous
statistics (cluster sizes are integers: ties can only lower it). With 1000
experiments the rate's standard error is 0.7%, so [3%, 7%] is a ~3 SE check
(with 200 experiments it is only 1.3 SE). Datasets: wager2008 (30 maps,
native 3.4 mm) and pain21 (21 maps, 2 mm averaged to 4 mm to keep TFCE
affordable; ``--full-resolution`` keeps 2 mm).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bench_permutation import brain_mask, load_pain21, load_wager
from bids_app.inference.permutation import permutation_test

ALPHA = 0.05


def pooled(volumes, mask, factor):
    """Average factor^3 voxel blocks (factor 1: unchanged); keep blocks fully in the mask."""
    if factor == 1:
        return volumes[:, mask], mask
    shape = [s // factor for s in mask.shape]
    crop = (slice(None),) + tuple(slice(0, s * factor) for s in shape)

    def blocks(array):
        return array[crop].reshape(len(array), shape[0], factor, shape[1], factor, shape[2],
                                   factor)

    small_mask = blocks(mask[None]).all(axis=(2, 4, 6))[0]
    return blocks(volumes).mean(axis=(2, 4, 6))[:, small_mask], small_mask


def datasets(full_resolution):
    pain, pain_affine = load_pain21()
    wager, wager_affine = load_wager()
    return {
        "wager2008 (3.4 mm)": pooled(wager, brain_mask(wager, wager_affine), 1),
        "pain21 (2 mm)" if full_resolution else "pain21 (4 mm)":
            pooled(pain, brain_mask(pain, pain_affine), 1 if full_resolution else 2),
    }


def experiment(Y, mask, index, n_perm, cluster_z, rng, seed, statistic="t"):
    """One null experiment; returns the smallest FWE p of each method."""
    n = Y.shape[0]
    if statistic == "F" and index % 2 == 0:
        scheme = "F, two covariates"
        data = Y
        X, contrast = np.column_stack([np.ones(n), rng.standard_normal((n, 2))]), np.eye(3)[1:]
    elif statistic == "F":
        scheme = "F, intercept and covariate"
        data = rng.choice([-1.0, 1.0], size=(n, 1)) * Y
        X, contrast = np.column_stack([np.ones(n), rng.standard_normal(n)]), np.eye(2)
    elif index % 2 == 0:
        scheme = "sign-flip"
        data = rng.choice([-1.0, 1.0], size=(n, 1)) * Y
        X, contrast = np.ones((n, 1)), [1.0]
    else:
        scheme = "covariate"
        data = Y
        X, contrast = np.column_stack([np.ones(n), rng.standard_normal(n)]), [0.0, 1.0]
    result = permutation_test(data, X, contrast, mask, n_perm=n_perm, seed=seed,
                              cluster_threshold=cluster_z, tfce=True)
    # p = k / (n_perm + 1) exactly: recover k, as 10 ** -logp is not exact
    def smallest_p(logp):
        return np.round(10.0 ** -logp.max() * (n_perm + 1)) / (n_perm + 1)

    return {"scheme": scheme,
            "maxT": smallest_p(result.logp_max_t),
            "cluster": smallest_p(result.logp_max_size),
            "TFCE": smallest_p(result.logp_max_tfce)}


def summary(records):
    rows = []
    for method in ("maxT", "cluster", "TFCE"):
        rejected = records[method] <= ALPHA + 1e-12
        k, n = int(rejected.sum()), len(records)
        low, high = stats.binomtest(k, n).proportion_ci(0.95)
        rows.append({"method": method, "FWER %": 100 * k / n, "95% CI low": 100 * low,
                     "95% CI high": 100 * high, "in [3, 7]": 3 <= 100 * k / n <= 7,
                     "experiments": n})
    return pd.DataFrame(rows).round(2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-experiments", type=int, default=1000)
    parser.add_argument("--n-perm", type=int, default=99)
    parser.add_argument("--cluster-z", type=float, default=3.1)
    parser.add_argument("--seed", type=int, default=0,
                        help="run number: runs with different seeds are independent")
    parser.add_argument("--full-resolution", action="store_true")
    parser.add_argument("--statistic", choices=("t", "F"), default="t")
    parser.add_argument("--records", default=None,
                        help="append each experiment's smallest p-values to this TSV")
    parser.add_argument("--datasets", nargs="+", default=None,
                        help="subset of the dataset names (prefix match)")
    args = parser.parse_args(argv)

    for name, (Y, mask) in datasets(args.full_resolution).items():
        if args.datasets and not any(name.startswith(d) for d in args.datasets):
            continue
        print(f"{name}: {Y.shape[0]} maps, {mask.sum()} voxels", flush=True)
        rng = np.random.default_rng(12345 + args.seed)
        start, records = time.perf_counter(), []
        for index in range(args.n_experiments):
            records.append(experiment(Y, mask, index, args.n_perm, args.cluster_z, rng,
                                      seed=args.seed * 100_000 + index, statistic=args.statistic))
            if (index + 1) % 100 == 0:
                print(f"  {index + 1} experiments, {time.perf_counter() - start:.0f} s",
                      flush=True)
        records = pd.DataFrame(records)
        if args.records:
            records.assign(dataset=name).to_csv(
                args.records, sep="\t", index=False, mode="a",
                header=not Path(args.records).exists())
        print(f"{name}, all experiments:")
        print(summary(records).to_string(index=False))
        for scheme, part in records.groupby("scheme"):
            print(f"{name}, {scheme} only:")
            print(summary(part).to_string(index=False))
        print(flush=True)


if __name__ == "__main__":
    main()
