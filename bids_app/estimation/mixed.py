"""Mixed-effects group model using the lower level's variance maps.

Per voxel, with ``n`` inputs (subjects, sessions or studies)::

    y_i = x_i b + e_i,    e_i ~ N(0, s2_i + tau2),    i = 1..n

``s2_i`` is the known within-level sampling variance of input ``i`` (the
``variance`` maps of the level below) and ``tau2 >= 0`` the unknown
between-input variance. This is the random-effects meta-analysis model, the
model of FSL FLAME1 and AFNI 3dMEMA. ``tau2`` maximises the restricted
(default) or full likelihood: candidates located on a grid are refined by
safeguarded Newton iterations, vectorised over voxels. ``b`` is then the
weighted least-squares estimate with weights ``1 / (s2_i + tau2)``.
Inference uses ``t = c b / sqrt(c Cov(b) c')`` with ``dof = n - rank(X)``.
docs/mixed_effects.md gives the likelihoods and the validation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bids_app.errors import DesignError
from bids_app.estimation.base import ContrastResult
from bids_app.estimation.contrasts import check_estimable, contrast_matrix, row_basis, row_space, stat_to_z_p
from bids_app.estimation.ols import DEFAULT_CHUNK_BYTES, TINY, check_data, check_design, voxel_chunks

METHODS = ("reml", "ml")

#: Grid points used to locate the global maximum of the likelihood of tau2.
N_GRID = 20


def column_basis(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal basis of the column space of ``X`` and the map back to ``X``'s coefficients.

    Estimating in the basis ``Q`` (n, rank) makes ``Q' W Q`` invertible for a
    rank-deficient ``X`` and well conditioned for any ``X``. The REML
    likelihood is unchanged up to a constant, since ``X = Q R`` gives
    ``log|X'WX| = log|Q'WQ| + const`` for full-rank ``X``.

    Returns
    -------
    Q : ndarray, shape (n_samples, rank)
    to_beta : ndarray, shape (n_regressors, rank)
        ``beta = to_beta @ g`` is the minimum-norm ``beta`` with
        ``X beta = Q g``.
    """
    u, s, _ = np.linalg.svd(X, full_matrices=False)
    rank = int(np.sum(s > s[0] * max(X.shape) * np.finfo(np.float64).eps))
    Q = u[:, :rank]
    return Q, np.linalg.pinv(X) @ Q


def _gram(Q: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``Q' diag(w[:, v]) Q`` for every voxel ``v``: shape (n_voxels, rank, rank)."""
    return np.einsum("ir,iv,is->vrs", Q, w, Q)


def wls_coefficients(Q: np.ndarray, w: np.ndarray, y: np.ndarray):
    """Weighted least squares in basis ``Q`` for every voxel.

    Parameters
    ----------
    Q : ndarray, shape (n_samples, rank)
    w, y : ndarray, shape (n_samples, n_voxels)
        Weights (inverse variances) and data.

    Returns
    -------
    g : ndarray, shape (rank, n_voxels)
    A_inv : ndarray, shape (n_voxels, rank, rank)
        ``(Q' W Q)^-1``, the covariance of ``g``.
    """
    A_inv = np.linalg.inv(_gram(Q, w))
    # einsum, not matmul: BLAS (threads) is slow for these skinny products.
    g = np.einsum("vrs,sv->rv", A_inv, np.einsum("is,iv->sv", Q, w * y))
    return g, A_inv


def coefficient_covariance(Q: np.ndarray, s2: np.ndarray, tau2: np.ndarray) -> np.ndarray:
    """Covariance of the WLS coefficients ``g`` in basis ``Q``: ``(Q' V^-1 Q)^-1``.

    Parameters
    ----------
    Q : ndarray, shape (n_samples, rank)
    s2 : ndarray, shape (n_samples, n_voxels)
    tau2 : ndarray, shape (n_voxels,)

    Returns
    -------
    ndarray, shape (n_voxels, rank, rank)
    """
    return np.linalg.inv(_gram(Q, 1.0 / (s2 + tau2)))


def _weighted_residuals(Q, y, w):
    """``u = W r = P y`` (WLS residuals times weights) and ``A^-1 = (Q'WQ)^-1``."""
    g, A_inv = wls_coefficients(Q, w, y)
    return w * (y - np.einsum("ir,rv->iv", Q, g)), A_inv


def _trace_p(Q, w, A_inv, method):
    """``tr W`` (ML) or ``tr P = sum_i w_i - w_i^2 q_i' A^-1 q_i`` (REML)."""
    if method == "ml":
        return w.sum(0)
    leverage = np.einsum("ir,vrs,is->iv", Q, A_inv, Q)
    return w.sum(0) - np.einsum("iv,iv,iv->v", w, w, leverage)


def score(Q, y, s2, tau2, method="reml"):
    """``l'(tau2)``, the derivative of :func:`log_likelihood` alone (cheaper).

    Parameters and shapes as :func:`log_likelihood`.
    """
    w = 1.0 / (s2 + tau2)
    u, A_inv = _weighted_residuals(Q, y, w)
    return 0.5 * (np.einsum("iv,iv->v", u, u) - _trace_p(Q, w, A_inv, method))


def log_likelihood(Q, y, s2, tau2, method="reml"):
    """Profile log-likelihood of ``tau2`` with its first two derivatives.

    With ``V = diag(s2 + tau2)``, ``W = V^-1``, ``A = Q' W Q``, ``r`` the WLS
    residuals and ``P = W - W Q A^-1 Q' W`` (so that ``P y = W r``,
    ``r' W r = y' P y`` and ``dP/dtau2 = -P^2``), up to constants::

        ML:   l   = -1/2 [ log|V| + y' P y ]
              l'  =  1/2 [ y' P^2 y - tr W ]
              -l'' = y' P^3 y - 1/2 tr W^2
        REML: l   = -1/2 [ log|V| + log|A| + y' P y ]
              l'  =  1/2 [ y' P^2 y - tr P ]
              -l'' = y' P^3 y - 1/2 tr P^2

    Parameters
    ----------
    Q : ndarray, shape (n_samples, rank)
        Orthonormal basis of the design's column space (:func:`column_basis`).
    y, s2 : ndarray, shape (n_samples, n_voxels)
        Data and within-level variances (data units squared), float64.
    tau2 : ndarray, shape (n_voxels,)
        Between-level variance (data units squared), >= 0.
    method : {"reml", "ml"}

    Returns
    -------
    loglik, score, curvature : ndarray, shape (n_voxels,)
        ``l``, ``l'`` and ``-l''``.
    """
    v = s2 + tau2
    w = 1.0 / v
    u, A_inv = _weighted_residuals(Q, y, w)
    loglik = -0.5 * (np.log(v).sum(0) + np.einsum("iv,iv,iv->v", u, u, v))  # r'Wr = u'Vu
    first = 0.5 * (np.einsum("iv,iv->v", u, u) - _trace_p(Q, w, A_inv, method))
    # y'P^3y = u'Pu = u'Wu - (Q'Wu)' A^-1 (Q'Wu)
    qwu = np.einsum("ir,iv,iv->rv", Q, w, u)
    upu = np.einsum("iv,iv,iv->v", w, u, u) - np.einsum("rv,vrs,sv->v", qwu, A_inv, qwu)
    w2 = w * w
    if method == "ml":
        return loglik, first, upu - 0.5 * w2.sum(0)
    loglik += 0.5 * np.linalg.slogdet(A_inv)[1]
    # tr P^2 = tr W^2 - 2 tr(A^-1 Q'W^3Q) + tr((A^-1 Q'W^2Q)^2)
    m2 = A_inv @ _gram(Q, w2)
    trace_p2 = (
        w2.sum(0)
        - 2 * np.einsum("vrs,vsr->v", A_inv, _gram(Q, w2 * w))
        + np.einsum("vrs,vsr->v", m2, m2)
    )
    return loglik, first, upu - 0.5 * trace_p2


def tau2_upper_bound(Q, y, s2):
    """A ``tau2`` beyond which the ML and REML scores are negative.

    With ``RSS`` the OLS residual sum of squares, ``m = n - rank`` and
    ``s_max = max(s2)``: the WLS residuals minimise ``sum w r^2``, so
    ``y'P^2y = sum w^2 r^2 <= RSS / tau2^2``; and
    ``tr W >= tr P >= m / (s_max + tau2)``. Both scores are therefore <= 0
    from ``m tau2^2 >= RSS (s_max + tau2)``, i.e. from
    ``T = (RSS + sqrt(RSS^2 + 4 m RSS s_max)) / (2 m)``: every maximum lies
    in ``[0, T]``.

    Parameters
    ----------
    Q : ndarray, shape (n_samples, rank)
    y, s2 : ndarray, shape (n_samples, n_voxels)

    Returns
    -------
    ndarray, shape (n_voxels,)
    """
    n, rank = Q.shape
    m = n - rank
    resid = y - np.einsum("ir,rv->iv", Q, np.einsum("jr,jv->rv", Q, y))
    rss = np.einsum("iv,iv->v", resid, resid)
    return (rss + np.sqrt(rss**2 + 4 * m * rss * s2.max(0))) / (2 * m)


def estimate_tau2(Q, y, s2, method="reml", tol=1e-8, max_iter=100, n_grid=N_GRID):
    """Global maximum of the (restricted) likelihood over ``tau2 >= 0``, all voxels at once.

    The likelihood of ``tau2`` can have several local maxima when the ``s2``
    differ a lot between inputs (real meta-analysis data do), so:

    1. **Locate**: evaluate ``l'`` on ``n_grid`` points from 0 to
       :func:`tau2_upper_bound`, uniform in ``eta = log(tau2 + min(s2))``.
       The candidates are ``tau2 = 0`` where ``l'(0) <= 0`` (a boundary
       maximum) and every grid interval where ``l'`` changes from > 0 to
       <= 0 (each brackets a local maximum).
    2. **Refine** every bracket with :func:`refine_tau2` (safeguarded Newton).
    3. **Choose** per voxel the candidate with the highest likelihood.

    A local maximum is missed only if it lies between two grid points that
    both bracket no sign change, i.e. a peak narrower than one grid step
    (a factor ``((T + min s2) / min s2) ** (1 / (n_grid - 1))`` in
    ``tau2 + min(s2)``).

    Parameters
    ----------
    Q : ndarray, shape (n_samples, rank)
    y, s2 : ndarray, shape (n_samples, n_voxels)
    method : {"reml", "ml"}
    tol : float
        Convergence tolerance relative to ``tau2 + mean(s2)``.
    max_iter : int
        Newton iterations per bracket.
    n_grid : int

    Returns
    -------
    tau2 : ndarray, shape (n_voxels,)
    n_iter : ndarray of int, shape (n_voxels,)
        Newton iterations of the chosen candidate (0 at the boundary).
    converged : ndarray of bool, shape (n_voxels,)
    """
    floor = s2.min(0)
    upper = tau2_upper_bound(Q, y, s2)
    grid = np.exp(np.linspace(np.log(floor), np.log(upper + floor), n_grid)) - floor
    grid[0] = 0.0
    ll0, score0, _ = log_likelihood(Q, y, s2, grid[0], method)
    rising = np.empty(grid.shape, dtype=bool)
    rising[0] = score0 > 0
    for k in range(1, n_grid - 1):
        rising[k] = score(Q, y, s2, grid[k], method) > 0
    rising[-1] = False  # exact at the upper bound
    # Candidate 0 is the boundary; candidate k >= 1 the bracket [grid[k-1], grid[k]].
    is_candidate = np.vstack([~rising[:1], rising[:-1] & ~rising[1:]])
    k, v = np.nonzero(is_candidate[1:])
    k += 1
    tau2_c, iter_c, conv_c = refine_tau2(
        Q, y[:, v], s2[:, v], grid[k - 1, v], grid[k, v], method, tol, max_iter
    )
    ll_c = log_likelihood(Q, y[:, v], s2[:, v], tau2_c, method)[0]

    # Per voxel, the interior candidate of highest likelihood: sort by voxel
    # then likelihood and keep the last of each voxel's run.
    order = np.lexsort((ll_c, v))
    last = order[np.append(v[order][1:] != v[order][:-1], True)] if order.size else order
    wins = ll_c[last] > np.where(is_candidate[0, v[last]], ll0[v[last]], -np.inf)
    last = last[wins]
    tau2 = np.zeros(y.shape[1])
    n_iter = np.zeros(y.shape[1], dtype=int)
    converged = np.ones(y.shape[1], dtype=bool)
    tau2[v[last]], n_iter[v[last]], converged[v[last]] = tau2_c[last], iter_c[last], conv_c[last]
    return tau2, n_iter, converged


def refine_tau2(Q, y, s2, lo, hi, method="reml", tol=1e-8, max_iter=100):
    """Local maximum of the likelihood in brackets with ``l'(lo) > 0 >= l'(hi)``.

    Safeguarded Newton (as ``rtsafe`` in Numerical Recipes), vectorised over
    voxels: from the bracket's middle, take a Newton step in
    ``eta = log(tau2 + min(s2))`` when the likelihood is locally concave in
    ``eta`` and the step stays inside the bracket, else bisect the bracket
    in ``eta``; then shrink the bracket with the sign of the score. Newton in
    ``eta`` rather than ``tau2`` because the likelihood is close to concave
    in the log of the variance: steps in ``tau2`` from below the maximum
    undershoot. Bisection guarantees convergence; Newton makes it quadratic.
    A voxel stops when the step or the bracket is below
    ``tol * (tau2 + mean(s2))``.

    Parameters
    ----------
    Q : ndarray, shape (n_samples, rank)
    y, s2 : ndarray, shape (n_samples, n_voxels)
    lo, hi : ndarray, shape (n_voxels,)
    method : {"reml", "ml"}
    tol : float
    max_iter : int

    Returns
    -------
    tau2 : ndarray, shape (n_voxels,)
    n_iter : ndarray of int, shape (n_voxels,)
    converged : ndarray of bool, shape (n_voxels,)
    """
    floor, scale = s2.min(0), s2.mean(0)
    x = np.sqrt((lo + floor) * (hi + floor)) - floor
    tau2 = x.copy()
    n_iter = np.zeros(x.shape, dtype=int)
    converged = np.zeros(x.shape, dtype=bool)
    active = np.arange(x.size)
    for _ in range(max_iter):
        if active.size == 0:
            break
        _, slope, curvature = log_likelihood(Q, y[:, active], s2[:, active], x, method)
        n_iter[active] += 1
        lo = np.where(slope > 0, x, lo)
        hi = np.where(slope > 0, hi, x)
        f = floor[active]
        shift = x + f
        # d tau2 / d eta = tau2 + floor, so l'_eta = l' (tau2 + floor) and
        # -l''_eta = (tau2 + floor) (-l'' (tau2 + floor) - l').
        curvature_eta = curvature * shift - slope
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            newton = shift * np.exp(slope / curvature_eta) - f
        use_newton = (curvature_eta > 0) & (newton > lo) & (newton < hi)
        bisection = np.sqrt((lo + f) * (hi + f)) - f
        new = np.where(slope == 0, x, np.where(use_newton, newton, bisection))
        limit = tol * (new + scale[active])
        done = (np.abs(new - x) <= limit) | (hi - lo <= limit)
        tau2[active], converged[active] = new, done
        active, x, lo, hi = active[~done], new[~done], lo[~done], hi[~done]
    return tau2, n_iter, converged


def _valid_chunk(Y, S2, sl):
    """Float64 data and variances of one chunk, and which voxels are usable."""
    y = np.asarray(Y[:, sl], dtype=np.float64)
    s2 = np.asarray(S2[:, sl], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.all(np.isfinite(y), axis=0) & np.all(np.isfinite(s2) & (s2 > 0), axis=0)
    return y, s2, ok


class MixedEffectsEstimator:
    """Mixed effects with known lower-level variances (FLAME1 / 3dMEMA model).

    Parameters
    ----------
    method : {"reml", "ml"}, default="reml"
        Likelihood maximised for ``tau2``. REML accounts for the regressors
        estimated and is less biased towards 0 for small ``n``.
    tol : float, default=1e-8
        Convergence tolerance of ``tau2``, relative to ``tau2 + mean(s2)``.
    max_iter : int, default=100
        Newton iterations per bracket (see :func:`estimate_tau2`).
    chunk_bytes : int, default=DEFAULT_CHUNK_BYTES
        Working memory per chunk of voxels, in bytes.
    """

    name = "mixed"

    def __init__(self, method="reml", tol=1e-8, max_iter=100, chunk_bytes=DEFAULT_CHUNK_BYTES):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.method = method
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.chunk_bytes = int(chunk_bytes)

    def fit(self, Y, X, variances=None) -> MixedEffectsFit:
        """Estimate ``tau2``, then ``beta`` by weighted least squares, per voxel.

        Parameters
        ----------
        Y : array, shape (n_samples, n_voxels)
            Lower-level effects, any float dtype (cast to float64 per chunk).
        X : array, shape (n_samples, n_regressors)
            Design; may be rank deficient (contrasts must then be estimable).
        variances : array, shape (n_samples, n_voxels)
            Sampling variances of ``Y`` (units of ``Y`` squared). Not copied:
            contrasts read them again, so do not modify them after fitting.
            A voxel where any value of ``Y`` or ``variances`` is non-finite,
            or any variance is <= 0, gets NaN outputs.

        Returns
        -------
        MixedEffectsFit
        """
        if variances is None:
            raise DesignError("mixed effects need the lower-level variance maps")
        X = check_design(X)
        n, p = X.shape
        Y = check_data(Y, n)
        S2 = check_data(variances, n, what="variances")
        if S2.shape != Y.shape:
            raise DesignError(f"variances have shape {S2.shape}, data {Y.shape}")
        Q, to_beta = column_basis(X)
        dof = n - Q.shape[1]
        if dof < 1:
            raise DesignError(
                f"no residual degrees of freedom: {n} samples for a design of rank {Q.shape[1]}"
            )

        n_voxels = Y.shape[1]
        tau2 = np.full(n_voxels, np.nan)
        beta = np.full((p, n_voxels), np.nan)
        n_iter = np.zeros(n_voxels, dtype=int)
        converged = np.zeros(n_voxels, dtype=bool)
        # About a dozen float64 (n, chunk) temporaries per likelihood evaluation.
        for sl in voxel_chunks(n_voxels, 8 * (12 * n + 4 * Q.shape[1] ** 2), self.chunk_bytes):
            y, s2, ok = _valid_chunk(Y, S2, sl)
            if not ok.any():
                continue
            y, s2 = y[:, ok], s2[:, ok]
            t2, it, conv = estimate_tau2(Q, y, s2, self.method, self.tol, self.max_iter)
            g = wls_coefficients(Q, 1.0 / (s2 + t2), y)[0]
            idx = np.arange(sl.start, sl.stop)[ok]
            tau2[idx], n_iter[idx], converged[idx] = t2, it, conv
            beta[:, idx] = np.einsum("pr,rv->pv", to_beta, g)
        return MixedEffectsFit(
            design=X,
            basis=Q,
            to_beta=to_beta,
            variances=S2,
            beta=beta,
            tau2=tau2,
            dof=float(dof),
            method=self.method,
            info={"n_iter": n_iter, "converged": converged},
            chunk_bytes=self.chunk_bytes,
        )


@dataclass(frozen=True)
class MixedEffectsFit:
    """Result of :meth:`MixedEffectsEstimator.fit`.

    Attributes
    ----------
    design : ndarray, shape (n_samples, n_regressors)
    basis, to_beta : ndarray
        See :func:`column_basis`.
    variances : ndarray, shape (n_samples, n_voxels)
        The caller's within-level variances (a reference, not a copy).
    beta : ndarray, shape (n_regressors, n_voxels)
        WLS coefficients at the estimated ``tau2`` (NaN for unusable voxels).
    tau2 : ndarray, shape (n_voxels,)
        Between-level variance (units of the data squared).
    dof : float
        n_samples - rank(X).
    method : {"reml", "ml"}
    info : dict
        ``n_iter`` and ``converged`` per voxel.
    chunk_bytes : int
        Working memory per chunk when evaluating contrasts.
    """

    design: np.ndarray
    basis: np.ndarray
    to_beta: np.ndarray
    variances: np.ndarray
    beta: np.ndarray
    tau2: np.ndarray
    dof: float
    method: str
    info: dict = field(default_factory=dict)
    chunk_bytes: int = DEFAULT_CHUNK_BYTES

    def contrast(self, weights, test: str = "t") -> ContrastResult:
        """Evaluate a t contrast (n_regressors,) or an F contrast (n_rows, n_regressors).

        ``t = c b / sqrt(c Cov(b) c')`` and
        ``F = (C b)' [C Cov(b) C']^+ (C b) / rank(C)`` with
        ``Cov(b) = (X' V^-1 X)^+`` at the estimated ``tau2``; error dof
        ``n - rank(X)``, numerator dof ``rank(C)``.
        """
        C = contrast_matrix(weights, test, self.beta.shape[0])
        check_estimable(C, row_space(self.design))
        L = row_basis(C)
        # Contrasts in the coefficients g of the basis: C b = (C to_beta) g.
        C_g, L_g = C @ self.to_beta, L @ self.to_beta
        n_voxels = self.tau2.size
        variance = np.full((C.shape[0], n_voxels), np.nan)
        stat = np.full(n_voxels, np.nan)
        Q = self.basis
        bytes_per_voxel = 8 * (2 * Q.shape[0] + 2 * Q.shape[1] ** 2)
        for sl in voxel_chunks(n_voxels, bytes_per_voxel, self.chunk_bytes):
            idx = np.arange(sl.start, sl.stop)[np.isfinite(self.tau2[sl])]
            if idx.size == 0:
                continue
            s2 = np.asarray(self.variances[:, idx], dtype=np.float64)
            cov_g = coefficient_covariance(Q, s2, self.tau2[idx])
            variance[:, idx] = np.einsum("kr,vrs,ks->kv", C_g, cov_g, C_g)
            if test == "F":
                Lb = L @ self.beta[:, idx]
                cov_l = np.einsum("kr,vrs,ls->vkl", L_g, cov_g, L_g)
                solved = np.linalg.solve(cov_l, Lb.T[..., None])[..., 0]
                stat[idx] = np.einsum("kv,vk->v", Lb, solved)
        effect = C @ self.beta
        if test == "t":
            effect, variance = effect[0], variance[0]
            stat = effect / np.sqrt(np.maximum(variance, TINY))
        else:
            stat /= L.shape[0]
        z, p = stat_to_z_p(stat, test, self.dof, L.shape[0])
        return ContrastResult(
            test=test, effect=effect, variance=variance, stat=stat, z=z, p=p,
            dof=self.dof, dof_num=L.shape[0], info={"method": self.method},
        )

    def model_maps(self) -> dict[str, np.ndarray]:
        """``{"tau2": ...}``: between-level variance, (n_voxels,)."""
        return {"tau2": self.tau2}
