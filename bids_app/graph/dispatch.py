"""Run a node's independent units on a backend (:mod:`bids_app.graph.parallel`).

Each unit gets its own copy of the context with an empty log, wherever it
runs (this process, a pool worker, a Dask worker); the logs come back with
the results and are merged in unit order, so maps, provenance and warnings
are those of a serial run whatever the scheduling.
"""
from __future__ import annotations

import functools
from dataclasses import replace

from bids_app.derivatives.atomic import journal
from bids_app.graph.context import Context, RunLog


def map_units(ctx: Context, backend, fn, units: list[tuple], tick=None, keep_index: bool = True) -> list:
    """``[fn(ctx, *unit) for unit in units]`` on ``backend``, logs merged into ``ctx.log`` in unit order.

    Parameters
    ----------
    fn : callable
        A unit function, ``fn(ctx, *unit) -> result``; module level, so it pickles.
    units : list of tuple
        Each unit's arguments after the context.
    tick : callable, optional
        Called with the unit's index as each unit finishes (progress).
    keep_index : bool
        Whether units need the file index (run units do not; it is not sent then).

    Units that finished before another failed are still merged, so their records count.
    """
    shipped = replace(ctx, index=ctx.index if keep_index else None, log=RunLog())
    hashes = dict(ctx.log.input_hashes)
    call = functools.partial(_isolated, fn, shipped, hashes)
    finished = {}

    def done(i, result):
        finished[i] = result
        if tick:
            tick(i)

    try:
        backend.map(call, units, done)
    finally:
        for i in sorted(finished):
            ctx.log.merge(finished[i][1])
    return [finished[i][0] for i in range(len(units))]


def _isolated(fn, ctx: Context, hashes: dict, unit: tuple):
    own = replace(ctx, log=RunLog(input_hashes=dict(hashes)))
    # a worker's writes are not seen by the caller's journal: a failed unit removes its own files here
    with journal() as written:
        try:
            result = fn(own, *unit)
        except BaseException:
            written.rollback()
            raise
    return result, own.log
