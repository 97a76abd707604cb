"""Ordinary least squares for group-level (second-level) models.

The model per voxel ``v`` is ``Y[:, v] = X @ beta[:, v] + e``, with
``e ~ N(0, sigma2[v] I)``; this is nilearn's ``SecondLevelModel`` (its
``run_glm(..., noise_model="ols")``), and its statistics match nilearn's for
full-rank designs. For a rank-deficient ``X`` nilearn divides the RSS by
n - n_columns but takes p-values with n - rank (nilearn issue #3361); here
the error dof are n - rank(X) throughout, as in statsmodels.

The design is the same for every voxel, so its pseudo-inverse is computed
once and every voxel is a column of one matrix product. Voxels are processed
in chunks: besides the outputs (``beta``: p x v), the fit only allocates
O(n x chunk) floats, whatever the dtype of ``Y`` (a float32 ``Y`` is cast to
float64 one chunk at a time, never as a whole).

Contrast checks, estimability and z/p: :mod:`bids_app.estimation.contrasts`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from bids_app.errors import DesignError
from bids_app.estimation.base import ContrastResult
from bids_app.estimation.contrasts import check_estimable, contrast_matrix, row_basis, row_space, stat_to_z_p

#: Default working memory of one chunk of float64 data (2 MiB): small enough
#: to stay in cache, which makes the fit several times faster than large chunks.
DEFAULT_CHUNK_BYTES = 2**21

#: Floor on variances before dividing, as nilearn's ``Contrast`` (DEF_TINY),
#: so that a voxel with zero residual variance gives a finite statistic.
TINY = 1e-50



def voxel_chunks(n_voxels: int, bytes_per_voxel: int, chunk_bytes: int):
    """Yield slices over voxels so each chunk uses about ``chunk_bytes``.

    Parameters
    ----------
    n_voxels : int
    bytes_per_voxel : int
        Working memory one voxel needs (e.g. ``8 * n_samples`` for one
        float64 column).
    chunk_bytes : int
        Target working memory per chunk, in bytes.
    """
    size = max(1, int(chunk_bytes // max(1, bytes_per_voxel)))
    for start in range(0, n_voxels, size):
        yield slice(start, min(start + size, n_voxels))


def check_design(X) -> np.ndarray:
    """Return the design as a finite float64 (n_samples, n_regressors) array."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] == 0:
        raise DesignError(
            f"design matrix must be 2-D with at least one column, got shape {X.shape}"
        )
    if not np.all(np.isfinite(X)):
        raise DesignError("design matrix contains NaN or infinite values")
    return X


def check_data(Y, n_samples: int, what: str = "data") -> np.ndarray:
    """Return ``Y`` as a 2-D array (not copied) with ``n_samples`` rows."""
    Y = np.asarray(Y)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[0] != n_samples:
        raise DesignError(
            f"{what} has shape {Y.shape} but the design has {n_samples} rows "
            "(expected (n_samples, n_voxels))"
        )
    return Y


class OLSEstimator:
    """Ordinary least squares, vectorised and chunked over voxels.

    Parameters
    ----------
    chunk_bytes : int, default=DEFAULT_CHUNK_BYTES
        Working memory per chunk of voxels, in bytes.
    blas_threads : int or None, default=1
        BLAS threads during the fit (None: the library's default). The
        per-chunk products are small, so extra BLAS threads mostly add
        synchronisation: on a busy 2-core machine, 2 threads made the
        144 x 24 design's fit 3-10x slower than 1.
    """

    name = "ols"

    def __init__(self, chunk_bytes: int = DEFAULT_CHUNK_BYTES, blas_threads: int | None = 1):
        self.chunk_bytes = int(chunk_bytes)
        self.blas_threads = blas_threads

    def fit(self, Y, X, variances=None) -> OLSFit:
        """Fit ``Y`` on ``X`` by least squares.

        Parameters
        ----------
        Y : array, shape (n_samples, n_voxels)
            Data, any float dtype; not copied (cast to float64 per chunk).
            A voxel with a non-finite value gets NaN outputs.
        X : array, shape (n_samples, n_regressors)
            Design; may be rank deficient (contrasts must then be estimable).
        variances : ignored
            Accepted for the :class:`~bids_app.estimation.base.Estimator`
            interface; OLS does not use lower-level variances.

        Returns
        -------
        OLSFit
        """
        X = check_design(X)
        n, p = X.shape
        Y = check_data(Y, n)
        rank = int(np.linalg.matrix_rank(X))
        dof = n - rank
        if dof < 1:
            raise DesignError(
                f"no residual degrees of freedom: {n} samples for a design of rank {rank}"
            )
        pinv_X = np.linalg.pinv(X)

        n_voxels = Y.shape[1]
        beta = np.empty((p, n_voxels))
        rss = np.empty(n_voxels)
        rsquared = np.empty(n_voxels)
        # Y chunk, fitted values and residuals: three float64 (n, chunk) arrays.
        with threadpool_limits(self.blas_threads, user_api="blas"):
            for sl in voxel_chunks(n_voxels, 3 * 8 * n, self.chunk_bytes):
                y = np.asarray(Y[:, sl], dtype=np.float64)
                b = pinv_X @ y
                fitted = X @ b
                resid = y - fitted
                beta[:, sl] = b
                rss[sl] = np.einsum("ij,ij->j", resid, resid)
                # nilearn's definition (var of fitted / var of data): for
                # designs with an intercept it is 1 - RSS / centred TSS.
                with np.errstate(invalid="ignore", divide="ignore"):
                    rsquared[sl] = np.var(fitted, axis=0) / np.var(y, axis=0)
        return OLSFit(
            design=X,
            pinv_design=pinv_X,
            beta=beta,
            sigma2=rss / dof,
            rsquared=rsquared,
            dof=float(dof),
        )


@dataclass(frozen=True)
class OLSFit:
    """Result of :meth:`OLSEstimator.fit`.

    Attributes
    ----------
    design : ndarray, shape (n_samples, n_regressors)
    pinv_design : ndarray, shape (n_regressors, n_samples)
    beta : ndarray, shape (n_regressors, n_voxels)
        Minimum-norm least-squares coefficients.
    sigma2 : ndarray, shape (n_voxels,)
        Residual variance, RSS / dof (data units squared).
    rsquared : ndarray, shape (n_voxels,)
        Variance of the fitted values over variance of the data.
    dof : float
        Residual degrees of freedom, n_samples - rank(X).
    """

    design: np.ndarray
    pinv_design: np.ndarray
    beta: np.ndarray
    sigma2: np.ndarray
    rsquared: np.ndarray
    dof: float

    def contrast(self, weights, test: str = "t") -> ContrastResult:
        """Evaluate a t contrast (n_regressors,) or an F contrast (n_rows, n_regressors).

        For F, ``effect`` is ``C @ beta`` (n_rows, n_voxels), ``variance`` the
        diagonal of its covariance, and the statistic
        ``(C b)' [C (X'X)^+ C']^+ (C b) / (rank(C) sigma2)`` with
        ``dof_num = rank(C)``.
        """
        C = contrast_matrix(weights, test, self.beta.shape[0])
        check_estimable(C, row_space(self.design, self.pinv_design))
        # (X'X)^+ = X^+ X^+' : the unscaled covariance of beta.
        unscaled_cov = self.pinv_design @ self.pinv_design.T
        sigma2 = np.maximum(self.sigma2, TINY)
        effect = C @ self.beta
        variance = np.diag(C @ unscaled_cov @ C.T)[:, None] * self.sigma2
        if test == "t":
            effect, variance = effect[0], variance[0]
            stat = effect / np.sqrt(np.maximum(variance, TINY))
            dof_num = 1
        else:
            L = row_basis(C)
            dof_num = L.shape[0]
            Lb = L @ self.beta
            precision = np.linalg.inv(L @ unscaled_cov @ L.T)
            stat = np.einsum("iv,ij,jv->v", Lb, precision, Lb) / (dof_num * sigma2)
        z, p = stat_to_z_p(stat, test, self.dof, dof_num)
        return ContrastResult(
            test=test, effect=effect, variance=variance, stat=stat, z=z, p=p,
            dof=self.dof, dof_num=dof_num,
        )

    def model_maps(self) -> dict[str, np.ndarray]:
        """``{"rsquared": ..., "residsd": sqrt(sigma2)}``, each (n_voxels,)."""
        return {"rsquared": self.rsquared, "residsd": np.sqrt(self.sigma2)}
