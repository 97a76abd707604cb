"""Wall time of one analysis on Dask LocalClusters of 1 and 2 worker processes, against a serial run.

The demo dataset (``bids-stats demo``'s simulation: fMRIPrep-style BOLD in MNI space, 2 runs per
subject) is simulated once; then the demo model (runs -> subject fixed effects -> dataset one-sample
t) runs to the dataset level in fresh output folders: serially, with ``--dask-scheduler local:1``
and with ``--dask-scheduler local:2``. Each configuration runs in its own subprocess (the CLI, as a
user runs it), so start-up of the cluster is included. Printed: seconds per configuration, the
speed-up of 2 workers over 1, and whether every derivative is byte-identical to the serial run's.

Usage::

    python benchmarks/bench_dask_workers.py [--subjects 6] [--repeats 1]

On a shared machine, other jobs' load enters the wall times: compare the ratio, and rerun.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bids_app.demo import simulate_dataset
from bids_app.graph.demo import demo_model_path


def _files(out: Path) -> dict:
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.glob("node-*/**/*")) if p.is_file()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subjects", type=int, default=6)
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    configs = {"serial": [], "dask local:1": ["--dask-scheduler", "local:1"],
               "dask local:2": ["--dask-scheduler", "local:2"]}
    with tempfile.TemporaryDirectory() as tmp:
        bids = Path(tmp) / "bids"
        simulate_dataset(bids, n_subjects=args.subjects, seed=0)
        print(f"demo dataset: {args.subjects} subjects x 2 runs; {os.cpu_count()} CPUs; "
              f"load average {os.getloadavg()[0]:.1f}")
        times, outputs = {}, {}
        for repeat in range(args.repeats):
            for name, extra in configs.items():
                out = Path(tmp) / f"out-{name.replace(' ', '-').replace(':', '')}-{repeat}"
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "bids_app", str(bids), str(out), "dataset",
                                "--model", str(demo_model_path()), "--quiet", *extra], check=True,
                               stdout=subprocess.DEVNULL)
                times.setdefault(name, []).append(time.perf_counter() - start)
                outputs[name] = _files(out)
        for name, seconds in times.items():
            same = outputs[name] == outputs["serial"]
            print(f"{name:14s} {min(seconds):7.1f} s (best of {len(seconds)})  "
                  f"{len(outputs[name])} files, byte-identical to serial: {same}")
        print(f"speed-up of 2 Dask workers over 1: {min(times['dask local:1']) / min(times['dask local:2']):.2f}x; "
              f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
