"""Shared fixtures: paths to the repository's models and to the real data."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
# BIDS_STATS_DATA points elsewhere (e.g. from a git worktree not beside shared/)
DATA = Path(os.environ.get("BIDS_STATS_DATA", REPO.parent / "shared" / "data"))


def real_data(name: str) -> Path:
    """Path to a real dataset in ../shared/data, or skip the test with the reason."""
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real data {name!r} not found at {path} (see ../shared/data/README.md)")
    return path
