"""tests/data/registry.json: every file of the real data with its sha256, source and URLs;
the fetch path of ``conftest.real_data`` (pooch, sha256 checked, a cache) on a local server."""
import functools
import hashlib
import http.server
import re
import threading

import pytest

import conftest
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


def test_urls_are_downloads_pinned_to_a_commit():
    """Each URL is a file of a public git repository at a fixed commit, so its bytes cannot
    change under the registered sha256 (they were checked against that commit's blob)."""
    urls = registry()["urls"]
    assert len(urls) > 50 and set(urls) <= set(registry()["files"])
    pinned = re.compile(r"^https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[0-9a-f]{40}/\S+[^/]$")
    assert not [url for url in urls.values() if not pinned.match(url)]
    # the file name is the registered one (the folders differ: bids-examples' ds003 is our ds000003)
    assert all(url.rsplit("/", 1)[1] == name.rsplit("/", 1)[1]
               for name, url in urls.items() if not name.endswith("group_mask_min10studies.nii.gz"))


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``www``: (folder, base URL, paths requested)."""
    www = tmp_path / "www"
    www.mkdir()
    requested = []

    class Handler(_Handler):
        def do_GET(self):
            requested.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{httpd.server_port}", requested
    finally:
        httpd.shutdown()
        httpd.server_close()


def _fetch_from(monkeypatch, tmp_path, server, files):
    """Serve ``files`` ({registered name: (bytes, sha256)}) from the local server, registered with
    those URLs, with the data folder absent and fetching allowed: the cache folder."""
    pytest.importorskip("pooch", reason="pooch is in the [test] extra")
    www, base, _ = server
    for i, (content, _) in enumerate(files.values()):
        (www / f"{i}.bin").write_bytes(content)
    entries = {**registry(), "files": {**registry()["files"], **{n: d for n, (_, d) in files.items()}},
               "urls": {n: f"{base}/{i}.bin" for i, n in enumerate(files)}}
    monkeypatch.setattr(conftest, "registry", lambda: entries)
    monkeypatch.setattr(conftest, "DATA", tmp_path / "absent")
    cache = tmp_path / "cache"
    monkeypatch.setenv("BIDS_STATS_TEST_DATA_CACHE", str(cache))
    monkeypatch.setenv("BIDS_STATS_FETCH_TEST_DATA", "1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    return cache


def _check_fetch(monkeypatch, tmp_path, server, name, content, digest):
    cache = _fetch_from(monkeypatch, tmp_path, server, {name: (content, digest)})
    path = real_data(name)
    assert path == cache / name and path.read_bytes() == content
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert server[2] == ["/0.bin"]
    assert real_data(name) == path and server[2] == ["/0.bin"]  # cached: not downloaded again
    # the same name, its bytes corrupted on the server: the sha256 check refuses them
    (server[0] / "0.bin").write_bytes(content[:-1] + bytes([content[-1] ^ 1]))
    path.unlink()
    with pytest.raises(ValueError, match="(?i)hash"):
        real_data(name)
    assert not [p for p in cache.rglob("*") if p.is_file()], "a rejected download stayed in the cache"
    # fetching is opt-in: without BIDS_STATS_FETCH_TEST_DATA=1 the test skips
    monkeypatch.delenv("BIDS_STATS_FETCH_TEST_DATA")
    with pytest.raises(pytest.skip.Exception, match="not found"):
        real_data(name)


def test_fetch_checks_the_sha256_and_caches(monkeypatch, tmp_path, server):
    """A registry entry made here (no real data needed), fetched from a local server."""
    content = b"onset\tduration\ttrial_type\n0\t1\tface\n" * 50
    _check_fetch(monkeypatch, tmp_path, server, "made_up/events.tsv", content,
                 hashlib.sha256(content).hexdigest())


def test_fetch_of_a_registered_file_with_its_registered_sha256(monkeypatch, tmp_path, server):
    """A real registered file, served by the local server, checked against the registry's sha256."""
    name = "pain21/participants.tsv"
    content = real_data(name).read_bytes()
    _check_fetch(monkeypatch, tmp_path, server, name, content, registry()["files"][name])


def test_a_folder_is_fetched_whole_only_when_every_file_has_a_url(monkeypatch, tmp_path, server):
    files = {f"made_up/sub-0{i}/func/events.tsv": (f"onset\n{i}\n".encode(),) for i in (1, 2)}
    files = {n: (c, hashlib.sha256(c).hexdigest()) for n, (c,) in files.items()}
    cache = _fetch_from(monkeypatch, tmp_path, server, files)
    folder = real_data("made_up")
    assert folder == cache / "made_up"
    assert {str(p.relative_to(cache)): p.read_bytes() for p in folder.rglob("*.tsv")} == {
        n: c for n, (c, _) in files.items()}
    # one registered file of the folder without a URL: the folder cannot be had, the test skips
    entries = conftest.registry()
    entries["files"]["made_up/participants.tsv"] = "0" * 64
    monkeypatch.setattr(conftest, "DATA", tmp_path / "absent")
    with pytest.raises(pytest.skip.Exception, match="not found"):
        real_data("made_up")
