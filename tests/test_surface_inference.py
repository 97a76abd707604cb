"""Mesh graphs, clusters, TFCE and permutation inference on fsaverage5 (nilearn package data)."""
import socket

import numpy as np
import pytest
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from bids_app.inference.clusters import mesh_cluster_table
from bids_app.inference.connectivity import (components, grid_graph, mesh_graph, subgraph, surface_graph,
                                             unit_coordinates, vertex_areas)
from bids_app.inference.connectivity import ClusterLabeller
from bids_app.inference.permutation import permutation_test
from bids_app.inference.connectivity import voxel_graph
from bids_app.inference.tfce import tfce
from bids_app.io.surface import Surface, load_meshes, read_surface
from conftest import real_data


@pytest.fixture(scope="module")
def fsaverage5():
    return load_meshes("fsaverage5")


@pytest.fixture(scope="module")
def wager_maps():
    data = real_data("surface_fsaverage5/wager2008_emoreg")
    files = sorted(data.glob("sub-*/*hemi-L*stat-effect_statmap.func.gii"))
    return np.vstack([read_surface(f)[0] for f in files])


def _smooth_on_mesh(values, faces, n_vertices, steps):
    """Values averaged with their triangle neighbours ``steps`` times (a smooth field on the mesh)."""
    pairs = np.vstack([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    adjacency = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n_vertices,) * 2)
    adjacency = ((adjacency + adjacency.T) > 0).astype(float).tocsr()
    degree = np.asarray(adjacency.sum(1)).ravel()
    for _ in range(steps):
        values = (values + (adjacency @ values.T).T / degree) / 2
    return values


@pytest.fixture(scope="module", params=["simulated", "wager2008_emoreg"])
def mesh_maps(request, fsaverage5):
    """30 maps on both fsaverage5 hemispheres: smooth simulated fields in memory, and the real set."""
    if request.param == "wager2008_emoreg":
        return request.getfixturevalue("wager_maps")
    rng = np.random.default_rng(5)
    hemis = [_smooth_on_mesh(rng.standard_normal((31, 10242)), fsaverage5[h].faces, 10242, 8) for h in "LR"]
    fields = np.hstack(hemis)
    fields /= fields.std(1, keepdims=True)
    return 0.6 * fields[:1] + fields[1:]  # a shared smooth effect of both signs plus subject noise


def _reference_labels(faces, n_vertices, selected):
    """Connected components of the selected vertices of a mesh, straight from its triangles."""
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    keep = selected[rows] & selected[cols]
    adjacency = sparse.coo_matrix((np.ones(keep.sum()), (rows[keep], cols[keep])), shape=(n_vertices, n_vertices))
    _, label = connected_components(adjacency, directed=False)
    return label


def _same_partition(ours, reference, selected):
    """Our labels (0 = not selected) define the same clusters as the reference labelling."""
    assert (ours[~selected] == 0).all() and (ours[selected] > 0).all()
    pairs = set(zip(ours[selected], reference[selected]))
    assert len(pairs) == len(set(ours[selected])) == len(set(reference[selected]))


def test_packaged_meshes_need_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    meshes = load_meshes("fsaverage5")
    assert {h: len(m.coordinates) for h, m in meshes.items()} == {"L": 10242, "R": 10242}
    assert load_meshes("fsLR") is None  # not shipped: no mesh rather than a download


def test_mesh_graph_is_the_triangle_edges(fsaverage5):
    mesh = fsaverage5["L"]
    graph = mesh_graph(mesh.faces, 10242)
    # an icosahedral mesh: E = 3 V - 6, every vertex of degree 5 or 6
    assert len(graph.pairs) == 3 * 10242 - 6
    degree = np.bincount(graph.pairs.ravel(), minlength=10242)
    assert set(np.unique(degree)) == {5, 6}
    # total area of the pial surface, about 1000 cm² per hemisphere
    assert 6e4 < vertex_areas(mesh.coordinates, mesh.faces).sum() < 1.2e5


def test_mesh_clusters_equal_csgraph_reference(fsaverage5, mesh_maps):
    """Cluster labels (both hemispheres) equal connected components of the triangle graph."""
    surface = Surface("fsaverage5", (("L", 10242), ("R", 10242)))
    graph = surface_graph(surface, fsaverage5)
    faces = np.vstack([fsaverage5["L"].faces, fsaverage5["R"].faces + 10242])
    t = mesh_maps.mean(0) / mesh_maps.std(0, ddof=1) * np.sqrt(len(mesh_maps))
    labeller = ClusterLabeller(graph)
    assert (np.abs(t) > 3).sum() > 100 and (t < -1).sum() > 100  # clusters at every threshold, both signs
    for threshold in (1.0, 2.0, 3.0):
        for sign in (1, -1):
            selected = sign * t > threshold
            reference = _reference_labels(faces, 20484, selected)
            _same_partition(components(graph, selected), reference, selected)
        label, sizes, _ = labeller.clusters(t, threshold, two_sided=True)
        for sign in (1, -1):
            selected = sign * t > threshold
            _same_partition(np.where(selected, label, 0), _reference_labels(faces, 20484, selected), selected)
        assert sizes.sum() == (np.abs(t) > threshold).sum()
    # no cluster crosses between hemispheres
    label = components(graph, t > 1.0)
    assert not set(label[:10242][label[:10242] > 0]) & set(label[10242:][label[10242:] > 0])


def test_tfce_on_mesh_equals_definition(fsaverage5, mesh_maps):
    """TFCE on the mesh graph equals the sum over heights of cluster extents (label-every-height)."""
    graph = mesh_graph(fsaverage5["L"].faces, 10242)
    t = mesh_maps[:, :10242].mean(0) / mesh_maps[:, :10242].std(0, ddof=1) * np.sqrt(len(mesh_maps))
    dh = 0.2
    ours = tfce(t, graph, two_sided=True, dh=dh)
    expected = np.zeros(10242)
    for sign in (1, -1):
        for k in range(1, int(np.floor((sign * t).max() / dh)) + 1):
            label = _reference_labels(fsaverage5["L"].faces, 10242, sign * t >= k * dh - 1e-12)
            selected = sign * t >= k * dh - 1e-12
            extent = np.bincount(label[selected], minlength=label.max() + 1)
            expected[selected] += sign * extent[label[selected]] ** 0.5 * (k * dh) ** 2 * dh
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-9)


def test_cifti_graph_joins_meshes_and_voxel_grid(fsaverage5):
    from nibabel import cifti2

    keep = np.flatnonzero(np.arange(10242) % 7 != 0)     # a CIFTI cortex leaves vertices out
    ijk = np.argwhere(np.ones((3, 3, 2), bool))[::-1]      # voxels listed out of C order
    axis = (cifti2.BrainModelAxis.from_surface(keep, 10242, "CortexLeft")
            + cifti2.BrainModelAxis.from_surface(np.arange(10242), 10242, "CortexRight")
            + cifti2.BrainModelAxis(["thalamus_left"] * len(ijk), voxel=ijk, affine=np.eye(4), volume_shape=(3, 3, 2)))
    surface = Surface("fsaverage5", (), axis)
    graph = surface_graph(surface, fsaverage5)
    full_left = mesh_graph(fsaverage5["L"].faces, 10242)
    expected_left = subgraph(full_left, np.isin(np.arange(10242), keep))
    assert {tuple(p) for p in graph.pairs if p[1] < keep.size} == {tuple(p) for p in expected_left.pairs}
    voxel_pairs = graph.pairs[graph.pairs[:, 0] >= keep.size + 10242] - keep.size - 10242
    # 6-neighbours among the 18 voxels of a 3 x 3 x 2 block: 2*3*2 + 3*2*2 + 3*3*1 = 33 pairs
    assert len(voxel_pairs) == 33
    assert np.all(np.abs(ijk[voxel_pairs[:, 0]] - ijk[voxel_pairs[:, 1]]).sum(axis=1) == 1)
    ref = grid_graph(ijk, (3, 3, 2))
    assert len(ref.pairs) == 33
    xyz, area, part = unit_coordinates(surface, fsaverage5)
    assert np.isnan(area[-18:]).all() and (area[:-18] > 0).all()
    assert list(part[[0, keep.size, len(part) - 1]]) == ["L", "R", "THALAMUS_LEFT"]


def test_mesh_cluster_table_lists_vertices_area_and_peaks(fsaverage5, wager_maps):
    surface = Surface("fsaverage5", (("L", 10242), ("R", 10242)))
    graph = surface_graph(surface, fsaverage5)
    xyz, area, part = unit_coordinates(surface, fsaverage5)
    t = wager_maps.mean(0) / wager_maps.std(0, ddof=1) * np.sqrt(len(wager_maps))
    table = mesh_cluster_table(t, graph, xyz, area, part, 3.0, two_sided=True)
    peaks = table[table["peak"] == 0]
    label = components(graph, t > 3.0)
    for _, row in peaks[peaks["peak_stat"] > 0].iterrows():
        members = label == label[row["vertex"]]
        assert row["cluster_size_vertices"] == members.sum()
        assert row["cluster_area_mm2"] == pytest.approx(area[members].sum())
        assert row["peak_stat"] == pytest.approx(t[members].max())
        np.testing.assert_allclose(row[["x", "y", "z"]].to_numpy(float), xyz[row["vertex"]])
        assert row["hemi"] == ("L" if row["vertex"] < 10242 else "R")
    assert (peaks["peak_stat"] > 0).sum() == label.max()


def test_permutation_on_mesh_uses_the_graph(fsaverage5, wager_maps):
    """Cluster and TFCE permutation with a mesh graph: observed clusters are the mesh's, p-values valid."""
    surface = Surface("fsaverage5", (("L", 10242), ("R", 10242)))
    graph = surface_graph(surface, fsaverage5)
    mask = (wager_maps != 0).all(0) & (np.ptp(wager_maps, 0) > 0)
    sub = subgraph(graph, mask)
    Y = wager_maps[:, mask]
    result = permutation_test(Y, np.ones((len(Y), 1)), np.array([1.0]), n_perm=50, seed=1, two_sided=True,
                              cluster_threshold=2.3, tfce=True, graph=sub)
    assert result.info["connectivity"] == "mesh edges"
    t_thr = result.info["cluster_threshold_t"]
    expected_sizes = np.zeros(Y.shape[1])
    for sign in (1, -1):
        label = components(sub, sign * result.t > t_thr)
        sizes = np.bincount(label)
        expected_sizes[label > 0] = sizes[label[label > 0]]
    np.testing.assert_array_equal(result.cluster_size, expected_sizes)
    np.testing.assert_allclose(result.tfce, tfce(result.t, sub, two_sided=True))
    for key in ("logp_max_t", "logp_max_size", "logp_max_tfce"):
        values = getattr(result, key)
        assert (values >= 0).all() and values.max() <= np.log10(51) + 1e-12
    with pytest.raises(ValueError, match="graph has"):
        permutation_test(Y[:, :10], np.ones((len(Y), 1)), np.array([1.0]), n_perm=5, tfce=True, graph=sub)


def test_volume_graph_unchanged():
    """The volume path still gives face neighbours, as before the graph became an argument."""
    mask = np.zeros((4, 4, 4), bool)
    mask[1:3, 1:3, 1:3] = True
    graph = voxel_graph(mask)
    assert graph.connectivity == "faces (6)" and len(graph.pairs) == 12


def test_null_fwer_on_mesh_is_not_inflated(fsaverage5, wager_maps):
    """A cheap version of benchmarks/surface_fwer.py: 40 null experiments, 19 resamplings each.

    Random sign flips of the real left-hemisphere maps make H0 exactly true, so
    each method rejects with probability exactly 1/20 (ties can only lower it):
    2 of 40 expected. More than 7 (binomial tail p = 0.008) would mean an
    inflated family-wise error; the 1000-experiment run is in docs/surfaces.md.
    """
    Y = wager_maps[:, :10242]
    keep = (Y != 0).all(0) & (np.ptp(Y, 0) > 0)
    graph = subgraph(mesh_graph(fsaverage5["L"].faces, 10242), keep)
    Y = Y[:, keep]
    rng = np.random.default_rng(2024)
    rejected = {"maxT": 0, "cluster": 0, "TFCE": 0}
    for i in range(40):
        data = rng.choice([-1.0, 1.0], size=(len(Y), 1)) * Y
        result = permutation_test(data, np.ones((len(Y), 1)), np.array([1.0]), n_perm=19, seed=i, two_sided=True,
                                  cluster_threshold=3.1, tfce=True, graph=graph)
        for name, logp in (("maxT", result.logp_max_t), ("cluster", result.logp_max_size),
                           ("TFCE", result.logp_max_tfce)):
            rejected[name] += bool(logp.max() >= -np.log10(0.05) - 1e-9)
    assert all(count <= 7 for count in rejected.values()), rejected
    assert sum(rejected.values()) > 0  # and they can reject at all
