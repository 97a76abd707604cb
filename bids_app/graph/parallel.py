"""Where independent units of work run: in this process, a local process pool, or a Dask cluster.

Every backend has one method, ``map(fn, items, on_done=None)``: it calls
``fn(item)`` for each item and returns the results in the order of ``items``,
whatever order they finished in, so outputs never depend on scheduling. The
optional ``on_done(index, result)`` is called in this process as each item
finishes (progress display). When an item fails, items not yet started are
cancelled, the ones running are waited for (their ``on_done`` still fires, so
finished work is recorded), then the first error is raised.

Dask (``--dask-scheduler``) is imported only when asked for: ``local:N``
starts a LocalCluster of N single-threaded worker processes on this machine;
any other value is the address of a running scheduler (e.g. one started by
dask-jobqueue on SLURM, see docs/hpc.md), whose workers must see the same
file system paths as this process.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager

from bids_app.errors import UsageError

log = logging.getLogger(__name__)


class SerialBackend:
    """Everything in this process, one item after the other."""

    workers = 1

    def map(self, fn, items, on_done=None) -> list:
        results = []
        for i, item in enumerate(items):
            results.append(fn(item))
            if on_done:
                on_done(i, results[-1])
        return results

    def close(self) -> None:
        pass


class ProcessBackend:
    """A pool of ``n`` local worker processes, started at the first map with two or more items."""

    def __init__(self, n: int):
        self.workers = n
        self._pool = None

    def map(self, fn, items, on_done=None) -> list:
        items = list(items)
        if len(items) < 2:
            return SerialBackend().map(fn, items, on_done)
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, initializer=die_with_parent,
                                             initargs=(os.getpid(),))
        futures = {self._pool.submit(fn, item): i for i, item in enumerate(items)}
        return _collect(futures, as_completed(futures), on_done, len(items))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


class DaskBackend:
    """A Dask distributed client: a LocalCluster (``local:N``) or a running scheduler's address.

    Connects at the first map, so a run that stops on bad input starts no cluster.
    """

    def __init__(self, address: str):
        self.address = address
        self._client = self._cluster = None
        if address.startswith("local:"):
            self.workers = _positive_int(address.removeprefix("local:"))

    def client(self):
        if self._client is not None:
            return self._client
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise UsageError("--dask-scheduler needs Dask distributed: pip install 'bids-stats[dask]'") from None
        if not log.isEnabledFor(logging.INFO):  # Dask's INFO lines only with -v
            logging.getLogger("distributed").setLevel(logging.WARNING)
        if self.address.startswith("local:"):
            # one thread per worker: units are numpy code holding the GIL between BLAS calls;
            # dashboard on a free port, so concurrent runs on one node do not collide on 8787
            self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                         dashboard_address=":0")
            self._client = Client(self._cluster)
        else:
            try:
                self._client = Client(self.address, timeout="30s")
            except OSError as exc:
                raise UsageError(f"cannot reach the Dask scheduler at {self.address!r}: {exc}") from None
        self.workers = len(self._client.scheduler_info().get("workers", {})) or 1
        log.info("Dask scheduler %s with %d worker(s)", self._client.scheduler.address, self.workers)
        return self._client

    def map(self, fn, items, on_done=None) -> list:
        items = list(items)
        if not items:
            return []
        from dask.distributed import as_completed as dask_completed

        # pure=False: the same unit submitted twice (a rerun in one session) must run again
        futures = self.client().map(fn, items, pure=False)
        return _collect({f: i for i, f in enumerate(futures)}, dask_completed(futures), on_done, len(items))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def _collect(index_of: dict, completed, on_done, n: int) -> list:
    """Results in submission order from futures yielded as they finish.

    On an error, what has not started is cancelled; ``completed`` still yields
    every future, so the loop waits for running items (reporting them) before
    raising the first error.
    """
    results, error = [None] * n, None
    for future in completed:
        try:
            result = future.result()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the running items settle
            if error is None:
                error = exc
                for other in index_of:
                    other.cancel()
            continue
        results[index_of[future]] = result
        if on_done:
            on_done(index_of[future], result)
    if error is not None:
        raise error
    return results


@contextmanager
def block_map(n_procs: int):
    """A ``map`` over the independent blocks of one computation (permutations): builtin ``map``, or ``n_procs`` processes.

    Inside a unit worker (``--n-procs`` or Dask spread the units over
    processes) the blocks stay in that process: the unit workers already fill
    the cores, and pools inside pools would oversubscribe them. Block workers
    use one BLAS thread each, for the same reason.
    """
    if n_procs <= 1 or multiprocessing.parent_process() is not None:
        yield map
        return
    with ProcessPoolExecutor(max_workers=n_procs, initializer=_block_worker, initargs=(os.getpid(),)) as pool:
        yield pool.map


def _block_worker(parent: int) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    die_with_parent(parent)


def die_with_parent(parent: int) -> None:
    """Worker initializer: end this worker as soon as the process that started the run is gone.

    A killed parent (``kill -9``, an HPC job hitting its time limit) must not
    leave workers that keep fitting and writing into OUTPUT_DIR. Linux ends
    the worker at once (``PR_SET_PDEATHSIG``); elsewhere, and as a fallback,
    a watcher thread checks every half second.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    start = os.getppid()

    def watch():
        while True:
            time.sleep(0.5)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(1)
            if os.getppid() != start:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise UsageError(f"--dask-scheduler local:N needs a whole number of workers N >= 1, got {text!r}")
    return n


def open_backend(n_procs: int = 1, dask_scheduler: str | None = None):
    """The backend the settings ask for: Dask when a scheduler is named, else ``n_procs`` local processes."""
    if dask_scheduler:
        return DaskBackend(dask_scheduler)
    if n_procs > 1:
        return ProcessBackend(n_procs)
    return SerialBackend()
