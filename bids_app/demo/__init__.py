"""The ``bids-stats demo`` command: a simulated dataset (``simulate``) run through the demo model (``run``)."""
