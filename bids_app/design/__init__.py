"""Design matrices: run-level synthesis from events and confounds.

The run level (``first_level``) turns a run's events and confounds plus a
Run node into a design matrix; ``synthesizer`` is the ``bids-stats design``
command (imported on its own: it pulls in matplotlib).
"""
from bids_app.design.columns import expand_x
from bids_app.design.confounds import read_confounds
from bids_app.design.events import read_events
from bids_app.design.first_level import RunDesign, build_run_design

__all__ = ["RunDesign", "build_run_design", "expand_x", "read_confounds", "read_events"]
