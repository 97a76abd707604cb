"""permutation_test against nilearn's permutation inference on real group maps, and against
exhaustive enumeration and TFCE's definition in memory."""
import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, stats

from bids_app.errors import DesignError
from bids_app.inference.permutation import draw_resamplings, permutation_test
from bids_app.inference.connectivity import voxel_graph
from bids_app.inference.tfce import tfce
from conftest import simulated_z_map

N_PERM = 400


@pytest.fixture(scope="module")
def group(wager_group):
    return wager_group


def designs(group):
    """Our design, nilearn's design and contrast column, our contrast."""
    n = group.Y.shape[0]
    cov = group.participants[["X_RVLPFC", "Y_Reappraisal_Success"]].to_numpy()
    one = np.ones((n, 1))
    return {
        "one-sample": (one, pd.DataFrame({"intercept": one[:, 0]}), "intercept", [1.0]),
        # nilearn sign-flips whenever its confounds hold an intercept column, so
        # its design omits it (model_intercept adds it) to get permutations
        "covariate": (np.column_stack([one, cov[:, 0]]),
                      pd.DataFrame({"X_RVLPFC": cov[:, 0]}), "X_RVLPFC", [0.0, 1.0]),
        "two covariates": (np.column_stack([one, cov]),
                           pd.DataFrame(cov, columns=["X_RVLPFC", "Y_Reappraisal_Success"]),
                           "X_RVLPFC", [0.0, 1.0, 0.0]),
    }


def nilearn_inference(group, design, column, n_perm, **kwargs):
    from nilearn.glm.second_level import non_parametric_inference

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return non_parametric_inference(
            list(group.images), design_matrix=design, second_level_contrast=column,
            mask=group.mask_img(), n_perm=n_perm, two_sided_test=True, random_state=0,
            n_jobs=1, **kwargs)


def assert_within_monte_carlo(logp, logp_ref, n_perm):
    """Voxelwise FWE p from two independent Monte-Carlo runs agree.

    Each p is an empirical tail of a null distribution; their difference has
    sd ``sqrt(2 p (1 - p) / n_perm)``. The bound allows 4 sd, not 3, because
    it must hold at every voxel, i.e. over the whole range of p at once (a 3 sd
    band is crossed somewhere in ~5-10% of runs), plus 2/n for the +1 and
    clipping conventions.
    """
    p, p_ref = 10.0 ** -logp, 10.0 ** -logp_ref
    mean = (p + p_ref) / 2
    bound = 4 * np.sqrt(2 * mean * (1 - mean) / n_perm) + 2 / n_perm
    assert np.all(np.abs(p - p_ref) <= bound), np.abs(p - p_ref).max()


@pytest.mark.parametrize("name", ["one-sample", "covariate", "two covariates"])
def test_t_is_nilearns_t(group, name):
    from nilearn.mass_univariate import permuted_ols

    X, design, column, contrast = designs(group)[name]
    confounds = design.drop(columns=column).to_numpy() if design.shape[1] > 1 else None
    expected = permuted_ols(design[column].to_numpy()[:, None], group.Y, confounds,
                            model_intercept=True, n_perm=0)["t"][0]
    result = permutation_test(group.Y, X, contrast, n_perm=1)
    np.testing.assert_allclose(result.t, expected, rtol=1e-10, atol=1e-10)
    assert result.info["scheme"] == ("sign-flip" if name == "one-sample" else "permutation")


def test_t_of_a_difference_contrast_matches_statsmodels(group):
    import statsmodels.api as sm

    n = group.Y.shape[0]
    cov = group.participants[["X_RVLPFC", "Y_Reappraisal_Success"]].to_numpy()
    X = np.column_stack([np.ones(n), cov])
    contrast = np.array([0.0, 1.0, -1.0])
    result = permutation_test(group.Y, X, contrast, n_perm=1)
    voxels = np.linspace(0, group.Y.shape[1] - 1, 40).astype(int)
    expected = [sm.OLS(group.Y[:, v], X).fit().t_test(contrast).tvalue.item() for v in voxels]
    np.testing.assert_allclose(result.t[voxels], expected, rtol=1e-9)


@pytest.mark.parametrize("name", ["one-sample", "covariate"])
def test_max_t_fwe_matches_nilearn(group, name):
    """Against permuted_ols, the engine of nilearn's non_parametric_inference."""
    from nilearn.mass_univariate import permuted_ols

    X, design, column, contrast = designs(group)[name]
    result = permutation_test(group.Y, X, contrast, n_perm=N_PERM, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = permuted_ols(design[column].to_numpy()[:, None], group.Y, None,
                                 model_intercept=True, n_perm=N_PERM, random_state=0)
    assert_within_monte_carlo(result.logp_max_t, reference["logp_max_t"][0], N_PERM)
    assert stats.ks_2samp(result.null["max_t"], reference["h0_max_t"][0]).pvalue > 1e-3
    assert (result.logp_max_t > -np.log10(0.05)).sum() > 50  # real effects: not vacuous
    assert result.info["n_perm"] == N_PERM and result.info["seed"] == 1


def test_cluster_fwe_matches_nilearn(group):
    """Through nilearn's image-level non_parametric_inference."""
    n_perm, p_forming = 150, 0.001
    X, design, column, contrast = designs(group)["one-sample"]
    result = permutation_test(group.Y, X, contrast, group.mask, n_perm=n_perm, seed=3,
                              cluster_threshold=stats.norm.isf(p_forming / 2))
    reference = nilearn_inference(group, design, column, n_perm, threshold=p_forming)
    mask = group.mask
    np.testing.assert_array_equal(result.cluster_size, reference["size"].get_fdata()[mask])
    # nilearn's t comes from float32 images
    np.testing.assert_allclose(result.cluster_mass, reference["mass"].get_fdata()[mask],
                               rtol=1e-4)
    assert result.info["cluster_threshold_t"] == pytest.approx(stats.t.isf(p_forming / 2, 29))
    for ours, theirs in (("logp_max_size", "logp_max_size"), ("logp_max_mass", "logp_max_mass")):
        assert_within_monte_carlo(getattr(result, ours), reference[theirs].get_fdata()[mask],
                                  n_perm)
    assert (result.logp_max_size > -np.log10(0.05)).sum() > 50


def brute_force_tfce(volume, dh, e=0.5, h=2.0):
    """TFCE by its definition: label every height step (both signs)."""
    out = np.zeros(volume.shape)
    structure = ndimage.generate_binary_structure(3, 1)
    for sign in (1, -1):
        signed = sign * volume
        for step in range(1, int(signed.max() // dh) + 1):
            labels, _ = ndimage.label(signed >= step * dh, structure)
            extent = np.bincount(labels.ravel()).astype(float)
            extent[0] = 0
            out += sign * extent[labels] ** e * (step * dh) ** h * dh
    return out


def test_tfce_matches_its_definition_and_nilearn(group):
    from nilearn.mass_univariate._utils import calculate_tfce

    t = permutation_test(group.Y, np.ones((30, 1)), [1.0], n_perm=1).t
    graph = voxel_graph(group.mask)
    expected = brute_force_tfce(group.volume(t), 0.1)[group.mask]
    np.testing.assert_allclose(tfce(t, graph, dh=0.1), expected, rtol=1e-12, atol=1e-9)
    # nilearn takes 100 steps of max|t| / 100 and does not multiply by the step
    step = np.abs(t).max() / 100
    faces = ndimage.generate_binary_structure(3, 1)
    nilearn_tfce = calculate_tfce(group.volume(t)[..., None], faces)
    np.testing.assert_allclose(tfce(t, graph, dh=step), nilearn_tfce[..., 0][group.mask] * step,
                               rtol=1e-9, atol=1e-9)
    one_sided = tfce(t, graph, two_sided=False)
    assert (one_sided[t < 0] == 0).all() and np.allclose(one_sided[t > 0], expected[t > 0])


def test_null_maxima_are_those_of_the_resampled_maps(group):
    """The first draws, redone by hand: sign-flipped data, OLS t, clusters, TFCE."""
    n_perm, seed, z_forming = 4, 7, 3.1
    n = group.Y.shape[0]
    result = permutation_test(group.Y, np.ones((n, 1)), [1.0], group.mask, n_perm=n_perm,
                              seed=seed, cluster_threshold=z_forming, tfce=True)
    signs = draw_resamplings(n, n_perm, np.random.default_rng(seed), sign_flip=True)
    t_forming = stats.t.isf(stats.norm.sf(z_forming), n - 1)
    structure = ndimage.generate_binary_structure(3, 1)
    for b in range(n_perm):
        t = stats.ttest_1samp(signs[b][:, None] * group.Y, 0.0, axis=0).statistic
        assert result.null["max_t"][b] == pytest.approx(np.abs(t).max(), rel=1e-5)
        volume = group.volume(t)
        sizes = [np.bincount(ndimage.label(s * volume > t_forming, structure)[0].ravel())[1:]
                 for s in (1, -1)]
        assert result.null["max_size"][b] == max(s.max(initial=0) for s in sizes)
        expected_tfce = np.abs(brute_force_tfce(volume, 0.1)).max()
        assert result.null["max_tfce"][b] == pytest.approx(expected_tfce, rel=1e-3)


def test_deterministic_for_a_seed_whatever_the_batches(group):
    X, _, _, contrast = designs(group)["covariate"]
    first = permutation_test(group.Y, X, contrast, group.mask, n_perm=60, seed=5,
                             cluster_threshold=3.1)
    again = permutation_test(group.Y, X, contrast, group.mask, n_perm=60, seed=5,
                             cluster_threshold=3.1)
    batched = permutation_test(group.Y, X, contrast, group.mask, n_perm=60, seed=5,
                               cluster_threshold=3.1, batch_size=7)
    other = permutation_test(group.Y, X, contrast, n_perm=60, seed=6)
    np.testing.assert_array_equal(first.logp_max_t, again.logp_max_t)
    np.testing.assert_array_equal(first.null["max_size"], again.null["max_size"])
    np.testing.assert_allclose(first.null["max_t"], batched.null["max_t"], rtol=1e-5)
    np.testing.assert_array_equal(first.null["max_size"], batched.null["max_size"])
    assert not np.allclose(first.null["max_t"], other.null["max_t"])
    assert first.info["seed"] == 5 and batched.info["batch_size"] == 7


BLOCKS = np.repeat([3, 1, 2], [4, 4, 4])[np.random.default_rng(0).permutation(12)]


def test_within_block_permutations_stay_in_their_block():
    perms = draw_resamplings(12, 500, np.random.default_rng(1), sign_flip=False, blocks=BLOCKS)
    assert (BLOCKS[perms] == BLOCKS).all()
    assert all(sorted(p) == list(range(12)) for p in perms)
    # every within-block arrangement is reachable: rows do move
    assert (perms != np.arange(12)).mean() > 0.6


def test_whole_block_permutations_move_blocks_intact():
    perms = draw_resamplings(12, 500, np.random.default_rng(2), sign_flip=False, blocks=BLOCKS,
                             within_block=False)
    members = {b: np.flatnonzero(BLOCKS == b) for b in np.unique(BLOCKS)}
    for perm in perms:
        targets = [perm[rows] for rows in members.values()]
        # each block lands, in order, on one whole block
        assert all(any(np.array_equal(t, rows) for rows in members.values()) for t in targets)
    assert len({tuple(p) for p in perms}) == 6  # 3! block orders


def test_sign_flips_respect_blocks():
    whole = draw_resamplings(12, 200, np.random.default_rng(3), sign_flip=True, blocks=BLOCKS,
                             within_block=False)
    for b in np.unique(BLOCKS):
        assert (whole[:, BLOCKS == b] == whole[:, BLOCKS == b][:, :1]).all()
    rows = draw_resamplings(12, 200, np.random.default_rng(3), sign_flip=True, blocks=BLOCKS)
    assert set(np.unique(rows)) == {-1.0, 1.0}
    assert (rows[:, BLOCKS == 1] != rows[:, BLOCKS == 1][:, :1]).any()


def test_unequal_whole_blocks_and_bad_contrasts_are_design_errors(group):
    with pytest.raises(DesignError, match="equal size"):
        draw_resamplings(5, 10, np.random.default_rng(0), sign_flip=False,
                         blocks=[0, 0, 0, 1, 1], within_block=False)
    X = np.column_stack([np.ones(30), np.ones(30)])
    with pytest.raises(DesignError, match="not estimable"):
        permutation_test(group.Y, X, [1.0, -1.0], n_perm=10)


def test_blocks_are_recorded_and_used(group):
    n = group.Y.shape[0]
    blocks = np.arange(n) % 3
    X, _, _, contrast = designs(group)["covariate"]
    result = permutation_test(group.Y, X, contrast, n_perm=50, seed=0, blocks=blocks)
    free = permutation_test(group.Y, X, contrast, n_perm=50, seed=0)
    assert result.info["exchangeability_blocks"] == 3
    assert result.info["n_possible"] == 3628800 ** 3  # (10!)^3
    assert not np.allclose(result.null["max_t"], free.null["max_t"])


def downsampled(group, factor):
    """Real maps averaged over factor^3 voxel blocks (a smaller, still real, problem)."""
    shape = tuple(s // factor * factor for s in group.mask.shape)
    crop = tuple(slice(0, s) for s in shape)
    blocks = [s // factor for s in shape]

    def pool(volume):
        return volume[crop].reshape(blocks[0], factor, blocks[1], factor, blocks[2], factor)

    mask = pool(group.mask).all(axis=(1, 3, 5))
    Y = np.stack([pool(group.volume(y)).mean(axis=(1, 3, 5))[mask] for y in group.Y])
    return Y, mask


def assert_fwe_calibrated(Y, mask, draw_design, contrast, seed):
    """30 null experiments on ``Y`` (a design drawn at random each time): the smallest FWE p
    of max-t, cluster size and TFCE falls below 0.05 as often as it should, and max-t and
    TFCE are not conservative either."""
    rng = np.random.default_rng(seed)
    # each FWE p is k / 100: count k for the most significant voxel
    smallest_k = {"max_t": [], "size": [], "tfce": []}
    for experiment in range(30):
        result = permutation_test(Y, draw_design(rng), contrast, mask, n_perm=99, seed=experiment,
                                  cluster_threshold=2.3, tfce=True)
        for key, logp in (("max_t", result.logp_max_t), ("size", result.logp_max_size),
                          ("tfce", result.logp_max_tfce)):
            smallest_k[key].append(np.round(100 * 10.0 ** -logp.max()))
    for key, values in smallest_k.items():
        # P(Binomial(30, 0.05) >= 7) < 1e-3
        assert np.sum(np.asarray(values) <= 5) <= 6, key
    for key in ("max_t", "tfce"):
        # k is uniform on 1..100 under the null: not conservative either
        assert 6 <= np.sum(np.asarray(smallest_k[key]) <= 50) <= 24, key


def test_null_familywise_error_is_controlled(group):
    """30 null experiments (random covariate) on real maps: FWE p is calibrated."""
    Y, mask = downsampled(group, factor=3)
    n = Y.shape[0]
    assert_fwe_calibrated(Y, mask, lambda rng: np.column_stack([np.ones(n), rng.standard_normal(n)]),
                          [0.0, 1.0], seed=2024)


def test_sparse_cluster_labelling_equals_ndimage_label():
    """Clusters found among supra-threshold voxels equal ndimage.label on the whole volume."""
    from bids_app.inference.connectivity import ClusterLabeller
    from bids_app.inference.connectivity import voxel_graph

    rng = np.random.default_rng(3)
    shape = (23, 19, 17)
    mask = ndimage.binary_erosion(np.ones(shape, bool), iterations=2)
    mask[10:13, :, 8] = False  # a wall: clusters must not connect through non-mask voxels
    faces = ndimage.generate_binary_structure(3, 1)
    labeller = ClusterLabeller(voxel_graph(mask))
    for smooth in (0.8, 1.5):
        volume = ndimage.gaussian_filter(rng.standard_normal(shape), smooth)
        volume /= volume[mask].std()
        stat = volume[mask]
        for threshold, two_sided in ((1.0, True), (2.3, False), (0.2, True)):
            label, sizes, masses = labeller.clusters(stat, threshold, two_sided)
            expected_label = np.zeros(stat.size, dtype=np.int64)
            expected_sizes, expected_masses, offset = [], [], 0
            for sign in ((1, -1) if two_sided else (1,)):
                box = np.zeros(shape)
                box[mask] = sign * stat
                lab, n = ndimage.label(box > threshold, faces)
                inside = lab[mask] > 0
                expected_label[inside] = lab[mask][inside] + offset
                offset += n
                expected_sizes.append(ndimage.sum(np.ones(shape), lab, range(1, n + 1)))
                expected_masses.append(ndimage.sum(box - threshold, lab, range(1, n + 1)))
            assert offset > 3  # several clusters: not vacuous
            np.testing.assert_array_equal(label, expected_label)
            np.testing.assert_array_equal(sizes, np.concatenate(expected_sizes))
            np.testing.assert_allclose(masses, np.concatenate(expected_masses), rtol=1e-12)
    empty = labeller.clusters(np.zeros(int(mask.sum())), 1.0, True)
    assert not empty[0].any() and empty[1].size == 0


def test_tfce_matches_its_definition_and_nilearn_in_memory():
    """A simulated z map in an ellipsoid mask: TFCE by its definition, nilearn's TFCE, max_tfce."""
    from nilearn.mass_univariate._utils import calculate_tfce

    from bids_app.inference.tfce import max_tfce

    group, volume = simulated_z_map()
    stat = volume[group.mask]
    graph = voxel_graph(group.mask)
    expected = brute_force_tfce(volume, 0.1)[group.mask]
    ours = tfce(stat, graph, dh=0.1)
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-9)
    assert (ours > 0).any() and (ours < 0).any()
    step = np.abs(stat).max() / 100
    nilearn_tfce = calculate_tfce(volume[..., None], ndimage.generate_binary_structure(3, 1))
    np.testing.assert_allclose(tfce(stat, graph, dh=step), nilearn_tfce[..., 0][group.mask] * step,
                               rtol=1e-9, atol=1e-9)
    maps = np.stack([stat, np.roll(stat, 1000)])
    expected_max = [np.abs(expected).max(), np.abs(brute_force_tfce(group.volume(maps[1]), 0.1)).max()]
    np.testing.assert_allclose(max_tfce(maps, graph, dh=0.1), expected_max, rtol=1e-12)


def _t_and_f(Y, X, C):
    """t (one-row C) or F of ``C beta = 0`` for every column of Y, from an explicit OLS fit."""
    beta, *_ = np.linalg.lstsq(X, Y, rcond=None)
    dof = X.shape[0] - X.shape[1]
    sigma2 = ((Y - X @ beta) ** 2).sum(0) / dof
    C = np.atleast_2d(C)
    middle = np.linalg.inv(C @ np.linalg.inv(X.T @ X) @ C.T)
    effect = C @ beta
    if C.shape[0] == 1:
        return effect[0] / np.sqrt(sigma2 / middle[0, 0])
    return np.einsum("iv,ij,jv->v", effect, middle, effect) / C.shape[0] / sigma2


EXHAUSTIVE = {
    # name: (design, contrast, every resampling of the rows: sign flips or permutations)
    "one-sample t, 2^7 sign flips": (
        np.ones((7, 1)), [1.0],
        [("flip", np.array(s, float)) for s in itertools.product([1, -1], repeat=7)]),
    "covariate t, 7! permutations": (
        np.column_stack([np.ones(7), np.arange(7.0) ** 1.5]), [0.0, 1.0],
        [("perm", np.array(p)) for p in itertools.permutations(range(7))]),
    "two covariates F, 7! permutations": (
        np.column_stack([np.ones(7), np.arange(7.0), np.cos(np.arange(7.0))]), [[0, 1, 0], [0, 0, 1]],
        [("perm", np.array(p)) for p in itertools.permutations(range(7))]),
}


def _max_cluster_size(stat, threshold, two_sided):
    """Largest run of supra-threshold values along a line of units (both signs if two-sided)."""
    sizes = [np.bincount(ndimage.label(sign * stat > threshold)[0])[1:].max(initial=0)
             for sign in ((1, -1) if two_sided else (1,))]
    return max(sizes)


@pytest.mark.parametrize("name", list(EXHAUSTIVE))
def test_fwe_equals_exhaustive_enumeration(name):
    """A tiny problem (7 samples, 6 voxels in a line) whose every resampling can be listed: the
    exact FWE p of a voxel (max-t) or of its cluster (max cluster size, z > 1 forming) is the
    fraction of resamplings whose maximum reaches the observed value. The only nuisance is the
    intercept, so Freedman-Lane resamples the data rows themselves; our Monte-Carlo p must agree
    within its sampling error."""
    X, contrast, resamplings = EXHAUSTIVE[name]
    rng = np.random.default_rng(12)
    Y = rng.standard_normal((7, 6)) + np.array([0.0, 0.3, 0.6, 0.9, 1.2, 1.5]) * X[:, [-1]]
    two_sided = np.ndim(contrast) == 1
    rank = np.atleast_2d(contrast).shape[0]
    dof = 7 - X.shape[1]
    forming = stats.t.isf(stats.norm.sf(1.0), dof) if two_sided else stats.f.isf(stats.norm.sf(1.0), rank, dof)
    observed = _t_and_f(Y, X, contrast)
    # every resampled data set side by side as columns: one fit for all
    resampled = _t_and_f(np.hstack([s[:, None] * Y if kind == "flip" else Y[s] for kind, s in resamplings]),
                         X, contrast).reshape(len(resamplings), 6)
    maxima = np.abs(resampled).max(1)
    exact_p = (maxima[None, :] >= np.abs(observed)[:, None] - 1e-9).mean(1)
    assert 0 < exact_p.min() < 0.2 and exact_p.max() > 0.5  # a range of p, not all 1
    max_sizes = np.array([_max_cluster_size(t, forming, two_sided) for t in resampled])

    def run(n_perm, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # 2^7 < n_perm: draws repeat, as warned
            return permutation_test(Y, X, contrast, np.ones((1, 6, 1), bool), n_perm=n_perm, seed=4,
                                    two_sided=two_sided, **kwargs)

    def assert_within_sampling_error(logp, exact, n_perm):
        p = 10.0 ** -logp
        bound = 4 * np.sqrt(exact * (1 - exact) / n_perm) + 2 / n_perm
        assert np.all(np.abs(p - exact) <= bound), (p, exact)

    result = run(2000)
    np.testing.assert_allclose(result.t, observed, rtol=1e-9)
    assert result.info["n_possible"] == len(resamplings)
    # every null maximum is the maximum of one of the listed resamplings (float32 products)
    distance = np.abs(result.null["max_t"][:, None] - maxima[None, :]).min(1)
    assert (distance <= 1e-4 * maxima.max()).all()
    assert_within_sampling_error(result.logp_max_t, exact_p, 2000)

    result = run(600, cluster_threshold=1.0)  # labelling every draw: fewer draws
    assert set(result.null["max_size"]) <= set(max_sizes)
    # cluster level: each voxel's cluster size, and its exact p (0 outside clusters)
    labels = [ndimage.label(sign * observed > forming)[0] for sign in ((1, -1) if two_sided else (1,))]
    size = sum(np.bincount(label)[label] * (label > 0) for label in labels)
    np.testing.assert_array_equal(result.cluster_size, size)
    in_cluster = size > 0
    assert in_cluster.sum() >= 2
    exact_size_p = (max_sizes[None, :] >= size[in_cluster, None]).mean(1)
    assert exact_size_p.min() < 0.5  # the largest cluster is not one every resampling has
    assert_within_sampling_error(result.logp_max_size[in_cluster], exact_size_p, 600)
    assert (result.logp_max_size[~in_cluster] == 0).all()


def test_tfce_caps_extreme_statistics_instead_of_failing(monkeypatch):
    # one degree of freedom (two inputs) gives |t| of 1e5 and more where two maps nearly agree;
    # the cap (10^6 steps) is lowered to 100 steps so that the definition can be brute-forced
    import bids_app.inference.tfce as tfce_module

    monkeypatch.setattr(tfce_module, "_MAX_STEPS", 100)
    mask = np.ones((6, 6, 6), dtype=bool)
    graph = voxel_graph(mask)
    t = np.random.default_rng(3).normal(size=mask.sum()) * 3
    t[[10, 11, 50]] = [4e18, -2e6, 12.0]
    with pytest.warns(UserWarning, match="above 10 at 3 unit"):
        enhanced = tfce(t, graph, dh=0.1)
    # capped at 10: 100 steps; 10.05 is also 100 steps for the brute force (10 // 0.1 == 99.0 in floats)
    expected = brute_force_tfce(np.clip(t, -10.05, 10.05).reshape(mask.shape), 0.1).ravel()
    np.testing.assert_allclose(enhanced, expected, rtol=1e-9, atol=1e-9)
    with pytest.warns(UserWarning, match="distinct resamplings"):
        result = permutation_test(np.stack([t, -t * 0.5, t * 0.25]), np.ones((3, 1)), np.array([1.0]), mask,
                                  n_perm=8, seed=0, tfce=True)
    assert np.isfinite(result.null["max_tfce"]).all()


@pytest.mark.parametrize("two_sided", [False, True])
def test_fused_maxima_and_candidates_equal_the_separate_passes(two_sided):
    """A cluster permutation with nuisance takes the maxima and the candidate units from one
    ratio map: the maxima must be :meth:`maxima`'s, bit for bit, and the candidates must hold
    every unit whose t (from the projections, in float64) passes the threshold, with the
    statistic values :meth:`maps` gives there."""
    from bids_app.inference.permutation import _Design, _Statistic

    rng = np.random.default_rng(5)
    n_maps, n_units, dof, threshold = 40, 5000, 13, 2.3
    # unit-norm data: a^2 + |b|^2 <= 1; some units near the threshold, a few nearly explained
    direction = rng.standard_normal((n_maps, n_units, 3))
    direction /= np.linalg.norm(direction, axis=2, keepdims=True)
    length = np.sqrt(rng.uniform(0.0, 1.0, (n_maps, n_units)))
    a = (direction[..., 0] * length).astype(np.float32)
    b_squared = ((direction[..., 1] ** 2 + direction[..., 2] ** 2) * length ** 2).astype(np.float32)
    design = _Design(np.zeros((16, 1)), np.zeros((16, 2)), True, False, dof, "t")
    statistic = _Statistic(design, two_sided)

    maxima, (maps, units, values) = statistic.maxima_and_supra(a, b_squared, threshold)
    np.testing.assert_array_equal(maxima, statistic.maxima(a, b_squared))
    t = a * np.sqrt(dof / np.maximum(1.0 - a.astype(float) ** 2 - b_squared, 1e-30))
    exact = np.abs(t) > threshold if two_sided else t > threshold
    candidate = np.zeros_like(exact)
    candidate[maps, units] = True
    assert exact.sum() > 1000 and not (exact & ~candidate).any()
    assert (candidate & ~exact).sum() < 0.01 * exact.sum()   # the margin adds few
    np.testing.assert_array_equal(values, statistic.maps(a[maps, units], b_squared[maps, units]))
    np.testing.assert_array_equal(maps * n_units + units, np.sort(maps * n_units + units))
