"""Fixed-effects combination of lower-level estimates ("meta" node).

Each input (run, session, ...) brings an effect and its sampling variance per
voxel. Treating the variances as known, the combined estimate is the
inverse-variance weighted least-squares fit of the effects on a design ``X``:

    beta = (X' W X)^-1 X' W y,   cov(beta) = (X' W X)^-1,   W = diag(1 / variances)

With ``X`` a column of ones this is FSL's / nilearn's precision-weighted fixed
effects (``compute_fixed_effects(..., precision_weighted=True)``): the
weighted mean of the inputs, with variance ``1 / sum(1 / variances)``.

Degrees of freedom: the sum of the inputs' error dofs, for any ``X``. For
``X = [1]`` this is nilearn's rule (``compute_fixed_effects(dofs=...)``). With
``p`` columns the rule is unchanged, on purpose: the variance of ``c' beta``
is built from the input variances alone (``W`` is known), never from the
residuals around the fit, so the columns of ``X`` estimate nothing that the
variance depends on and subtract no dofs (the residuals around the fit give
the heterogeneity ``chisq`` instead, ~ chi2(n_inputs - p) if the inputs
agree). Like nilearn's, the rule is liberal: a Satterthwaite count for the
weighted sum of independently estimated variances, ``(sum a_i^2 v_i)^2 /
sum (a_i^2 v_i)^2 / d_i``, is at most the sum; both are in the hundreds for
runs, where t and z no longer differ.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from bids_app.errors import DesignError
from bids_app.estimation.base import ContrastResult
from bids_app.estimation.contrasts import contrast_matrix, f_result
from bids_app.estimation.conversions import t_to_z_p

#: The degrees-of-freedom rule, as written into design sidecars.
FIXED_EFFECTS_DOF_RULE = "sum of the input maps' error degrees of freedom (columns of X subtract none)"


@dataclass(frozen=True)
class FixedEffectsEstimator:
    """Inverse-variance weighted least squares over lower-level estimates.

    Parameters
    ----------
    dofs : array_like, (n_inputs,) or (n_inputs, n_voxels)
        Error degrees of freedom of each input; their sum over inputs is the
        dof of the combined model.
    """

    dofs: np.ndarray
    name: ClassVar[str] = "fixed_effects"

    def fit(self, Y, X, variances=None) -> FixedEffectsFit:
        """Combine inputs voxel by voxel.

        Parameters
        ----------
        Y : array_like, (n_inputs, n_voxels)
            Lower-level effect estimates.
        X : array_like, (n_inputs, n_regressors)
            Design over inputs, e.g. ``np.ones((n_inputs, 1))``.
        variances : array_like, (n_inputs, n_voxels)
            Sampling variances of ``Y`` (required).

        Returns
        -------
        FixedEffectsFit
            Voxels where any input has a non-finite effect or a variance that
            is not finite and positive are left out: every output there is NaN.

        Raises
        ------
        DesignError
            If ``X`` is rank deficient or not finite.
        """
        if variances is None:
            raise ValueError("Fixed effects need the variances of the inputs")
        Y = np.asarray(Y, dtype=np.float64)
        variances = np.asarray(variances, dtype=np.float64)
        X = np.asarray(X, dtype=np.float64)
        dofs = np.asarray(self.dofs, dtype=np.float64)
        if Y.ndim != 2 or Y.shape != variances.shape or X.ndim != 2 or X.shape[0] != Y.shape[0]:
            raise ValueError(
                f"Expected Y and variances (n_inputs, n_voxels) and X (n_inputs, n_regressors), "
                f"got {Y.shape}, {variances.shape}, {X.shape}"
            )
        if dofs.shape[0] != Y.shape[0]:
            raise ValueError(f"{dofs.shape[0]} dofs for {Y.shape[0]} inputs")
        if not np.all(np.isfinite(X)):
            raise DesignError("The fixed-effects design contains NaN or infinite values")
        if np.linalg.matrix_rank(X) < X.shape[1]:
            raise DesignError("The fixed-effects design is rank deficient")

        valid = np.all(np.isfinite(Y) & np.isfinite(variances) & (variances > 0), axis=0)
        weights = np.where(valid, 1.0 / np.where(valid, variances, 1.0), 0.0)
        precision = np.einsum("ip,iv,iq->vpq", X, weights, X)
        # Invalid voxels have zero weights; give them an identity to invert,
        # then blank them.
        precision[~valid] = np.eye(X.shape[1])
        covariance = np.linalg.inv(precision)
        beta = np.einsum("vpq,iq,iv->pv", covariance, X, weights * np.where(valid, Y, 0.0))
        residuals = np.where(valid, Y, 0.0) - X @ beta
        chisq = np.einsum("iv,iv->v", weights, residuals**2)
        beta[:, ~valid] = np.nan
        covariance[~valid] = np.nan
        chisq[~valid] = np.nan
        return FixedEffectsFit(beta=beta, covariance=covariance, chisq=chisq, dof=dofs.sum(axis=0))


@dataclass(frozen=True)
class FixedEffectsFit:
    """Fixed-effects estimates (implements :class:`bids_app.estimation.base.GLMFit`).

    Attributes
    ----------
    beta : ndarray, (n_regressors, n_voxels)
        Weighted least-squares estimates; NaN in left-out voxels.
    covariance : ndarray, (n_voxels, n_regressors, n_regressors)
        ``(X' W X)^-1``, the sampling covariance of ``beta``.
    chisq : ndarray, (n_voxels,)
        Weighted residual sum of squares ``sum(w * (y - X beta)**2)``
        (Cochran's Q for an intercept): ~ chi2(n_inputs - n_regressors) if the
        inputs are homogeneous.
    dof : float or ndarray
        Sum of the input dofs (per voxel if dofs were given per voxel).
    """

    beta: np.ndarray
    covariance: np.ndarray
    chisq: np.ndarray
    dof: float | np.ndarray

    def contrast(self, weights, test="t") -> ContrastResult:
        """Evaluate a t or F contrast; the variances are treated as known.

        Parameters
        ----------
        weights : array_like
            (n_regressors,) for t; (n_rows, n_regressors) for F.
        test : {"t", "F"}

        Returns
        -------
        ContrastResult
            ``effect = C @ beta``; ``variance`` is the diagonal of
            ``C cov C'``; F is ``e' (C cov C')^-1 e / rank(C)``.
        """
        C = contrast_matrix(weights, test, self.beta.shape[0])
        effect = C @ self.beta
        contrast_cov = np.einsum("ip,vpq,jq->vij", C, self.covariance, C)
        variance = np.einsum("vii->iv", contrast_cov)
        if test == "t":
            stat = effect[0] / np.sqrt(variance[0])
            z, p = t_to_z_p(stat, self.dof)
            return ContrastResult(
                test="t",
                effect=effect[0],
                variance=variance[0],
                stat=stat,
                z=z,
                p=p,
                dof=self.dof,
            )
        dof_num = np.linalg.matrix_rank(C)
        valid = np.all(np.isfinite(effect), axis=0)
        stat = np.full(effect.shape[1], np.nan)
        stat[valid] = np.einsum(
            "iv,vij,jv->v", effect[:, valid], np.linalg.pinv(contrast_cov[valid]), effect[:, valid]
        ) / dof_num
        return f_result(effect, variance, stat, self.dof, dof_num)

    def model_maps(self) -> dict[str, np.ndarray]:
        """``{"chisq": (n_voxels,)}``: heterogeneity of the inputs around the fit."""
        return {"chisq": self.chisq}
