"""The layering of docs/architecture.md, checked on the source.

* ``design``, ``estimation`` and ``inference`` take and return arrays and
  frames: no file I/O (calls and modules that read or write files);
* a package imports only the packages below it (``ALLOWED``).
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bids_app"

#: Which bids_app packages each package may import (besides itself, ``errors`` and the version).
#: ``io`` builds the plain data objects design and inference take, and writes maps of every
#: kind through ``derivatives`` (which names files with ``io.entities``); ``graph`` calls everything;
#: the commands (``cli``, ``demo``) sit on top.
ALLOWED = {
    "spec": set(),
    "design": {"spec"},
    "estimation": {"spec"},
    "inference": {"estimation"},
    "io": {"design", "inference", "derivatives"},
    "derivatives": {"io", "spec"},
    "report": {"spec", "io", "inference", "derivatives"},
    "graph": {"spec", "io", "design", "estimation", "inference", "derivatives", "report"},
    "demo": {"spec", "io", "design", "estimation", "inference", "derivatives", "report", "graph"},
    "cli": {"spec", "graph", "demo"},
}
PURE = ("design", "estimation", "inference")
#: Calls that read or write files, by the name called (``x.read_csv(...)``, ``open(...)``).
IO_CALLS = {"open", "read_csv", "read_table", "to_csv", "read_text", "read_bytes", "write_text", "write_bytes",
            "savefig", "load_mni152_brain_mask", "mkdir", "unlink", "mkstemp", "to_filename"}
#: ``module.function`` calls that read or write files.
IO_MODULE_CALLS = {("json", "load"), ("json", "dump"), ("nb", "load"), ("nib", "load"), ("nibabel", "load"),
                   ("nb", "save"), ("nib", "save"), ("np", "load"), ("np", "save"), ("np", "savez"),
                   ("pd", "read_json"), ("os", "replace"), ("os", "remove"), ("gzip", "open")}
IO_MODULES = {"tempfile", "shutil", "gzip", "zlib", "glob"}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        layer = rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.stem in ALLOWED else None
        yield path, layer, ast.parse(path.read_text(), str(path))


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node, [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node, [node.module] + [f"{node.module}.{a.name}" for a in node.names]


def test_every_package_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages <= set(ALLOWED), packages - set(ALLOWED)


def test_no_lower_layer_imports_a_higher_one():
    wrong = []
    for path, layer, tree in _modules():
        if layer is None:
            continue
        for node, names in _imports(tree):
            for name in names[:1]:
                parts = name.split(".")
                if parts[0] != "bids_app" or len(parts) < 2:
                    continue
                target = parts[1]
                if target in (layer, "errors") or target not in ALLOWED:
                    continue
                if target not in ALLOWED[layer]:
                    wrong.append(f"{path.relative_to(PACKAGE)}:{node.lineno} ({layer}) imports {name}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("layer", PURE)
def test_maths_layers_do_no_file_io(layer):
    found = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(PACKAGE)
        for node, names in _imports(tree):
            for name in names[:1]:
                if name.split(".")[0] in IO_MODULES:
                    found.append(f"{where}:{node.lineno} imports {name}")
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Name) and func.id in IO_CALLS:
                found.append(f"{where}:{node.lineno} calls {func.id}()")
            elif isinstance(func, ast.Attribute):
                owner = func.value.id if isinstance(func.value, ast.Name) else None
                if func.attr in IO_CALLS or (owner, func.attr) in IO_MODULE_CALLS:
                    found.append(f"{where}:{node.lineno} calls {owner or '...'}.{func.attr}()")
    assert not found, "\n".join(found)


def test_the_io_check_finds_io():
    """The checks above are not vacuous: they flag a reader written the usual ways."""
    tree = ast.parse("import json\nimport pandas as pd\nfrom pathlib import Path\n"
                     "def f(p):\n    pd.read_csv(p)\n    json.load(open(p))\n    Path(p).write_text('x')\n")
    calls = [n.func for n in ast.walk(tree) if isinstance(n, ast.Call)]
    flagged = [c for c in calls if (isinstance(c, ast.Name) and c.id in IO_CALLS) or (
        isinstance(c, ast.Attribute) and (c.attr in IO_CALLS or (getattr(c.value, "id", None), c.attr)
                                          in IO_MODULE_CALLS))]
    assert len(flagged) == 4
