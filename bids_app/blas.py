"""One BLAS thread around small products, with one threadpoolctl handle per process.

The fits, design diagnostics and permutation blocks multiply small matrices
(a design's few columns by a few hundred voxels, blocks sized to stay in
cache): a second OpenBLAS thread only adds synchronisation there (on a busy
2-core machine, 0.45 s vs 1.35 s for a 40k-voxel run). ``threadpool_limits``
looks for the loaded BLAS libraries on every call (~1-4 ms, more with many
extension modules loaded); the handle here looks once. scipy.linalg is
imported first so that both numpy's and scipy's BLAS are loaded when it looks.
"""
from __future__ import annotations

import functools

import scipy.linalg  # noqa: F401  (loads scipy's BLAS before the handle looks for libraries)
from threadpoolctl import ThreadpoolController


@functools.cache
def _controller() -> ThreadpoolController:
    return ThreadpoolController()


def one_blas_thread():
    """A context manager running the BLAS libraries (numpy's, scipy's) on one thread, restored on exit."""
    return _controller().limit(limits=1, user_api="blas")
