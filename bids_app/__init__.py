"""bids-stats: run BIDS Stats Models and write BIDS derivatives.

The package reads as the pipeline::

    spec -> graph -> design -> estimation -> inference -> derivatives -> report

``graph`` is the only layer that calls the others; ``estimation`` and
``inference`` are pure maths on arrays and do no file I/O.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bids-stats")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
