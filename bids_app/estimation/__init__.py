"""Estimation engines: arrays in, fits out (pure maths, no file I/O).

Every engine follows :class:`bids_app.estimation.base.Estimator`; its fit
follows :class:`bids_app.estimation.base.GLMFit`. Names are imported on first
use, so a group-level run does not load the run-level engine.
"""
import importlib

_HOMES = {
    "ContrastResult": "bids_app.estimation.base",
    "Estimator": "bids_app.estimation.base",
    "GLMFit": "bids_app.estimation.base",
    "FirstLevelEstimator": "bids_app.estimation.first_level",
    "FirstLevelFit": "bids_app.estimation.first_level",
    "scale_timeseries": "bids_app.estimation.first_level",
    "FixedEffectsEstimator": "bids_app.estimation.fixed_effects",
    "FixedEffectsFit": "bids_app.estimation.fixed_effects",
}

__all__ = sorted(_HOMES)


def __getattr__(name):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
