"""Light commands stay light: what `bids-stats --version` and `validate` import, and the user cache.

These check modules, not timings (timings are in benchmarks/bench_cli.py): a
command that imports the estimation or plotting stack pays seconds before it
does anything.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import MODELS, REPO

#: Never needed to print a version or check a model.
HEAVY = ("matplotlib", "nilearn", "scipy", "statsmodels", "formulaic", "pandas", "pydantic", "bsmschema")

_PROBE = """
import json, sys
from bids_app.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _imported(args, tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=env,
                          cwd=REPO, check=True)
    return set(json.loads(done.stderr.strip().splitlines()[-1])), done.stdout


def _heavy(modules):
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_version_imports_nothing_heavy(tmp_path):
    modules, out = _imported(["--version"], tmp_path)
    assert out.startswith("bids-stats ")
    assert _heavy(modules) == []
    assert "numpy" not in modules


@pytest.mark.parametrize("model", ["group_one_sample.json", "demo.json", "group_two_sample_formula.json"])
def test_validate_imports_no_estimation_stack(tmp_path, model):
    # twice: the first run builds the cached schema (pydantic), the second must not import it
    for run in range(2):
        modules, out = _imported(["validate", str(MODELS / model)], tmp_path)
        assert ": valid (" in out
        heavy = set(_heavy(modules))
        if model.endswith("formula.json"):
            heavy -= {m for m in heavy if m.split(".")[0] in ("formulaic", "pandas", "scipy")}
        if run == 0:
            heavy -= {m for m in heavy if m.split(".")[0] in ("pydantic", "bsmschema")}
            if "Transformations" in (MODELS / model).read_text():
                continue  # the first run also reads pybids' transformation arguments into the cache
        assert sorted(heavy) == [], f"run {run}"
        for module in ("matplotlib", "nilearn.glm", "scipy.signal", "statsmodels"):
            assert module not in modules
    assert list((tmp_path / "cache" / "bids-stats").glob("schema-*.json"))


def test_validate_without_writable_cache(tmp_path):
    # a read-only container: the schema is built in memory, the command still works
    blocked = tmp_path / "cache"
    blocked.write_text("not a folder")
    env = {**os.environ, "XDG_CACHE_HOME": str(blocked)}
    done = subprocess.run([sys.executable, "-m", "bids_app", "validate", str(MODELS / "demo.json")],
                          capture_output=True, text=True, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert ": valid (3 node(s)" in done.stdout


def test_cached_schema_equals_generated(tmp_path, monkeypatch):
    from bids_app.spec import schema

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    schema._cached_schema.cache_clear()
    try:
        first = schema.strict_schema()          # built and stored
        schema._cached_schema.cache_clear()
        stored = schema.strict_schema()         # read back
    finally:
        schema._cached_schema.cache_clear()
    assert stored == first == schema._build_schema()
    assert len(list((tmp_path / "bids-stats").glob("schema-*.json"))) == 1


_UNIT_WORKER = """
import sys
import nibabel as nb
import numpy as np
from bids_app.io.images import load_run_data
folder = sys.argv[1]
rng = np.random.default_rng(0)
nb.save(nb.Nifti1Image(rng.normal(100, 1, (4, 5, 6, 20)).astype(np.float32), np.eye(4)), folder + "/bold.nii.gz")
mask = np.zeros((4, 5, 6), np.uint8)
mask[1:3, 1:4, 2:5] = 1
data, _ = load_run_data(folder + "/bold.nii.gz", nb.Nifti1Image(mask, np.eye(4)), None)
print(data.shape, "nilearn" in sys.modules)
"""


def test_unsmoothed_run_load_imports_no_nilearn(tmp_path):
    # a unit worker process loads each run's BOLD: importing nilearn there (~1 s per worker) is only
    # needed to smooth or to move a mask onto another grid
    done = subprocess.run([sys.executable, "-c", _UNIT_WORKER, str(tmp_path)], capture_output=True, text=True,
                          cwd=REPO, check=True)
    assert done.stdout.split() == ["(20,", "18)", "False"]
