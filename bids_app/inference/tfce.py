"""Threshold-free cluster enhancement (TFCE) on the voxels of a mask.

TFCE (Smith & Nichols 2009, NeuroImage 44:83) replaces each voxel's statistic
``t_v`` by

    TFCE(v) = sum_{k=1}^{floor(t_v / dh)} e_k(v)**E * (k dh)**H * dh,

where ``e_k(v)`` is the number of voxels in the face-connected cluster of
``{t >= k dh}`` that contains ``v``. This is the Riemann sum of the paper's
integral, ``dh`` included, so values do not depend on the number of steps
(nilearn and ``fslmaths -tfce`` instead take 100 steps of ``max(t) / 100`` per
map and omit ``dh``: their values are ours divided by their step). Negative
statistics are enhanced the same way on ``-t`` and keep their sign.

Algorithm: rather than labelling the whole volume at every height, the
heights that occur are swept from the top down and only what changes at each
height is connected: the voxels born there and the face-neighbour pairs whose
lower end sits there (:func:`scipy.sparse.csgraph.connected_components` on
that small graph of "clusters of the level above + new voxels"). Every pair and
voxel is handled once, which builds the component tree of the map; the sums
above are then accumulated from the root down. Several maps (permutations)
are processed together as one graph of disjoint copies, which shares the
per-height overhead. The result equals the label-every-height definition to
rounding (see the tests); on 2 mm whole-brain maps it is ~25x faster than
nilearn's TFCE in its permutation loop (``benchmarks/bench_permutation.py``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from bids_app.inference.connectivity import VoxelGraph

#: Extent exponent, height exponent and height step (statistic units) of
#: Smith & Nichols (2009); ``DH`` = 0.1 is the paper's step for t and z maps.
E, H, DH = 0.5, 2.0, 0.1

#: Heights above ``_MAX_STEPS * dh`` (t > 10^5 at dh = 0.1) count as that height. Such t values
#: occur with very few inputs (one degree of freedom: two maps nearly equal, or nearly opposite
#: after a sign flip); a permutation test that caps the observed and every resampled map alike
#: stays exact.
_MAX_STEPS = 1_000_000

#: Neighbour pairs handled per call when several maps are stacked (~100 MB).
_PAIRS_PER_CALL = 4_000_000


def tfce(stat, graph: VoxelGraph, *, two_sided: bool = True, dh: float = DH,
         e: float = E, h: float = H) -> np.ndarray:
    """TFCE of a masked statistic map.

    Parameters
    ----------
    stat : ndarray, shape (n_voxels,)
        Statistic (t or z) in the graph's voxel order.
    graph : VoxelGraph
    two_sided : bool
        Enhance negative values too (on ``-stat``, returned negative);
        otherwise negative values get 0.
    dh : float
        Height step, in the statistic's units.
    e, h : float
        Extent and height exponents.

    Returns
    -------
    ndarray, float64, shape (n_voxels,)
        Signed TFCE values.
    """
    stat = np.asarray(stat, dtype=np.float64)
    cap = _MAX_STEPS * dh
    capped = int((np.abs(stat) > cap).sum())
    if capped:
        warnings.warn(f"TFCE: |statistic| above {cap:g} at {capped} unit(s) counted as {cap:g} (in every "
                      "permutation too); such values come from near-zero variance across very few inputs",
                      UserWarning, stacklevel=2)
    return np.copysign(_unsigned_tfce(stat[None], graph, two_sided, dh, e, h)[0], stat)


def max_tfce(stats, graph: VoxelGraph, *, two_sided: bool = True, dh: float = DH,
             e: float = E, h: float = H) -> np.ndarray:
    """Largest TFCE (of ``|TFCE|`` if two-sided) of each of several maps.

    Maps are processed together, as one graph of disjoint copies, so the
    per-height overhead is shared: this is what makes TFCE permutation
    tests fast.

    Parameters
    ----------
    stats : ndarray, shape (n_maps, n_voxels)
    graph, two_sided, dh, e, h
        As :func:`tfce`.

    Returns
    -------
    ndarray, float64, shape (n_maps,)
    """
    stats = np.asarray(stats, dtype=np.float64)
    per_call = max(1, _PAIRS_PER_CALL // max(1, len(graph.pairs)))
    return np.concatenate([
        _unsigned_tfce(stats[i:i + per_call], graph, two_sided, dh, e, h).max(axis=1)
        for i in range(0, len(stats), per_call)])


def _unsigned_tfce(stats, graph, two_sided, dh, e, h):
    """|TFCE| of each map, shape (n_maps, n_voxels)."""
    tree = _component_tree(stats, graph, two_sided, dh)
    out = np.zeros(stats.size)
    if tree is not None:
        for born, birth_node, score in zip(tree.born, tree.birth_node, _scores(tree, dh, e, h)):
            out[born] = score[birth_node]
    return out.reshape(stats.shape)


@dataclass
class _ComponentTree:
    """Clusters of ``{|t| >= k dh}`` at every height k where something changes.

    Lists are indexed by event (highest height first): ``levels[i]`` is the
    height in steps, ``extent[i]`` the voxel count of each cluster there,
    ``parent[i]`` maps the clusters of event ``i - 1`` (``parent[0]`` is empty)
    to their cluster at event ``i``, and the voxels ``born[i]`` (whose height
    is ``levels[i]``) belong to clusters ``birth_node[i]``. Voxel indices
    run over the maps end to end (map ``m``, voxel ``j`` is ``m * n_voxels + j``).
    """

    levels: np.ndarray
    extent: list
    parent: list
    born: list
    birth_node: list


def _component_tree(stats, graph, two_sided, dh):
    if not np.all(np.isfinite(stats)):
        raise ValueError("TFCE needs finite statistic maps")
    n_maps, n_voxels = stats.shape
    stat = stats.ravel()
    height = np.abs(stat) if two_sided else np.maximum(stat, 0.0)
    top = np.floor(height.max(initial=0.0) / dh)
    if top == 0:
        return None
    if top > _MAX_STEPS:
        height, top = np.minimum(height, _MAX_STEPS * dh), _MAX_STEPS
    # 16-bit steps when they fit: less memory traffic, and radix sorting below
    steps = np.floor(height / dh).astype(np.int16 if top < 2**15 else np.int32)
    index = np.int32 if stat.size < np.iinfo(np.int32).max else np.int64
    # the maps' graphs as disjoint copies of the mask graph
    offsets = (np.arange(n_maps, dtype=index) * n_voxels)[:, None]
    lo = (graph.pairs[:, 0].astype(index) + offsets).ravel()
    hi = (graph.pairs[:, 1].astype(index) + offsets).ravel()
    pair_steps = np.minimum(steps[lo], steps[hi])
    live = pair_steps > 0
    if two_sided:
        # a positive and a negative voxel never share a cluster
        negative = np.signbit(stat)
        live &= negative[lo] == negative[hi]
    lo, hi, pair_steps = lo[live], hi[live], pair_steps[live]

    levels = np.flatnonzero(np.bincount(steps)[1:])[::-1] + 1
    # stable argsort of 16-bit keys is a radix sort: the grouping is O(n)
    voxel_order = np.argsort(-steps, kind="stable").astype(index)
    pair_order = np.argsort(-pair_steps, kind="stable")
    lo, hi = lo[pair_order], hi[pair_order]
    voxel_end = np.searchsorted(-steps[voxel_order], -levels, side="right")
    pair_end = np.searchsorted(-pair_steps[pair_order], -levels, side="right")

    node = np.empty(stat.size, dtype=np.int64)  # cluster of each live voxel at the current event
    extent, parent, born, birth_node = [], [], [], []
    n_prev, extent_prev = 0, np.zeros(0)
    voxel_start = pair_start = 0
    for v_end, p_end in zip(voxel_end, pair_end):
        new = voxel_order[voxel_start:v_end]
        node[new] = n_prev + np.arange(new.size)
        n_nodes = n_prev + new.size
        if p_end > pair_start:
            a, b = node[lo[pair_start:p_end]], node[hi[pair_start:p_end]]
            adjacency = sparse.csr_array(
                (np.ones(a.size, dtype=np.int8), (a, b)), shape=(n_nodes, n_nodes))
            n_comp, label = connected_components(adjacency, directed=False)
        else:  # nothing merges: every node is its own cluster
            n_comp, label = n_nodes, np.arange(n_nodes)
        extent_prev = np.bincount(
            label, weights=np.concatenate([extent_prev, np.ones(new.size)]), minlength=n_comp)
        extent.append(extent_prev)
        parent.append(label[:n_prev])
        born.append(new)
        live_voxels = voxel_order[:v_end]
        node[live_voxels] = label[node[live_voxels]]
        birth_node.append(node[new])
        n_prev, voxel_start, pair_start = n_comp, v_end, p_end
    return _ComponentTree(levels, extent, parent, born, birth_node)


def _scores(tree, dh, e, h):
    """TFCE score of every cluster of every event, accumulated from the root."""
    # a cluster formed at event i lasts over the steps (levels[i + 1], levels[i]]
    cumulative = np.concatenate([[0.0], np.cumsum(np.arange(1, tree.levels[0] + 1) ** h)])
    below = np.append(tree.levels[1:], 0)
    band = (cumulative[tree.levels] - cumulative[below]) * dh ** (h + 1)
    scores, running = [], None
    for i in reversed(range(len(tree.levels))):
        own = tree.extent[i] ** e * band[i]
        running = own if running is None else own + running[tree.parent[i + 1]]
        scores.append(running)
    return scores[::-1]
