"""Permutation inference for one t or F contrast of a group GLM.

Family-wise error (FWE) corrected p-values by the max-statistic method
(Westfall & Young 1993; Nichols & Holmes 2002) for three statistics: the
voxel t (maxT), the size and the mass of supra-threshold clusters, and TFCE.

Resampling scheme, as in nilearn's ``permuted_ols`` and PALM (Winkler et al.
2014, NeuroImage 92:381):

* The design is split into the tested effect and the nuisance space
  ``Z = X @ null(c)`` (the model under ``c @ beta = 0``). Data are
  residualised on ``Z`` and the residuals are resampled (Freedman & Lane
  1983); with no nuisance this is plain resampling of the data.
* If the tested regressor ``X @ c`` is constant (a one-sample mean, possibly
  with covariates), residuals are sign-flipped (symmetric errors); otherwise
  rows are permuted (exchangeable errors).
* Exchangeability blocks restrict the draws: rows are permuted within their
  block (signs flipped per row), or, for whole-block exchangeability, blocks
  of equal size move as units with their row order kept (one sign per block).

The statistic is the same t as nilearn's ``non_parametric_inference``. With
the orthonormal basis ``[q, Q_Z]`` of the design (``q`` the tested direction)
and the residualised data scaled to unit norm per voxel, each resampling
needs only ``a = q' Y*`` and ``b = Q_Z' Y*``, and
``t = a sqrt(dof / (1 - a^2 - |b|^2))``. A batch of resamplings is therefore
one float32 matrix product ``(batch * (1 + rank Z), n) @ (n, v)``.

An F contrast ``C`` (rows x regressors, rank r) is tested the same way, as
PALM does (Winkler et al. 2014): ``Z = X @ null(C)``, ``Q`` an orthonormal
basis (n, r) of the tested space orthogonal to ``Z``, ``a = Q' Y*`` (r values
per voxel) and ``F = (|a|^2 / r) / ((1 - |a|^2 - |b|^2) / dof)``, the usual
F of the full against the reduced model. F has no sign: ``two_sided`` does
not apply; clusters are ``F > threshold`` (the F with the z threshold's
upper-tail probability) and TFCE is computed on the F map itself (``dh`` in
F units). Residuals are sign-flipped for a rank-1 F whose tested regressor
is constant (as a t); rows are permuted and signs flipped together when
the tested space holds the constant with other directions (PALM's EE + ISE:
permutations alone leave the mean in every resampling); otherwise rows are
permuted.

p-values count the observed statistic as one draw:
``p = (1 + #{null max >= observed}) / (1 + n_perm)``; outputs are
``-log10 p``.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import linalg

from bids_app.blas import one_blas_thread
from bids_app.errors import DesignError
from bids_app.inference import tfce as _tfce
from bids_app.inference.connectivity import ClusterLabeller, voxel_graph

#: Working memory per batch of resamplings (the float32 product and t maps).
BATCH_BYTES = 2**28
#: Voxels per block when only the maximum statistic is needed (cache-sized).
VOXEL_BLOCK = 8192
#: Relative margin of the cheap test that picks the units whose statistic is formed (float32 errors are ~1e-6).
_CANDIDATE_MARGIN = 1e-3
#: Elements of the (maps, units) arrays handled per pass when only a few units are kept (cache-sized).
_CACHE_ELEMENTS = 2**20
#: Blocks of resamplings handed to ``map_blocks``: several per worker, so a slow worker does not hold up the rest.
N_BLOCKS = 8


@dataclass
class PermutationResult:
    """Observed statistics and FWE-corrected ``-log10 p`` maps, masked voxel order.

    Attributes
    ----------
    t : ndarray, float64, (n_voxels,)
        Observed t statistic of the contrast.
    logp_max_t : ndarray, (n_voxels,)
        Voxel-level FWE ``-log10 p`` (maxT); tests ``|t|`` when two-sided.
    cluster_size, cluster_mass : ndarray or None, (n_voxels,)
        Size (voxels) and mass (sum of ``|t| - threshold``) of the
        supra-threshold cluster holding each voxel; 0 outside clusters.
        None without a cluster-forming threshold.
    logp_max_size, logp_max_mass : ndarray or None, (n_voxels,)
        Cluster-level FWE ``-log10 p`` of each voxel's cluster (0 outside).
    tfce : ndarray or None, (n_voxels,)
        Signed TFCE of the observed t map; None unless requested.
    logp_max_tfce : ndarray or None, (n_voxels,)
        TFCE FWE ``-log10 p``.
    null : dict of str to ndarray
        Null distributions of the maxima, each (n_perm,): ``"max_t"`` and,
        when computed, ``"max_size"``, ``"max_mass"``, ``"max_tfce"``.
    info : dict
        How the test was run (scheme, n_perm, seed, dof, thresholds...),
        for provenance sidecars.
    """

    t: np.ndarray
    logp_max_t: np.ndarray
    cluster_size: np.ndarray | None = None
    cluster_mass: np.ndarray | None = None
    logp_max_size: np.ndarray | None = None
    logp_max_mass: np.ndarray | None = None
    tfce: np.ndarray | None = None
    logp_max_tfce: np.ndarray | None = None
    null: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def permutation_test(Y, X, contrast, mask=None, *, n_perm=5000, seed=0, two_sided=True,
                     blocks=None, within_block=True, cluster_threshold=None, tfce=False,
                     tfce_dh=_tfce.DH, batch_size=None, graph=None, map_blocks: Callable = map) -> PermutationResult:
    """FWE-corrected permutation test of one t or F contrast.

    Parameters
    ----------
    Y : array_like, (n_samples, n_voxels)
        Data, e.g. one effect map per subject, masked.
    X : array_like, (n_samples, n_regressors)
        Design matrix (include the intercept column if the model has one).
    contrast : array_like, (n_regressors,) or (n_rows, n_regressors)
        Estimable contrast weights: one row tests t, a 2-D array tests F
        (even with one row: F = t^2, no sign).
    mask : ndarray of bool, (x, y, z), optional
        The mask that gave ``Y``'s columns (``Y[:, j]`` is the j-th True
        voxel in C order, as ``volume[mask]``). Clusters and TFCE then use
        face (6-) connectivity, as nilearn. Not needed with ``graph``.
    n_perm : int
        Number of random resamplings (the observed data are added as one).
    seed : int
        Seed of :func:`numpy.random.default_rng`; results are deterministic
        for a seed, whatever ``batch_size``.
    two_sided : bool
        Test ``|t|`` (and negative clusters / TFCE) or only positive effects.
    blocks : array_like, (n_samples,), optional
        Exchangeability block of each row.
    within_block : bool
        True: permute rows within blocks (sign-flip rows). False: permute
        whole blocks, which must have equal sizes (one sign per block).
    cluster_threshold : float, optional
        Cluster-forming threshold in z units (e.g. 3.1); converted to the t
        with the same upper-tail probability at the model's dof. Clusters are
        ``t > thr`` (and ``t < -thr`` if two-sided).
    tfce : bool
        Also compute TFCE on the t map (E = 0.5, H = 2, step ``tfce_dh``).
    tfce_dh : float
        TFCE height step in t units (see :mod:`bids_app.inference.tfce`).
    batch_size : int, optional
        Resamplings per matrix product; default fits :data:`BATCH_BYTES`.
    graph : VoxelGraph, optional
        Neighbours among ``Y``'s columns for clusters and TFCE, in any space
        (mesh edges of surface vertices: :mod:`bids_app.inference.connectivity`);
        default: face neighbours of ``mask``.
    map_blocks : callable, optional
        ``map``-like ``(function, iterable) -> results in input order`` over
        blocks of resamplings: the builtin ``map`` (serial) or a process
        pool's ``map`` (several cores); the function and blocks pickle. All
        resamplings are drawn here from one generator and blocks are whole
        batches, so results are identical for any ``map_blocks``.

    Returns
    -------
    PermutationResult

    Raises
    ------
    DesignError
        Non-estimable contrast, no residual degrees of freedom, or unequal
        blocks for whole-block exchangeability.
    """
    Y = np.asarray(Y, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    contrast = np.asarray(contrast, dtype=np.float64)
    _check_inputs(Y, X, contrast, mask, n_perm, cluster_threshold, tfce, graph)
    n_samples, n_voxels = Y.shape
    design = _partition(X, contrast)

    unit = _unit_residuals(Y, design.nuisance)
    statistic = _Statistic(design, two_sided)
    t_obs = statistic.maps(statistic.reduce(design.effect.T @ unit), 0.0)

    rng = np.random.default_rng(seed)
    perms = signs = None
    if design.permute:
        perms = draw_resamplings(n_samples, n_perm, rng, sign_flip=False, blocks=blocks, within_block=within_block)
    if design.sign_flip:
        signs = draw_resamplings(n_samples, n_perm, rng, sign_flip=True, blocks=blocks, within_block=within_block)
    basis = np.column_stack([design.effect, design.nuisance])
    if batch_size is None:
        batch_size = int(np.clip(BATCH_BYTES // (4 * n_voxels * (basis.shape[1] + 2)), 1, 100))

    t_cluster = None
    if cluster_threshold is not None:
        t_cluster = statistic.threshold(cluster_threshold)
    if graph is None and (t_cluster is not None or tfce):
        graph = voxel_graph(mask)
    labeller = ClusterLabeller(graph) if t_cluster is not None else None

    task = _NullMaxima(basis=basis, unit32=unit.astype(np.float32), statistic=statistic, batch_size=batch_size,
                       graph=graph, labeller=labeller, t_cluster=t_cluster, tfce=tfce, tfce_dh=tfce_dh)
    del unit
    parts = list(map_blocks(task, _blocks_of_batches(perms, signs, n_perm, batch_size)))
    null = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

    result = PermutationResult(
        t=t_obs,
        logp_max_t=_fwe_logp(np.abs(t_obs) if statistic.two_sided else t_obs, null["max_t"]),
        null=null)
    if labeller is not None:
        label, sizes, masses = labeller.clusters(t_obs, t_cluster, statistic.two_sided)
        result.cluster_size, result.logp_max_size = _cluster_maps(label, sizes, null["max_size"])
        result.cluster_mass, result.logp_max_mass = _cluster_maps(label, masses, null["max_mass"])
    if tfce:
        result.tfce = _tfce.tfce(t_obs, graph, two_sided=statistic.two_sided, dh=tfce_dh)
        result.logp_max_tfce = _fwe_logp(np.abs(result.tfce), null["max_tfce"])

    result.info = {
        "statistic": design.test,
        "rank": int(design.effect.shape[1]),
        "n_perm": int(n_perm),
        "seed": int(seed),
        "scheme": " and ".join(name for name, used in (("permutation", design.permute),
                                                        ("sign-flip", design.sign_flip)) if used),
        "nuisance": "Freedman-Lane" if design.nuisance.shape[1] else "none",
        "two_sided": statistic.two_sided,
        "dof": int(design.dof),
        "exchangeability_blocks": None if blocks is None else int(np.unique(blocks).size),
        "within_block": bool(within_block),
        "n_possible": math.prod(_n_possible(n_samples, flip, blocks, within_block)
                                for flip, used in ((False, design.permute), (True, design.sign_flip)) if used),
        "cluster_threshold_z": None if cluster_threshold is None else float(cluster_threshold),
        f"cluster_threshold_{design.test}": t_cluster,
        "connectivity": graph.connectivity if graph is not None else None,
        "tfce": {"E": _tfce.E, "H": _tfce.H, "dh": tfce_dh} if tfce else None,
        "p_value": "(1 + #{null >= observed}) / (1 + n_perm)",
        "batch_size": int(batch_size),
    }
    if n_perm >= result.info["n_possible"]:
        warnings.warn(
            f"n_perm={n_perm} >= the {result.info['n_possible']} distinct resamplings of this "
            "design: draws repeat, and p-values cannot go below 1/n_possible", UserWarning,
            stacklevel=2)
    return result


def draw_resamplings(n_samples, n_perm, rng, *, sign_flip, blocks=None, within_block=True):
    """Random sign flips or permutations respecting exchangeability blocks.

    Parameters
    ----------
    n_samples, n_perm : int
    rng : numpy.random.Generator
    sign_flip : bool
        Draw signs instead of permutations.
    blocks : array_like, (n_samples,), optional
        Block label of each row; none means one block.
    within_block : bool
        Draw within blocks (True) or move whole blocks (False).

    Returns
    -------
    ndarray, (n_perm, n_samples)
        ``sign_flip``: float64 signs (+1/-1). Otherwise int64 permutations
        ``perm`` of the rows, each row ``i`` sent to ``perm[i]``, always
        within its block or (whole blocks) block onto block with the same
        position in the block.

    Raises
    ------
    DesignError
        Whole-block exchangeability with blocks of unequal sizes.
    """
    codes = np.zeros(n_samples, dtype=np.int64)
    if blocks is not None:
        codes = np.unique(np.asarray(blocks), return_inverse=True)[1].ravel()
    if within_block:
        if sign_flip:
            return rng.choice([-1.0, 1.0], size=(n_perm, n_samples))
        # sorting "block + uniform" shuffles rows inside each block only
        shuffled = np.argsort(codes + rng.random((n_perm, n_samples)), axis=1)
        perm = np.empty_like(shuffled)
        perm[:, np.argsort(codes, kind="stable")] = shuffled
        return perm
    sizes = np.bincount(codes)
    if np.unique(sizes).size != 1:
        raise DesignError(
            f"whole-block exchangeability needs blocks of equal size, got sizes {sizes.tolist()}")
    if sign_flip:
        return rng.choice([-1.0, 1.0], size=(n_perm, sizes.size))[:, codes]
    members = np.stack([np.flatnonzero(codes == b) for b in range(sizes.size)])
    order = np.argsort(rng.random((n_perm, sizes.size)), axis=1)
    perm = np.empty((n_perm, n_samples), dtype=np.int64)
    perm[:, members.ravel()] = members[order].reshape(n_perm, -1)
    return perm


def _blocks_of_batches(perms, signs, n_perm, batch_size) -> list[tuple]:
    """``(perms, signs)`` of at most :data:`N_BLOCKS` consecutive blocks of whole batches, of near-equal sizes."""
    starts = np.arange(0, n_perm, batch_size)
    bounds = [int(part[0]) for part in np.array_split(starts, min(N_BLOCKS, starts.size))] + [n_perm]
    return [(None if perms is None else perms[lo:hi], None if signs is None else signs[lo:hi])
            for lo, hi in zip(bounds[:-1], bounds[1:])]


@dataclass
class _NullMaxima:
    """Null maxima of a block of resamplings ``(perms, signs)``: a picklable function for ``map_blocks``.

    Batches of :attr:`batch_size` resamplings start at the block's start and
    blocks are whole batches, so every batch is the same whichever worker runs it.
    """

    basis: np.ndarray          # (n, rank + rank Z): tested space, then nuisance basis
    unit32: np.ndarray         # (n, v) float32 unit-norm residualised data
    statistic: "_Statistic"
    batch_size: int
    graph: object              # VoxelGraph for clusters and TFCE, else None
    labeller: object           # ClusterLabeller with a cluster-forming threshold, else None
    t_cluster: float | None
    tfce: bool
    tfce_dh: float

    def __call__(self, block) -> dict:
        perms, signs = block
        n = len(perms if perms is not None else signs)
        statistic = self.statistic
        null = {"max_t": np.empty(n)}
        if self.labeller is not None:
            null["max_size"], null["max_mass"] = np.empty(n), np.empty(n)
        if self.tfce:
            null["max_tfce"] = np.empty(n)
        for start in range(0, n, self.batch_size):
            batch = slice(start, min(start + self.batch_size, n))
            rows = _resampled_rows(self.basis, None if perms is None else perms[batch],
                                   None if signs is None else signs[batch])
            if self.tfce:   # TFCE needs the whole statistic maps
                a, b_squared = _projections(rows, self.unit32, statistic)
                null["max_t"][batch] = statistic.maxima(a, b_squared)
                null["max_tfce"][batch] = _tfce.max_tfce(statistic.maps(a, b_squared), self.graph,
                                                         two_sided=statistic.two_sided, dh=self.tfce_dh)
                supra = statistic.supra(a, b_squared, self.t_cluster) if self.labeller is not None else None
            else:
                null["max_t"][batch], supra = _blockwise(rows, self.unit32, statistic,
                                                         None if self.labeller is None else self.t_cluster)
            if supra is not None:
                null["max_size"][batch], null["max_mass"][batch] = self.labeller.max_measures(
                    *supra, self.t_cluster, statistic.two_sided, rows.shape[0])
        return null


@dataclass(frozen=True)
class _Design:
    """Orthonormal split of the design into tested space and nuisance."""

    effect: np.ndarray     # (n, r) orthonormal; for t (r = 1) q' Y has the sign of c' beta
    nuisance: np.ndarray   # (n, k) orthonormal basis of X @ null(C)
    permute: bool          # permute rows (exchangeable errors)
    sign_flip: bool        # flip signs (symmetric errors); both when an F tests the constant
    dof: int
    test: str              # "t" or "F"


def _partition(X, contrast) -> _Design:
    n_samples = X.shape[0]
    rank = np.linalg.matrix_rank(X)
    dof = n_samples - rank
    if dof < 1:
        raise DesignError(f"no residual degrees of freedom: {n_samples} samples, rank {rank}")
    test = "F" if contrast.ndim == 2 else "t"
    C = np.atleast_2d(contrast)
    pinv = np.linalg.pinv(X)
    if not np.allclose(C @ pinv @ X, C, atol=1e-8 * max(1.0, np.abs(C).max())):
        raise DesignError(f"contrast {contrast.tolist()} is not estimable with this design")
    null = linalg.null_space(C)
    nuisance = linalg.orth(X @ null) if null.shape[1] else np.zeros((n_samples, 0))
    # pinv' C' are the combinations of rows whose inner products with Y are C beta_hat
    effect = pinv.T @ C.T
    effect = effect - nuisance @ (nuisance.T @ effect)
    if test == "t":
        effect /= np.linalg.norm(effect)
    else:
        effect = linalg.orth(effect)
    tested = X @ C.T
    if effect.shape[1] == 1 and np.ptp(tested) <= 1e-10 * np.abs(tested).max():
        return _Design(effect, nuisance, False, True, dof, test)
    # an F whose tested space holds the constant (e.g. intercept and covariate
    # together): permuted rows keep the mean, so signs are flipped too (PALM's
    # EE + ISE), else the null would carry the mean effect and the test no power
    constant = np.ones(n_samples) / np.sqrt(n_samples)
    in_nuisance = np.linalg.norm(constant - nuisance @ (nuisance.T @ constant)) < 1e-8
    in_design = np.linalg.norm(constant - X @ (pinv @ constant)) < 1e-8
    return _Design(effect, nuisance, True, test == "F" and in_design and not in_nuisance, dof, test)


class _Statistic:
    """t or F from the projections of resampled unit-norm data (see the module docstring).

    ``reduce`` turns the effect projections (B, r, v) into ``a`` (t: signed,
    F: ``|a|^2``); ``maps`` and ``maxima`` turn ``a`` and ``|b|^2`` into
    statistic maps and per-map maxima.
    """

    def __init__(self, design: _Design, two_sided: bool):
        self.test, self.dof, self.rank = design.test, design.dof, design.effect.shape[1]
        self.two_sided = bool(two_sided) if self.test == "t" else False

    def reduce(self, effect_projections):
        if self.test == "t":
            return effect_projections[..., 0, :]
        a_squared = np.square(effect_projections[..., 0, :])
        for k in range(1, self.rank):
            a_squared += np.square(effect_projections[..., k, :])
        return a_squared

    def maps(self, a, b_squared):
        if self.test == "t":
            return _t_from_projections(a, b_squared, np.asarray(self.dof, dtype=a.dtype))
        return _f_from_projections(a, b_squared, self.dof, self.rank)

    def supra(self, a, b_squared, threshold):
        """The statistic where it may pass ``threshold`` (t: either sign if two-sided): ``maps, units, values``.

        ``maps, units`` index ``a`` in ``np.nonzero`` order; every unit over the
        threshold is among them. The statistic is formed only there: ``t^2 > thr^2``
        iff ``a^2 (dof + thr^2) + thr^2 |b|^2 > thr^2``, and ``F > thr`` iff
        ``|a|^2 (dof / rank + thr) + thr |b|^2 > thr``, tested with a margin far
        above float32 rounding, a few maps at a time so that the passes stay in cache.
        """
        if self.test == "t":
            gain, level = self.dof + threshold ** 2, threshold ** 2
        else:
            gain, level = self.dof / self.rank + threshold, threshold
        scalar = np.isscalar(b_squared)
        step = max(1, _CACHE_ELEMENTS // a.shape[1])
        maps, units, values = [], [], []
        # without nuisance the statistic grows with a (t, one-sided), |a| or |a|^2: one pass
        bound = (level / gain if self.test == "F" else np.sqrt(level / gain)) * (1 - _CANDIDATE_MARGIN)
        for first in range(0, a.shape[0], step):
            rows = slice(first, first + step)
            if scalar and not (self.test == "t" and self.two_sided):
                passing = a[rows] > bound
            elif scalar:
                passing = np.abs(a[rows]) > bound
            else:
                q = np.multiply(a[rows], a[rows]) if self.test == "t" else a[rows].copy()
                q *= gain
                q += level * b_squared[rows]
                passing = q > level * (1 - _CANDIDATE_MARGIN)
                if self.test == "t" and not self.two_sided:
                    passing &= a[rows] > 0
            i, j = np.divmod(np.flatnonzero(passing), a.shape[1])   # np.nonzero of 2-D arrays is 10x slower
            i += first
            maps.append(i)
            units.append(j)
            values.append(self.maps(a[i, j], b_squared if scalar else b_squared[i, j]))
        return np.concatenate(maps), np.concatenate(units), np.concatenate(values)

    def maxima(self, a, b_squared):
        if self.test == "t":
            return _max_t(a, b_squared, self.dof, self.two_sided)
        return _max_f(a, b_squared, self.dof, self.rank)

    def maxima_and_supra(self, a, b_squared, threshold):
        """:meth:`maxima` and :meth:`supra` of the same maps.

        A t with nuisance takes both from one :func:`_t_ratio` map (the
        candidates: ratio over ``threshold^2 / dof``, less the margin), which
        halves the elementwise passes of a cluster permutation; the maxima are
        :meth:`maxima`'s and the candidates hold every unit over the threshold,
        so the null distributions do not change.
        """
        if self.test != "t" or np.isscalar(b_squared):
            return self.maxima(a, b_squared), self.supra(a, b_squared, threshold)
        ratio = _t_ratio(a, b_squared, self.two_sided)
        passing = ratio > threshold ** 2 / self.dof * (1 - _CANDIDATE_MARGIN)
        i, j = np.divmod(np.flatnonzero(passing), a.shape[1])
        return (_t_from_ratio(ratio.max(axis=1), self.dof),
                (i, j, self.maps(a[i, j], b_squared[i, j])))

    def threshold(self, z):
        """The statistic with the upper-tail probability of ``z``.

        scipy.stats' ``t.isf(norm.sf(z), dof)`` and ``f.isf(norm.sf(z), rank, dof)``,
        written with the special functions they evaluate (tested equal): importing
        scipy.stats costs ~0.5 s of every permutation run.
        """
        from scipy import special

        tail = special.ndtr(-z)
        if self.test == "t":
            return float(-special.stdtrit(self.dof, tail))
        return float(special.fdtri(self.rank, self.dof, 1.0 - tail))


def _unit_residuals(Y, nuisance):
    """Residuals of Y on the nuisance space, scaled to unit norm per voxel (0 if null)."""
    resid = Y - nuisance @ (nuisance.T @ Y) if nuisance.shape[1] else Y.copy()
    norm = np.linalg.norm(resid, axis=0)
    scale = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 1e-12 * norm.max(initial=0))
    resid *= scale
    return resid


def _t_from_projections(a, b_squared, dof):
    """t from projections of unit-norm data: effect ``a`` and nuisance ``|b|^2``."""
    # in place on one fresh array: these (batch, voxels) passes dominate maxT time
    t = np.multiply(a, a)
    t += b_squared
    np.subtract(1.0, t, out=t)
    np.maximum(t, np.finfo(np.float32).tiny, out=t)
    np.divide(dof, t, out=t)
    np.sqrt(t, out=t)
    t *= a
    return t


def _f_from_projections(a_squared, b_squared, dof, rank):
    """F from projections of unit-norm data: effect ``|a|^2`` and nuisance ``|b|^2``."""
    f = np.subtract(1.0, a_squared)
    f -= b_squared
    np.maximum(f, np.finfo(np.float32).tiny, out=f)
    np.divide(a_squared, f, out=f)
    f *= dof / rank
    return f


def _max_f(a_squared, b_squared, dof, rank):
    """Largest F of each map (F increases with ``|a|^2 / (1 - |a|^2 - |b|^2)``)."""
    return _f_from_projections(a_squared, b_squared, dof, rank).max(axis=1).astype(np.float64)


def _resampled_rows(basis, perms, signs):
    """The basis of a batch of resamplings, float32 (B, n_basis, n_samples).

    Resampling the basis rows instead of the data gives the same inner
    products (the draws are orthogonal), on an array of n_samples x n_basis
    instead of n_samples x n_voxels. ``perms`` (B, n) int and/or ``signs``
    (B, n) float: both draws are independent, so signs may act after the rows move.
    """
    if perms is None:
        stacked = signs[:, :, None] * basis[None]          # (B, n, p)
    else:
        stacked = basis[perms]                             # (B, n, p): rows of basis permuted
        if signs is not None:
            stacked *= signs[:, :, None]
    return np.ascontiguousarray(stacked.transpose(0, 2, 1), dtype=np.float32)


def _projections(rows, unit32, statistic):
    """Projections of resampled unit-norm data: ``a`` (B, v; see :class:`_Statistic`) and ``|b|^2`` (B, v) or 0."""
    n_draws, n_basis, n_samples = rows.shape
    proj = (rows.reshape(n_draws * n_basis, n_samples) @ unit32).reshape(n_draws, n_basis, -1)
    a = statistic.reduce(proj[:, :statistic.rank])
    if n_basis == statistic.rank:
        return a, 0.0
    b_squared = np.square(proj[:, statistic.rank])
    for k in range(statistic.rank + 1, n_basis):
        b_squared += np.square(proj[:, k])
    return a, b_squared


def _blockwise(rows, unit32, statistic, threshold=None):
    """Per-map maxima of a batch (:meth:`_Statistic.maxima`) and, given a ``threshold``, its
    :meth:`_Statistic.supra` units, over blocks of :data:`VOXEL_BLOCK` voxels.

    The elementwise passes are memory-bound on whole (batch, voxels) arrays;
    on blocks their temporaries stay in cache, which halved the CPU time of
    1000 Freedman-Lane resamplings of 196k voxels. Each block's product is
    the same columns of the whole product (BLAS sums over the samples), so
    results do not depend on the blocks.

    Returns
    -------
    best : ndarray, (n_maps,)
    supra : tuple of (maps, units, values) or None
        Sorted by map, then unit.
    """
    best = np.full(rows.shape[0], -np.inf)
    found = []
    # one BLAS thread: on block-sized products, threads cost more in
    # synchronisation than they save (2-core machine, loaded or not)
    with one_blas_thread():
        for start in range(0, unit32.shape[1], VOXEL_BLOCK):
            a, b_squared = _projections(rows, unit32[:, start:start + VOXEL_BLOCK], statistic)
            if threshold is None:
                np.maximum(best, statistic.maxima(a, b_squared), out=best)
                continue
            maxima, (maps, units, values) = statistic.maxima_and_supra(a, b_squared, threshold)
            np.maximum(best, maxima, out=best)
            found.append((maps, units + start, values))
    if threshold is None:
        return best, None
    maps, units, values = (np.concatenate(parts) for parts in zip(*found))
    order = np.argsort(maps * unit32.shape[1] + units, kind="stable")
    return best, (maps[order], units[order], values[order])


def _max_t(a, b_squared, dof, two_sided):
    """Largest t (|t| if two-sided) of each map, without forming the t maps.

    Two-sided, only the largest of ``t^2 / dof`` (:func:`_t_ratio`) is
    converted; one-sided, the largest of its signed form; with no nuisance,
    t increases with ``a`` itself.
    """
    if np.isscalar(b_squared):
        extreme = a.max(axis=1).astype(np.float64)
        if two_sided:
            extreme = np.maximum(extreme, -a.min(axis=1))
        return _t_from_projections(extreme, 0.0, dof)
    return _t_from_ratio(_t_ratio(a, b_squared, two_sided).max(axis=1), dof)


def _t_ratio(a, b_squared, two_sided):
    """``t^2 / dof = a^2 / (1 - a^2 - |b|^2)`` per map and unit, with t's sign unless two-sided.

    Each step is one in-place pass: these (batch, voxels) passes are the maxT time.
    """
    ratio = np.multiply(a, a)
    denominator = np.subtract(1.0, ratio)
    denominator -= b_squared
    np.maximum(denominator, np.finfo(np.float32).tiny, out=denominator)
    if not two_sided:
        np.copysign(ratio, a, out=ratio)
    ratio /= denominator
    return ratio


def _t_from_ratio(extreme, dof):
    extreme = extreme.astype(np.float64)
    return np.sign(extreme) * np.sqrt(dof * np.abs(extreme))


def _cluster_maps(label, values, null_max):
    """Per-voxel cluster measure and its FWE -log10 p (0 outside clusters)."""
    in_cluster = label > 0
    index = label[in_cluster] - 1
    measure, logp = np.zeros(label.size), np.zeros(label.size)
    measure[in_cluster] = values[index]
    logp[in_cluster] = _fwe_logp(values, null_max)[index]
    return measure, logp


def _fwe_logp(observed, null_max):
    """-log10 of (1 + #{null_max >= observed}) / (1 + n_perm), elementwise."""
    null_sorted = np.sort(null_max)
    n_ge = null_sorted.size - np.searchsorted(null_sorted, observed, side="left")
    return -np.log10((1.0 + n_ge) / (1.0 + null_sorted.size))


def _n_possible(n_samples, sign_flip, blocks, within_block):
    """Number of distinct resamplings the scheme can draw (an exact int)."""
    codes = np.zeros(n_samples, dtype=np.int64)
    if blocks is not None:
        codes = np.unique(np.asarray(blocks), return_inverse=True)[1].ravel()
    sizes = np.bincount(codes)
    if sign_flip:
        return 2 ** (n_samples if within_block else sizes.size)
    if within_block:
        return math.prod(math.factorial(int(s)) for s in sizes)
    return math.factorial(sizes.size)


def _check_inputs(Y, X, contrast, mask, n_perm, cluster_threshold, tfce, graph):
    if Y.ndim != 2 or X.ndim != 2 or Y.shape[0] != X.shape[0]:
        raise ValueError(f"Y (n, v) and X (n, p) must share n; got {Y.shape} and {X.shape}")
    if contrast.ndim not in (1, 2) or contrast.shape[-1] != X.shape[1]:
        raise ValueError(f"contrast must have shape ({X.shape[1]},) or (n_rows, {X.shape[1]}), got {contrast.shape}")
    if not np.any(contrast):
        raise ValueError("contrast weights are all zero")
    if n_perm < 1:
        raise ValueError(f"n_perm must be >= 1, got {n_perm}")
    if not np.all(np.isfinite(Y)):
        raise ValueError("Y has non-finite values: mask them out first")
    if graph is not None:
        if graph.n_voxels != Y.shape[1]:
            raise ValueError(f"graph has {graph.n_voxels} units, Y {Y.shape[1]} columns")
    elif cluster_threshold is not None or tfce:
        if mask is None:
            raise ValueError("a mask is needed for cluster or TFCE inference")
        if np.asarray(mask).ndim != 3 or int(np.count_nonzero(mask)) != Y.shape[1]:
            raise ValueError("mask must be 3D with one True voxel per column of Y")
