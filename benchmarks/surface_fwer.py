"""Family-wise error rate of maxT, cluster and TFCE permutation inference on the fsaverage5 mesh.

Run from the repository root::

    python benchmarks/surface_fwer.py                        # 1000 experiments per dataset
    python benchmarks/surface_fwer.py --n-experiments 200

The same experiments as ``null_fwer.py``, on real surface maps
(``../shared/data/surface_fsaverage5``: wager2008, 30 maps; pain21, 21 maps;
both hemispheres, 2 x 10,242 vertices) with clusters and TFCE on the mesh
graph (triangle edges, nilearn's packaged fsaverage5): experiments alternate
between random sign flips (one-sample t) and a random Gaussian covariate
(Freedman-Lane); each runs :func:`permutation_test` two-sided with 99
resamplings and records whether anything is FWE-significant at 5 % for maxT,
cluster size (cluster-forming z = 3.1) and TFCE. Vertices are those valid
(non-zero) in every map and not constant across maps, as the pipeline's mask.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from null_fwer import experiment, summary  # noqa: E402

from bids_app.inference.connectivity import subgraph, surface_graph  # noqa: E402
from bids_app.io.surface import Surface, load_meshes, read_surface  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "surface_fsaverage5"


def load(name):
    """Effect maps (n, 20484) of one set, the analysed vertices, and the mesh graph among them."""
    files = sorted((DATA / name).glob("sub-*/*hemi-L*_stat-effect_statmap.func.gii"))
    Y = np.vstack([read_surface(f)[0] for f in files])
    keep = (Y != 0).all(axis=0) & np.isfinite(Y).all(axis=0) & (np.ptp(Y, axis=0) > 0)
    graph = surface_graph(Surface("fsaverage5", (("L", 10242), ("R", 10242))), load_meshes("fsaverage5"))
    return Y[:, keep], subgraph(graph, keep)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-experiments", type=int, default=1000)
    parser.add_argument("--n-perm", type=int, default=99)
    parser.add_argument("--cluster-z", type=float, default=3.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", nargs="+", default=["wager2008_emoreg", "pain21"])
    args = parser.parse_args(argv)
    for name in args.datasets:
        Y, graph = load(name)
        print(f"{name} (fsaverage5): {Y.shape[0]} maps, {Y.shape[1]} vertices, {len(graph.pairs)} mesh edges",
              flush=True)
        rng = np.random.default_rng(12345 + args.seed)
        start, records = time.perf_counter(), []
        for i in range(args.n_experiments):
            records.append(experiment(Y, None, i, args.n_perm, args.cluster_z, rng, seed=10_000 * args.seed + i,
                                      graph=graph))
        records = pd.DataFrame(records)
        print(f"  {args.n_experiments} experiments in {time.perf_counter() - start:.0f} s")
        print(summary(records).to_string(index=False))
        for scheme, part in records.groupby("scheme"):
            print(f"  {scheme}: " + ", ".join(f"{m} {100 * (part[m] <= 0.05 + 1e-12).mean():.1f}%"
                                              for m in ("maxT", "cluster", "TFCE")))


if __name__ == "__main__":
    main()
