"""Surface row: group OLS and 1000 permutations on fsaverage5 against nilearn, side by side.

Run from the repository root::

    python benchmarks/bench_surface.py               # 1000 permutations
    python benchmarks/bench_surface.py --n-perm 100

Data: the real wager2008 effect maps on fsaverage5 (30 maps, 2 x 10,242
vertices, ``../shared/data/surface_fsaverage5``), both hemispheres.

* Group OLS (one-sample t, all stats): ours = read the 60 GIFTI files and fit
  (:class:`OLSEstimator` + contrast: effect, variance, t, z, p) over the
  vertices valid in every map; nilearn = ``SecondLevelModel`` on
  ``SurfaceImage`` inputs (fit + ``compute_contrast(output_type="all")``), from
  the same files. The t maps are compared (max |difference|).
* Permutations (one-sample sign flips, two-sided maxT): ours
  :func:`permutation_test`; nilearn ``non_parametric_inference`` on the
  ``SurfaceImage`` inputs (``n_jobs=1``). nilearn has no cluster or TFCE
  inference on surfaces, so ours with clusters (z > 3.1) and TFCE on the mesh
  is timed alone.
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from bids_app.estimation.ols import OLSEstimator
from bids_app.inference.connectivity import subgraph, surface_graph
from bids_app.inference.permutation import permutation_test
from bids_app.io.surface import Surface, load_meshes, read_surface

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "surface_fsaverage5" / "wager2008_emoreg"


def timed(fn, repeat=1):
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-perm", type=int, default=1000)
    args = parser.parse_args(argv)

    from nilearn.datasets import load_fsaverage
    from nilearn.glm.second_level import SecondLevelModel, non_parametric_inference
    from nilearn.surface import SurfaceImage

    files = sorted(DATA.glob("sub-*/*hemi-L*_stat-effect_statmap.func.gii"))
    mesh = load_fsaverage("fsaverage5")["pial"]
    design = pd.DataFrame({"intercept": np.ones(len(files))})

    def ours_ols():
        Y = np.vstack([read_surface(f)[0] for f in files])
        keep = (Y != 0).all(0) & (np.ptp(Y, 0) > 0)
        fit = OLSEstimator().fit(Y[:, keep], np.ones((len(Y), 1)))
        return keep, fit.contrast(np.array([1.0]), "t")

    def nilearn_images():
        return [SurfaceImage(mesh, {"left": str(f), "right": str(f).replace("hemi-L", "hemi-R")}) for f in files]

    def nilearn_ols():
        slm = SecondLevelModel().fit(nilearn_images(), design_matrix=design)
        return slm.compute_contrast("intercept", output_type="all")

    rows = []
    t_ours, (keep, res) = timed(ours_ols, 3)
    t_nl, ref = timed(nilearn_ols, 3)
    ref_t = np.concatenate([np.asarray(ref["stat"].data.parts[h]).ravel() for h in ("left", "right")])
    diff = float(np.abs(res.stat - ref_t[keep]).max())
    rows.append({"task": "group OLS one-sample (read + fit + 5 maps)", "ours s": t_ours, "nilearn s": t_nl,
                 "ratio nilearn/ours": t_nl / t_ours, "max |t diff|": diff})

    Y = np.vstack([read_surface(f)[0] for f in files])[:, keep]
    X = np.ones((len(Y), 1))
    t_ours, _ = timed(lambda: permutation_test(Y, X, [1.0], n_perm=args.n_perm, seed=0, two_sided=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_nl, _ = timed(lambda: non_parametric_inference(nilearn_images(), design_matrix=design,
                                                         n_perm=args.n_perm, two_sided_test=True, n_jobs=1,
                                                         random_state=0))
    rows.append({"task": f"maxT, {args.n_perm} sign flips", "ours s": t_ours, "nilearn s": t_nl,
                 "ratio nilearn/ours": t_nl / t_ours, "max |t diff|": np.nan})

    graph = subgraph(surface_graph(Surface("fsaverage5", (("L", 10242), ("R", 10242))), load_meshes("fsaverage5")),
                     keep)
    t_ours, _ = timed(lambda: permutation_test(Y, X, [1.0], n_perm=args.n_perm, seed=0, two_sided=True,
                                               cluster_threshold=3.1, tfce=True, graph=graph))
    rows.append({"task": f"maxT + mesh clusters + mesh TFCE, {args.n_perm} sign flips", "ours s": t_ours,
                 "nilearn s": np.nan, "ratio nilearn/ours": np.nan, "max |t diff|": np.nan})
    print(f"wager2008 on fsaverage5: {len(files)} maps, {int(keep.sum())} vertices")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
