"""The one small interface between the graph and every estimation engine.

An *estimator* turns data ``Y`` (n_samples, n_voxels) and a design ``X``
(n_samples, n_regressors) into a *fit*; a fit turns contrast weights into a
:class:`ContrastResult`. The graph only ever uses these two calls, so engines
(AR(1) first level, OLS, fixed effects, mixed effects) can be swapped without
touching it. Everything here is arrays in, arrays out: no file I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class ContrastResult:
    """Statistics of one contrast over voxels.

    Attributes
    ----------
    test : {"t", "F"}
    effect : ndarray
        (n_voxels,) for t; (n_rows, n_voxels) for F.
    variance : ndarray
        Sampling variance of ``effect``: (n_voxels,) for t;
        (n_rows, n_voxels) diagonal of the covariance for F.
    stat : ndarray, (n_voxels,)
        t or F statistic.
    z : ndarray, (n_voxels,)
        Standard-normal equivalent of ``stat`` (same tail probability).
    p : ndarray, (n_voxels,)
        One-sided upper-tail p for t (as nilearn), upper-tail p for F.
    dof : float or ndarray
        Error (denominator) degrees of freedom; an array when per voxel.
    dof_num : int
        Numerator degrees of freedom (rows of an F contrast; 1 for t).
    """

    test: str
    effect: np.ndarray
    variance: np.ndarray
    stat: np.ndarray
    z: np.ndarray
    p: np.ndarray
    dof: float | np.ndarray
    dof_num: int = 1
    info: dict = field(default_factory=dict)


class GLMFit(Protocol):
    """A fitted model that evaluates contrasts."""

    #: error degrees of freedom (scalar, or per voxel)
    dof: float | np.ndarray

    def contrast(self, weights: np.ndarray, test: str) -> ContrastResult:
        """Evaluate weights (n_regressors,) for t or (n_rows, n_regressors) for F."""
        ...

    def model_maps(self) -> dict[str, np.ndarray]:
        """Per-voxel model summaries, e.g. ``{"rsquared": ..., "residsd": ...}``."""
        ...


class Estimator(Protocol):
    """Builds a :class:`GLMFit` from data and design."""

    name: str

    def fit(self, Y: np.ndarray, X: np.ndarray, variances: np.ndarray | None = None) -> GLMFit:
        """Fit ``Y`` (n, v) on ``X`` (n, p); ``variances`` (n, v) for engines that use them."""
        ...
