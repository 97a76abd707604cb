"""Contrast rules every estimator shares: weights checked, estimability, the
row basis of an F contrast, and z/p of the statistics.

One rule for all: a bad contrast (wrong test, wrong number of weights,
several rows for t, non-finite or all-zero weights, weights outside the
design's row space) is a :class:`~bids_app.errors.DesignError`, whatever the
estimator.
"""
from __future__ import annotations

import numpy as np

from bids_app.errors import DesignError
from bids_app.estimation.base import ContrastResult
from bids_app.estimation.conversions import f_to_z_p, t_to_z_p

#: Relative tolerance of the estimability check (pinv round-off is ~1e-13).
ESTIMABLE_RTOL = 1e-8


def contrast_matrix(weights, test: str, n_regressors: int) -> np.ndarray:
    """Contrast weights as a float64 (n_rows, n_regressors) matrix.

    A ``t`` contrast must have a single row; an ``F`` contrast may have one or
    more rows (one row gives F = t**2).

    Raises
    ------
    DesignError
        Unknown test, wrong number of weights, several rows for t, or
        weights that are non-finite or all zero.
    """
    if test not in ("t", "F"):
        raise DesignError(f"contrast test must be 't' or 'F', got {test!r}")
    C = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if C.ndim != 2 or C.shape[1] != n_regressors:
        raise DesignError(
            f"contrast has {C.shape[-1]} weights but the design has {n_regressors} columns"
        )
    if test == "t" and C.shape[0] != 1:
        raise DesignError(f"a t contrast needs one row of weights, got {C.shape[0]}")
    if not np.all(np.isfinite(C)) or not np.any(C):
        raise DesignError("contrast weights must be finite and not all zero")
    return C


def row_space(X: np.ndarray, pinv_X: np.ndarray | None = None) -> np.ndarray:
    """The projector ``pinv(X) @ X`` (n_regressors, n_regressors) onto the row space of ``X``."""
    return (np.linalg.pinv(X) if pinv_X is None else pinv_X) @ X


def check_estimable(C: np.ndarray, projector: np.ndarray) -> None:
    """Raise DesignError unless every row of ``C`` lies in the row space of the design.

    Only then is ``C @ beta`` the same for every least-squares solution of a
    rank-deficient design (e.g. cell means plus subject columns).

    Parameters
    ----------
    C : ndarray, (n_rows, n_regressors)
    projector : ndarray, (n_regressors, n_regressors)
        :func:`row_space` of the design (of the whitened design, for
        prewhitened fits).
    """
    scale = max(1.0, float(np.max(np.abs(C))))
    if np.max(np.abs(C @ projector - C)) > ESTIMABLE_RTOL * scale:
        raise DesignError(
            "contrast is not estimable: it is not a combination of the rows of the "
            "design matrix (the design is rank deficient)"
        )


def row_basis(C: np.ndarray) -> np.ndarray:
    """An orthonormal basis (rank, n_regressors) of the row space of ``C``.

    An F statistic is invariant to an invertible recombination of its rows,
    so testing the basis instead of ``C`` handles redundant rows (and sets
    the numerator dof to the rank of the contrast).
    """
    _, s, vt = np.linalg.svd(C, full_matrices=False)
    rank = int(np.sum(s > s[0] * max(C.shape) * np.finfo(np.float64).eps))
    return vt[:rank]


def stat_to_z_p(stat: np.ndarray, test: str, dof, dof_num: int):
    """``(z, p)`` for t or F statistics (one-sided upper-tail p, as nilearn)."""
    return t_to_z_p(stat, dof) if test == "t" else f_to_z_p(stat, dof_num, dof)


def f_result(effect, variance, stat, dof, dof_num) -> ContrastResult:
    """The result of an F contrast, with its z and p."""
    z, p = f_to_z_p(stat, dof_num, dof)
    return ContrastResult(test="F", effect=effect, variance=variance, stat=stat, z=z, p=p, dof=dof,
                          dof_num=int(dof_num))
