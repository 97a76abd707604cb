"""Design matrices from data frames: run level (``first_level``) and group level (``group``).

Files are read by :mod:`bids_app.io`; nothing here opens one.
"""
from bids_app.design.columns import expand_x
from bids_app.design.first_level import RunDesign, build_run_design

__all__ = ["RunDesign", "build_run_design", "expand_x"]
