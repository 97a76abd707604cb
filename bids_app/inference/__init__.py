"""Statistical inference on estimated maps: pure maths, no file I/O.

z and p conversions live in :mod:`bids_app.estimation.conversions`.
"""
