"""Shared fixtures: paths to the repository's models and to the real data.

One idiom for real data: a test (or a fixture it uses) calls
:func:`real_data` with a folder or a file of ``../shared/data``; when the data
are absent the test is skipped with the reason, and only that test. Nothing
skips a whole module.

``tests/data/registry.json`` lists every file of the data with its sha256 and
its source. ``../shared/data`` is the local mirror; elsewhere a file with a
direct download URL in the registry is fetched with pooch into a cache when
``BIDS_STATS_FETCH_TEST_DATA=1`` and pooch is installed (``.[testdata]``).
The app never downloads anything.
"""
import functools
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
# BIDS_STATS_DATA points elsewhere (e.g. from a git worktree not beside shared/)
DATA = Path(os.environ.get("BIDS_STATS_DATA", REPO.parent / "shared" / "data"))
REGISTRY = Path(__file__).resolve().parent / "data" / "registry.json"


@functools.lru_cache(maxsize=1)
def registry() -> dict:
    return json.loads(REGISTRY.read_text())


def real_data(name: str) -> Path:
    """Path to a real dataset folder or file (``"haxby2001_sub1"``, ``"pain21/participants.tsv"``)
    in ../shared/data (or the test-data cache), or skip the test with the reason."""
    path = DATA / name
    if path.exists():
        return path
    fetched = _fetch(name)
    if fetched is not None:
        return fetched
    pytest.skip(f"real data {name!r} not found at {path} (see ../shared/data/README.md and "
                "tests/data/registry.json)")


def _fetch(name: str) -> Path | None:
    """A registered file with a download URL, fetched into the cache when allowed; else None."""
    url = registry()["urls"].get(name)
    if url is None or os.environ.get("BIDS_STATS_FETCH_TEST_DATA") != "1":
        return None
    try:
        import pooch
    except ImportError:
        return None
    cache = Path(os.environ.get("BIDS_STATS_TEST_DATA_CACHE", pooch.os_cache("bids-stats-test-data")))
    return Path(pooch.retrieve(url, known_hash=f"sha256:{registry()['files'][name]}",
                               fname=name.replace("/", "__"), path=cache))
