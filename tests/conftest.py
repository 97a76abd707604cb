"""Shared fixtures: paths to the repository's models and to the real data."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
DATA = REPO.parent / "shared" / "data"


def real_data(name: str) -> Path:
    """Path to a real dataset in ../shared/data, or skip the test with the reason."""
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real data {name!r} not found at {path} (see ../shared/data/README.md)")
    return path
