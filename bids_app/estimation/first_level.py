"""Run-level fMRI GLM: OLS or AR(p) prewhitened least squares.

The AR models reproduce nilearn's :func:`nilearn.glm.first_level.run_glm`
(nilearn 0.11-0.14, ``noise_model="ar1"``, ``"ar2"``, ...) so results can be
checked against ``FirstLevelModel``:

1. OLS fit; AR coefficients of each voxel's residuals by Yule-Walker (biased
   autocovariances), the residuals centred on their *global* mean (as nilearn).
2. AR(1): ``rho`` truncated toward zero onto a grid of step ``1 / ar_bins``.
   AR(p), p >= 2: the coefficient vectors are clustered by k-means
   (scikit-learn's ``KMeans``, ``min(ar_bins, n_voxels)`` clusters,
   ``n_init=10``, seeded) and each voxel takes its cluster centre; clusters
   whose centres agree to 2 decimals are merged and use the centre of the
   first voxel's cluster (nilearn's labels are those rounded centres).
3. For each distinct coefficient vector, the design and the data are whitened
   with ``e[t] - sum_k rho_k * e[t-k]`` (the first ``k`` samples keep the
   terms that exist, as nilearn's ``ARModel``) and refitted by least squares.

Unlike nilearn, which fits one model object per coefficient value and keeps
every residual, voxels are processed in chunks, each value's whitened design
and pseudo-inverse are computed once, and all of a value's voxels are solved
in one matrix product, in float64 throughout. AR(p >= 2) reads the data twice
(coefficients first, since the clustering needs all voxels).

Percent-signal-change scaling (nilearn's default ``signal_scaling=0``) is a
separate step, :func:`scale_timeseries`, applied by the caller.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits

from bids_app.blas import one_blas_thread
from bids_app.errors import DesignError, InputDataError
from bids_app.estimation.base import ContrastResult
from bids_app.estimation.contrasts import check_estimable, contrast_matrix, f_result, row_space
from bids_app.estimation.conversions import t_to_z_p
from bids_app.spec.model import ar_order



def scale_timeseries(Y):
    """Scale each voxel to percent signal change about its temporal mean.

    Exactly nilearn's ``mean_scaling`` (``FirstLevelModel(signal_scaling=0)``):
    ``100 * (Y / mean - 1)``, with means below 1 replaced by 1 so that
    background or demeaned voxels are not blown up. Computed in the
    precision of ``Y``, as nilearn computes it on what its masker gives
    (float32 for integer images): AR(1) coefficients are truncated onto a
    grid of 1/100, so float32 rounding that nilearn has and float64 has not
    would move voxels into other bins (differences of 1e-2 in t).

    Parameters
    ----------
    Y : array_like, (n_scans, n_voxels)
        BOLD signal in scanner units; float32 or float64 (other types as
        float64). C-ordered, as nilearn's masker gives it, for nilearn's
        float32 means: numpy sums axis 0 of a C-ordered array row after row.

    Returns
    -------
    Y_psc : ndarray, (n_scans, n_voxels), dtype of ``Y``
        Signal in percent of the voxel mean, with zero temporal mean.
    mean : ndarray, (n_voxels,), dtype of ``Y``
        The temporal mean used (after the floor at 1).
    """
    Y = np.asarray(Y)
    if Y.dtype not in (np.float32, np.float64):
        Y = Y.astype(np.float64)
    mean = np.maximum(Y.mean(axis=0), Y.dtype.type(1))
    return Y.dtype.type(100) * (Y / mean - Y.dtype.type(1)), mean


@dataclass(frozen=True)
class FirstLevelEstimator:
    """Estimator for a single run: OLS or AR(p) prewhitened GLM.

    Parameters
    ----------
    noise_model : str
        ``"ols"``, or ``"ar<p>"`` for an autoregressive model of order p
        (``"ar1"``, ``"ar2"``, ...), as nilearn names them.
    ar_bins : int
        AR(1): coefficients are truncated to multiples of ``1 / ar_bins``
        (nilearn's ``bins``). AR(p >= 2): number of k-means clusters
        (at most one per voxel). The design is whitened once per value.
    chunk_size : int
        Voxels processed together; bounds memory to about
        ``8 * n_scans * chunk_size * 8`` bytes (~100 MB for 200 scans).
    random_state : int
        Seed of the k-means clustering of AR(p >= 2) coefficients (nilearn's
        ``random_state``); unused for OLS and AR(1).
    """

    noise_model: str = "ar1"
    ar_bins: int = 100
    chunk_size: int = 8192
    random_state: int = 0
    name: ClassVar[str] = "first_level"

    def __post_init__(self):
        ar_order(self.noise_model)
        if self.ar_bins < 1 or self.chunk_size < 1:
            raise ValueError("ar_bins and chunk_size must be positive")

    def describe(self) -> dict:
        """How the noise model is estimated, for design sidecars (JSON-ready)."""
        order = ar_order(self.noise_model)
        if order == 0:
            return {"Order": 0, "Method": "ordinary least squares"}
        info = {"Order": order, "Method": "Yule-Walker on the OLS residuals (centred on their global mean), "
                                          "prewhitened least squares per coefficient value (nilearn's run_glm)"}
        if order == 1:
            return {**info, "Quantisation": f"truncated toward zero to multiples of 1/{self.ar_bins}"}
        return {**info, "Quantisation": f"k-means, min({self.ar_bins}, n_voxels) clusters, n_init=10; clusters "
                                        "whose centres agree to 2 decimals merged", "RandomState": self.random_state}

    def fit(self, Y, X, variances=None) -> FirstLevelFit:
        """Fit the GLM to every voxel.

        Parameters
        ----------
        Y : array_like, (n_scans, n_voxels)
            Time series, usually from :func:`scale_timeseries`. May be float32;
            each chunk is converted to float64.
        X : array_like, (n_scans, n_regressors)
            Design matrix.
        variances : None
            Not used by this engine; must be None.

        Returns
        -------
        FirstLevelFit

        Raises
        ------
        DesignError
            If the design has no residual degrees of freedom or is not finite.
        InputDataError
            If ``Y`` contains NaN or infinite values.
        """
        if variances is not None:
            raise ValueError("FirstLevelEstimator does not use input variances")
        # one BLAS thread: the products are small (the design's few columns by the voxels of one AR
        # value, a few hundred), and a second thread only synchronises; 40k voxels x 200 scans on a
        # busy 2-core machine: 0.45 s with one thread, 1.35 s with two (and --n-procs workers would
        # each start their own)
        with one_blas_thread():
            return self._fit(Y, X)

    def _fit(self, Y, X) -> FirstLevelFit:
        Y = np.asarray(Y)
        X = np.asarray(X, dtype=np.float64)
        if Y.ndim != 2 or X.ndim != 2 or Y.shape[0] != X.shape[0]:
            raise ValueError(f"Y (n_scans, n_voxels) and X (n_scans, n_regressors) disagree: {Y.shape}, {X.shape}")
        if not np.all(np.isfinite(X)):
            raise DesignError("The design matrix contains NaN or infinite values")
        n_scans = X.shape[0]
        X_pinv = scipy.linalg.pinv(X)
        rank = np.linalg.matrix_rank(X)
        dof = n_scans - rank
        if dof <= 0:
            raise DesignError(f"The design has {rank} independent regressors for {n_scans} scans: no residual dof")
        order = ar_order(self.noise_model)
        if order >= n_scans - 1:
            raise DesignError(f"An AR({order}) noise model needs more than {order + 1} scans; this run has {n_scans}")

        residual_mean = _global_residual_mean(Y, X, X_pinv)
        n_voxels = Y.shape[1]
        chunks = [slice(start, min(start + self.chunk_size, n_voxels))
                  for start in range(0, n_voxels, self.chunk_size)]
        if order == 0:
            key, coef = np.zeros(n_voxels, dtype=np.int64), np.zeros((1, 0))
        elif order == 1:
            grid = np.concatenate([_ar1_grid(_chunk(Y, c), X, X_pinv, residual_mean, self.ar_bins)
                                   for c in chunks]) if chunks else np.zeros(0, dtype=np.int64)
            # one key per grid value, in increasing order of rho
            values, key = np.unique(grid, return_inverse=True)
            coef = (values / self.ar_bins)[:, None]
        else:
            coefficients = np.concatenate([
                _yule_walker(_ols_residuals(_chunk(Y, c), X, X_pinv), order, residual_mean) for c in chunks])
            key, coef = _cluster_coefficients(coefficients, self.ar_bins, self.random_state)
        key = key.ravel()

        designs = _WhitenedDesigns(X, coef)
        beta = np.empty((X.shape[1], n_voxels))
        sse = np.empty(n_voxels)
        rsquared = np.empty(n_voxels)
        for cols in chunks:
            _fit_whitened_groups(_chunk(Y, cols), key[cols], designs, beta[:, cols], sse[cols], rsquared[cols])

        used, group = np.unique(key, return_inverse=True)
        return FirstLevelFit(
            beta=beta,
            dispersion=sse / dof,
            rsquared=rsquared,
            ar_coef=coef[key].T.reshape(order, n_voxels),
            group=group.ravel(),
            group_covariance=np.stack([designs.get(k).covariance for k in used]).reshape(
                len(used), X.shape[1], X.shape[1]),
            dof=float(dof),
            row_space=row_space(X, X_pinv),
        )


def _chunk(Y, cols):
    return np.asarray(Y[:, cols], dtype=np.float64)


@dataclass(frozen=True)
class FirstLevelFit:
    """A fitted run-level GLM (implements :class:`bids_app.estimation.base.GLMFit`).

    Attributes
    ----------
    beta : ndarray, (n_regressors, n_voxels)
        Parameter estimates (units of ``Y`` per unit regressor).
    dispersion : ndarray, (n_voxels,)
        Residual variance of the whitened model, ``SSE / dof``.
    rsquared : ndarray, (n_voxels,)
        ``var(fitted) / var(data)`` of the whitened model (nilearn's
        ``r_square``; a pseudo-R2 for AR models).
    ar_coef : ndarray, (order, n_voxels)
        AR coefficients ``rho_1 .. rho_p`` used to whiten each voxel (after
        binning or clustering); (0, n_voxels) for OLS.
    group : ndarray, (n_voxels,), int
        Index of each voxel's row in ``group_covariance``.
    group_covariance : ndarray, (n_groups, n_regressors, n_regressors)
        ``pinv(Xw) @ pinv(Xw).T`` for each whitened design ``Xw``: the
        covariance of ``beta`` divided by ``dispersion``.
    dof : float
        Error degrees of freedom, ``n_scans - rank(X)``.
    row_space : ndarray, (n_regressors, n_regressors)
        Projector ``pinv(X) @ X`` onto the estimable contrasts.
    """

    beta: np.ndarray
    dispersion: np.ndarray
    rsquared: np.ndarray
    ar_coef: np.ndarray
    group: np.ndarray
    group_covariance: np.ndarray
    dof: float
    row_space: np.ndarray

    def contrast(self, weights, test="t") -> ContrastResult:
        """Evaluate a t or F contrast in every voxel.

        Parameters
        ----------
        weights : array_like
            (n_regressors,) for a t contrast; (n_rows, n_regressors) for F.
        test : {"t", "F"}

        Returns
        -------
        ContrastResult
            For t: ``effect = c @ beta`` and its variance. For F: ``effect``
            (n_rows, n_voxels) and the diagonal of its covariance; the F
            statistic uses the full covariance, with ``dof_num`` the rank of
            ``weights``. ``stat``, ``z`` and ``p`` are NaN where the variance
            is zero (data exactly in the span of the design, e.g. a constant
            voxel).

        Raises
        ------
        DesignError
            If the contrast is not estimable (weights outside the row space of
            a rank-deficient design).
        """
        C = contrast_matrix(weights, test, self.row_space.shape[0])
        check_estimable(C, self.row_space)
        effect = C @ self.beta
        # Each group's (rows x rows) contrast covariance; scaled per voxel below.
        group_cov = np.einsum("ip,gpq,jq->gij", C, self.group_covariance, C)
        variance = np.einsum("gii->gi", group_cov)[self.group].T * self.dispersion
        if test == "t":
            return _t_result(effect[0], variance[0], self.dof)
        dof_num = np.linalg.matrix_rank(C)
        quad_form = np.empty(effect.shape[1])
        for g, cov in enumerate(group_cov):
            voxels = self.group == g
            e = effect[:, voxels]
            quad_form[voxels] = np.einsum("iv,ij,jv->v", e, np.linalg.pinv(cov), e)
        with np.errstate(divide="ignore", invalid="ignore"):
            stat = np.where(self.dispersion > 0, quad_form / (dof_num * self.dispersion), np.nan)
        return f_result(effect, variance, stat, self.dof, dof_num)

    def model_maps(self) -> dict[str, np.ndarray]:
        """``{"rsquared": (n_voxels,), "residsd": (n_voxels,)}``.

        ``residsd`` is the residual standard deviation of the whitened model,
        ``sqrt(dispersion)``, in units of ``Y``.
        """
        return {"rsquared": self.rsquared, "residsd": np.sqrt(self.dispersion)}


def _t_result(effect, variance, dof):
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.where(variance > 0, effect / np.sqrt(variance), np.nan)
    z, p = t_to_z_p(stat, dof)
    return ContrastResult(test="t", effect=effect, variance=variance, stat=stat, z=z, p=p, dof=dof)


def _global_residual_mean(Y, X, X_pinv):
    """Mean of all OLS residuals over scans and voxels, without forming them.

    nilearn's Yule-Walker centres residuals on this single number; since
    residuals are linear in ``Y``, it is the residual of the voxel-sum series.
    That series also reveals any NaN or infinite value in ``Y``, which would
    otherwise spread to every voxel's AR coefficient through this mean.
    """
    total = np.zeros(Y.shape[0])
    for start in range(0, Y.shape[1], 65536):
        total += np.asarray(Y[:, start:start + 65536], dtype=np.float64).sum(axis=1)
    if not np.all(np.isfinite(total)):
        bad = np.count_nonzero(~np.all(np.isfinite(Y), axis=0))
        raise InputDataError(f"The data contain NaN or infinite values in {bad} voxel(s); mask them out")
    return (total - X @ (X_pinv @ total)).sum() / Y.size


def _ols_residuals(Y, X, X_pinv):
    residuals = X @ (X_pinv @ Y)
    np.subtract(Y, residuals, out=residuals)
    return residuals


def _ar1_grid(Y, X, X_pinv, residual_mean, bins):
    """Each voxel's OLS-residual AR(1) coefficient times ``bins``, truncated to int (nilearn's binning)."""
    rho = _lag1_autocorrelation(_ols_residuals(Y, X, X_pinv), residual_mean)
    return np.trunc(rho * bins).astype(np.int64)


def _lag1_autocorrelation(residuals, center):
    """Yule-Walker AR(1) coefficient per column, as nilearn's ``_yule_walker``.

    Parameters
    ----------
    residuals : ndarray, (n_scans, n_voxels)
        Overwritten (``center`` is subtracted in place to save a copy).
    center : float
        Value subtracted from all residuals first.

    Returns
    -------
    rho : ndarray, (n_voxels,)
        0 where the residuals are identically ``center`` (rho undefined).
    """
    n = residuals.shape[0]
    residuals -= center
    # Same normalisations as nilearn (biased autocovariances), so the
    # truncation onto the grid falls on the same side for every voxel.
    r0 = np.einsum("tv,tv->v", residuals, residuals) / (n * n)
    r1 = np.einsum("tv,tv->v", residuals[1:], residuals[:-1]) / ((n - 1) * n)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = r1 / r0
    return np.where(r0 > 0, rho, 0.0)


def _yule_walker(residuals, order, center):
    """Yule-Walker AR(p) coefficients per column, as nilearn's ``_yule_walker``.

    Parameters
    ----------
    residuals : ndarray, (n_scans, n_voxels)
        Overwritten (``center`` is subtracted in place).
    order : int
    center : float
        Value subtracted from all residuals first (nilearn: their global mean).

    Returns
    -------
    coefficients : ndarray, (n_voxels, order)
        Solutions of the Toeplitz systems ``R rho = r`` of the biased
        autocovariances; 0 where the residuals are identically ``center``.
    """
    n = residuals.shape[0]
    residuals -= center
    r = np.empty((residuals.shape[1], order + 1))
    r[:, 0] = np.einsum("tv,tv->v", residuals, residuals)
    for k in range(1, order + 1):
        r[:, k] = np.einsum("tv,tv->v", residuals[:-k], residuals[k:])
    r /= (n - np.arange(order + 1)) * n
    lags = np.abs(np.subtract.outer(np.arange(order), np.arange(order)))
    toeplitz = r[:, lags]                                   # (n_voxels, order, order)
    defined = r[:, 0] > 0
    coefficients = np.zeros((residuals.shape[1], order))
    coefficients[defined] = np.linalg.solve(toeplitz[defined], r[defined, 1:, None])[..., 0]
    return coefficients


def _cluster_coefficients(coefficients, bins, random_state):
    """nilearn's k-means quantisation of AR(p >= 2) coefficient vectors.

    Returns
    -------
    key : ndarray, (n_voxels,), int
        Row of ``coef`` whitening each voxel.
    coef : ndarray, (n_keys, order)
        One coefficient vector per key: the cluster centre of the first
        voxel (in voxel order) among those whose centres round alike.
    """
    from sklearn.cluster import KMeans

    if len(coefficients) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, coefficients.shape[1]))
    kmeans = KMeans(n_clusters=min(bins, len(coefficients)), n_init=10, random_state=random_state)
    # one OpenMP thread: Lloyd's iterations on (n_voxels, order) points are
    # short, and threads cost ~4x in synchronisation on a shared 2-core machine
    with threadpool_limits(1, user_api="openmp"):
        cluster = kmeans.fit(coefficients).labels_
    centres = kmeans.cluster_centers_
    # nilearn keys its models by the centres printed to 2 decimals (str of
    # np.round), so clusters that print alike share the first voxel's centre
    printed = np.array(["_".join(map(str, np.round(c, 2))) for c in centres])
    _, first, key = np.unique(printed[cluster], return_index=True, return_inverse=True)
    return key.ravel(), centres[cluster[first]]


def _whiten(A, coef):
    """``A[t] - sum_k coef[k] * A[t - k]`` along axis 0, the first k rows as nilearn's ``ARModel``.

    ``coef`` is (order,) for one filter or (order, n_columns) for one per column.
    """
    out = A.copy()
    for k in range(len(coef)):
        out[k + 1:] -= coef[k] * A[:-(k + 1)]
    return out


def _least_squares(Y, design):
    """Least-squares fit of every column of ``Y`` on one (whitened) design.

    Parameters
    ----------
    Y : ndarray, (n_scans, n_voxels)
    design : _Design

    Returns
    -------
    beta : (n_regressors, n_voxels)
    sse : (n_voxels,) residual sum of squares
    rsquared : (n_voxels,) ``var(X @ beta) / var(Y)``, nilearn's ``r_square``
    """
    beta = design.pinv @ Y
    residuals = design.X @ beta
    np.subtract(Y, residuals, out=residuals)
    sse = np.einsum("tv,tv->v", residuals, residuals)
    # var(X @ beta) from the centred Gram matrix: no pass over the scans.
    fitted_var = np.einsum("pv,pq,qv->v", beta, design.centered_gram, beta)
    with np.errstate(divide="ignore", invalid="ignore"):
        rsquared = fitted_var / Y.var(axis=0)
    return beta, sse, rsquared


def _fit_whitened_groups(Y, key, designs, beta_out, sse_out, rsquared_out):
    """AR-whitened least squares for one chunk, one product per coefficient value.

    Parameters
    ----------
    Y : ndarray, (n_scans, n_chunk)
    key : ndarray, (n_chunk,), int
        Row of ``designs.coef`` that whitens each voxel.
    designs : _WhitenedDesigns
    beta_out, sse_out, rsquared_out : ndarray views
        Filled in place, columns in the order of ``Y``.
    """
    # Sort voxels by key so every group is a contiguous block, then whiten
    # all of them at once (coefficients per column).
    order = np.argsort(key, kind="stable")
    whitened = _whiten(Y[:, order], designs.coef[key[order]].T)
    keys, starts = np.unique(key[order], return_index=True)
    stops = np.append(starts[1:], len(order))
    for k, start, stop in zip(keys, starts, stops):
        voxels = order[start:stop]
        beta_out[:, voxels], sse_out[voxels], rsquared_out[voxels] = _least_squares(
            whitened[:, start:stop], designs.get(k)
        )


@dataclass(frozen=True)
class _Design:
    """A (whitened) design and the products every fit on it reuses."""

    X: np.ndarray  # (n_scans, n_regressors)
    pinv: np.ndarray  # (n_regressors, n_scans)
    covariance: np.ndarray  # pinv @ pinv.T, (n_regressors, n_regressors)
    centered_gram: np.ndarray  # Xc.T @ Xc / n_scans, Xc = X minus column means


class _WhitenedDesigns:
    """AR-whitened versions of one design, built once per coefficient vector.

    Parameters
    ----------
    X : ndarray, (n_scans, n_regressors)
    coef : ndarray, (n_keys, order)
        Coefficient vector of each key (order 0: OLS, the design itself).
    """

    def __init__(self, X, coef):
        self._X = X
        self.coef = coef
        self._cache = {}

    def get(self, key):
        """The design whitened with ``coef[key]``."""
        if key not in self._cache:
            wX = _whiten(self._X, self.coef[key][:, None]) if self.coef.shape[1] else self._X
            pinv = scipy.linalg.pinv(wX)
            centered = wX - wX.mean(axis=0)
            self._cache[key] = _Design(wX, pinv, pinv @ pinv.T, centered.T @ centered / wX.shape[0])
        return self._cache[key]
