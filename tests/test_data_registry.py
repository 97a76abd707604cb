"""tests/data/registry.json: every file of the real data with its sha256 and source."""
import hashlib

from conftest import DATA, real_data, registry


def test_every_registered_file_has_its_hash_and_a_source():
    real_data("README.md")
    files = registry()["files"]
    on_disk = {str(p.relative_to(DATA)) for p in DATA.rglob("*") if p.is_file() and p.name != "README.md"}
    assert set(files) == on_disk, "the registry and ../shared/data list different files"
    changed = [name for name, digest in files.items()
               if hashlib.sha256((DATA / name).read_bytes()).hexdigest() != digest]
    assert not changed, f"files differ from their registered sha256: {changed[:5]}"
    assert {name.split("/")[0] for name in files} == set(registry()["sources"])
    assert set(registry()["urls"]) <= set(files)
