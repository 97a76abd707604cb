"""Design matrices from data frames: run level (``first_level``) and group level (``group``).

Files are read by :mod:`bids_app.io`; nothing here opens one.

Names are imported on first use: group-level runs never load the run-level
stack (nilearn's signal and GLM modules, scipy.signal), which costs seconds.
"""
import importlib

_HOMES = {
    "expand_x": "bids_app.design.columns",
    "RunDesign": "bids_app.design.first_level",
    "build_run_design": "bids_app.design.first_level",
}

__all__ = ["RunDesign", "build_run_design", "expand_x"]


def __getattr__(name):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
