"""Permutation blocks on several processes (``--n-procs``) give the serial run's null distributions, bit for bit."""
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

import bids_app.inference.permutation as permutation
from bids_app.graph.parallel import block_map
from bids_app.inference.permutation import permutation_test
from test_inference_data import wager


@pytest.fixture(scope="module")
def group():
    return wager()


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
