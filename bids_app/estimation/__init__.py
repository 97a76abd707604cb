"""Estimation engines: arrays in, fits out (pure maths, no file I/O).

Every engine follows :class:`bids_app.estimation.base.Estimator`; its fit
follows :class:`bids_app.estimation.base.GLMFit`.
"""
from bids_app.estimation.base import ContrastResult, Estimator, GLMFit
from bids_app.estimation.first_level import FirstLevelEstimator, FirstLevelFit, scale_timeseries
from bids_app.estimation.fixed_effects import FixedEffectsEstimator, FixedEffectsFit

__all__ = [
    "ContrastResult",
    "Estimator",
    "FirstLevelEstimator",
    "FirstLevelFit",
    "FixedEffectsEstimator",
    "FixedEffectsFit",
    "GLMFit",
    "scale_timeseries",
]
