"""The levels of a BIDS Stats Model, lowest first: the one list every layer uses."""

LEVELS = ("Run", "Session", "Subject", "Dataset")
#: Position of each level, for "up to this level" comparisons.
LEVEL_RANK = {level: rank for rank, level in enumerate(LEVELS)}
