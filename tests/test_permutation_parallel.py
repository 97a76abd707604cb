"""Permutation blocks on several processes (``--n-procs``) give the serial run's null distributions, bit for bit."""
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

import bids_app.inference.permutation as permutation
from bids_app.graph.parallel import block_map
from bids_app.inference.permutation import permutation_test


@pytest.fixture(scope="module")
def group(wager_group):
    return wager_group


@pytest.fixture(scope="module")
def pool_map():
    with block_map(2) as map_blocks:
        yield map_blocks


def _counting(map_blocks, seen):
    def counted(fn, blocks):
        blocks = list(blocks)
        seen.append([len(p if p is not None else s) for p, s in blocks])
        return map_blocks(fn, blocks)
    return counted


def _assert_same(serial, parallel):
    assert serial.null.keys() == parallel.null.keys()
    for key in serial.null:
        np.testing.assert_array_equal(serial.null[key], parallel.null[key], err_msg=key)
    for name in ("t", "logp_max_t", "logp_max_size", "logp_max_mass", "tfce", "logp_max_tfce"):
        np.testing.assert_array_equal(getattr(serial, name), getattr(parallel, name), err_msg=name)
    assert serial.info == parallel.info


def test_block_map_is_a_process_pool_only_outside_workers(pool_map):
    assert pool_map is not map
    with block_map(1) as serial:
        assert serial is map
    # a unit worker already fills a core: its permutations stay in it, no pool inside the pool
    with ProcessPoolExecutor(1) as units:
        assert units.submit(_map_in_worker).result() == "builtins.map"


def _map_in_worker():
    with block_map(2) as map_blocks:
        return f"{map_blocks.__module__}.{map_blocks.__name__}"


def test_one_sample_clusters_and_tfce_identical_on_two_processes(group, pool_map):
    n = group.Y.shape[0]
    kwargs = dict(n_perm=45, seed=4, two_sided=True, cluster_threshold=3.1, tfce=True, batch_size=4)
    seen = []
    serial = permutation_test(group.Y, np.ones((n, 1)), [1.0], group.mask, **kwargs)
    parallel = permutation_test(group.Y, np.ones((n, 1)), [1.0], group.mask,
                                map_blocks=_counting(pool_map, seen), **kwargs)
    _assert_same(serial, parallel)
    # whole batches of 4 in at most N_BLOCKS near-equal blocks, the last one short
    assert len(seen[0]) == permutation.N_BLOCKS and sum(seen[0]) == 45
    assert all(size % 4 == 0 for size in seen[0][:-1])
    assert np.unique(serial.null["max_size"]).size > 1 and np.unique(serial.null["max_tfce"]).size > 1


@pytest.mark.parametrize("contrast", [[0.0, 1.0, 0.0], [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]], ids=["t", "F"])
def test_two_covariate_freedman_lane_identical_on_two_processes(group, pool_map, contrast):
    cov = group.participants[["X_RVLPFC", "Y_Reappraisal_Success"]].to_numpy()
    X = np.column_stack([np.ones(len(cov)), cov])
    serial = permutation_test(group.Y, X, contrast, n_perm=120, seed=7, batch_size=16)
    parallel = permutation_test(group.Y, X, contrast, n_perm=120, seed=7, batch_size=16, map_blocks=pool_map)
    _assert_same(serial, parallel)
    assert serial.info["nuisance"] == "Freedman-Lane" and np.unique(serial.null["max_t"]).size == 120


@pytest.mark.parametrize("test", ["t", "F"])
def test_cluster_forming_threshold_equals_scipy_stats(test):
    from scipy import stats

    from bids_app.inference.permutation import _Design, _Statistic

    for dof in (1, 2, 5, 14, 29, 200):
        for rank in ((1,) if test == "t" else (1, 2, 3)):
            design = _Design(np.zeros((dof + rank, rank)), np.zeros((dof + rank, 0)), True, False, dof, test)
            for z in (1.0, 2.3, 3.1, 4.5):
                expected = (stats.t.isf(stats.norm.sf(z), dof) if test == "t"
                            else stats.f.isf(stats.norm.sf(z), rank, dof))
                assert _Statistic(design, two_sided=False).threshold(z) == float(expected)


def test_batched_cluster_maxima_equal_clusters_map_by_map(group):
    from bids_app.inference.connectivity import ClusterLabeller, voxel_graph

    labeller = ClusterLabeller(voxel_graph(group.mask))
    rng = np.random.default_rng(0)
    # smooth-ish random maps: group maps with random signs, so clusters form
    maps = (rng.choice([-1.0, 1.0], (12, group.Y.shape[0])) @ group.Y) / np.sqrt(group.Y.shape[0])
    maps /= maps.std(axis=1, keepdims=True)
    for two_sided in (False, True):
        # candidates: a superset of the units over the threshold, in np.nonzero order
        rows, units = np.nonzero(np.abs(maps) > 1.5)
        size, mass = labeller.max_measures(rows, units, maps[rows, units], 2.0, two_sided, len(maps))
        for i, stat in enumerate(maps):
            _, sizes, masses = labeller.clusters(stat, 2.0, two_sided)
            assert size[i] == sizes.max(initial=0) and mass[i] == masses.max(initial=0.0)
        assert size.max() > 1


@pytest.mark.parametrize("kind", ["t one-sided", "t two-sided", "t nuisance", "F", "F nuisance"])
def test_supra_units_hold_every_unit_over_the_threshold_with_its_exact_statistic(kind):
    from bids_app.inference.permutation import _Design, _Statistic

    rng = np.random.default_rng(1)
    test, rank = ("F", 2) if kind.startswith("F") else ("t", 1)
    statistic = _Statistic(_Design(np.zeros((20, rank)), np.zeros((20, 0)), True, False, 15, test),
                           two_sided=kind == "t two-sided")
    # unit-norm data: a^2 + |b|^2 <= 1
    a = np.clip(rng.standard_normal((30, 5000)) * 0.35, -0.9, 0.9).astype(np.float32)
    b_squared = rng.uniform(0, 0.09, (30, 5000)).astype(np.float32) if "nuisance" in kind else 0.0
    if test == "F":
        a = np.square(a)
    full = statistic.maps(a, b_squared)
    threshold = statistic.threshold(3.1)
    maps, units, values = statistic.supra(a, b_squared, threshold)
    passing = (np.abs(full) if statistic.two_sided else full) > threshold
    assert passing.sum() > 20 and passing[maps, units].sum() == passing.sum()
    assert maps.size < 3 * passing.sum()
    np.testing.assert_array_equal(values, full[maps, units])
    assert np.array_equal(np.ravel_multi_index((maps, units), a.shape),
                          np.sort(np.ravel_multi_index((maps, units), a.shape)))
