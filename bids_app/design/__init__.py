"""Design matrices: run-level synthesis from events and confounds.

The run level (``first_level``) turns a run's events and confounds plus a
Run node into a design matrix; ``synthesizer`` is the ``bids-stats design``
command (imported on its own: it pulls in matplotlib).

Names are imported on first use: group-level runs never load the run-level
stack (nilearn's signal and GLM modules, scipy.signal), which costs seconds.
"""
import importlib

_HOMES = {
    "expand_x": "bids_app.design.columns",
    "read_confounds": "bids_app.design.confounds",
    "read_events": "bids_app.design.events",
    "RunDesign": "bids_app.design.first_level",
    "build_run_design": "bids_app.design.first_level",
}

__all__ = ["RunDesign", "build_run_design", "expand_x", "read_confounds", "read_events"]


def __getattr__(name):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
