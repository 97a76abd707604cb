"""Compare two bids-stats output folders made by the same command (e.g. in the container and on the host).

usage: python container/compare_outputs.py HOST_OUT CONTAINER_OUT [--path CONTAINER_PATH=HOST_PATH ...]
       [--rtol 1e-6] [--atol 1e-9]

Every file under the node folders must exist on both sides. Files whose bytes are equal
pass at once. Otherwise NIfTI images must have equal shapes, affines and NaN patterns and
values equal within ``atol + rtol * max|host|`` (the two sides may run different builds of
numpy/scipy/BLAS, which change the last bits); JSON sidecars must be equal after container
paths are mapped to host paths (``--path``), with numbers within the same tolerance; TSV
tables likewise. Prints one line per kind of file and exits 1 on any difference.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import nibabel as nb
import numpy as np
import pandas as pd


def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> tuple[bool, float]:
    if a.shape != b.shape:
        return False, math.inf
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return False, math.inf
    finite = np.isfinite(a)
    if not np.array_equal(a[~finite & ~np.isnan(a)], b[~finite & ~np.isnan(b)]):
        return False, math.inf
    if not finite.any():
        return True, 0.0
    diff = float(np.max(np.abs(a[finite] - b[finite])))
    return diff <= atol + rtol * float(np.max(np.abs(a[finite]))), diff


def _json_equal(a, b, rtol: float, atol: float) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k], rtol, atol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y, rtol, atol) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        if not all(isinstance(v, (int, float)) for v in (a, b)):
            return False
        return a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= atol + rtol * abs(a)
    return a == b


def _map_paths(text: str, paths: list[tuple[str, str]]) -> str:
    for ctr, host in paths:
        text = text.replace(ctr, host)
    return text


def compare(host: Path, ctr: Path, paths: list[tuple[str, str]], rtol: float, atol: float) -> list[str]:
    """Differences between the node folders of ``host`` and ``ctr`` (empty list: equal), printing a summary."""
    files = {p.relative_to(host) for p in host.glob("node-*/**/*") if p.is_file()}
    other = {p.relative_to(ctr) for p in ctr.glob("node-*/**/*") if p.is_file()}
    problems = [f"only on the host: {p}" for p in sorted(files - other)]
    problems += [f"only in the container: {p}" for p in sorted(other - files)]
    stats = {}
    for rel in sorted(files & other):
        a, b = host / rel, ctr / rel
        kind = "".join(rel.suffixes[-2:]) if rel.name.endswith(".gz") else rel.suffix
        count = stats.setdefault(kind, {"files": 0, "identical": 0, "max_abs_diff": 0.0})
        count["files"] += 1
        if a.read_bytes() == b.read_bytes():
            count["identical"] += 1
            continue
        if kind in (".nii.gz", ".nii"):
            ia, ib = nb.load(a), nb.load(b)
            ok = np.allclose(ia.affine, ib.affine, rtol=0, atol=1e-6)
            same, diff = _close(ia.get_fdata(), ib.get_fdata(), rtol, atol)
            count["max_abs_diff"] = max(count["max_abs_diff"], diff)
            if not (ok and same):
                problems.append(f"{rel}: values differ (max |diff| {diff:.3g})")
        elif kind == ".json":
            ja = json.loads(a.read_text())
            jb = json.loads(_map_paths(b.read_text(), paths))
            if not _json_equal(ja, jb, rtol, atol):
                problems.append(f"{rel}: JSON differs")
        elif kind in (".tsv", ".tsv.gz"):
            ta = pd.read_csv(a, sep="\t")
            tb = pd.read_csv(b, sep="\t")
            numeric = ta.select_dtypes("number").columns
            same = list(ta.columns) == list(tb.columns) and len(ta) == len(tb) and ta.drop(columns=numeric).astype(
                str).equals(tb.drop(columns=numeric).astype(str).map(lambda v: _map_paths(v, paths)))
            ok, diff = _close(ta[numeric].to_numpy(), tb[numeric].to_numpy(), rtol, atol) if same else (False, 0)
            count["max_abs_diff"] = max(count["max_abs_diff"], diff)
            if not (same and ok):
                problems.append(f"{rel}: table differs")
        else:
            problems.append(f"{rel}: bytes differ")
    for kind, count in sorted(stats.items()):
        print(f"  {kind:8s} {count['files']:4d} file(s), {count['identical']:4d} byte-identical, "
              f"max |diff| of the others {count['max_abs_diff']:.3g}")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("host", type=Path)
    p.add_argument("container", type=Path)
    p.add_argument("--path", action="append", default=[], metavar="CONTAINER_PATH=HOST_PATH")
    p.add_argument("--rtol", type=float, default=1e-6)
    p.add_argument("--atol", type=float, default=1e-9)
    args = p.parse_args(argv)
    paths = [tuple(item.split("=", 1)) for item in args.path]
    print(f"comparing {args.container} (container) with {args.host} (host); "
          f"tolerance {args.atol:g} + {args.rtol:g} x max|host| where bytes differ")
    problems = compare(args.host, args.container, paths, args.rtol, args.atol)
    if not any(args.host.glob("node-*/**/*.nii*")):
        problems.append("no maps to compare")
    for line in problems:
        print(f"  DIFFERENT: {line}")
    print("container outputs equal the host's" if not problems else f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
