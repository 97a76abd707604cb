"""Connectivity, the one home of "which units touch": neighbour graphs of
analysis units whatever the space (voxels, mesh vertices, grayordinates) and
cluster labelling on them.

Clusters, TFCE and permutation inference need only which units touch: a
:class:`VoxelGraph` (``n_voxels`` units, each neighbouring pair once). A
volume mask gives face neighbours (:func:`voxel_graph`, 6-connectivity as
nilearn); a triangle mesh gives its edges (:func:`mesh_graph`); a CIFTI file
is the disjoint union (:func:`join_graphs`) of its cortical meshes and its
subcortical voxel grid. Clusters are connected components: of a 3-D volume
(:func:`label_volume`, face neighbours: thresholds and cluster tables), of
selected units of a graph (:func:`components`), or of many maps in turn on
one graph (:class:`ClusterLabeller`: permutations). The functions here are
pure: meshes arrive as arrays.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.csgraph import connected_components

#: Face neighbours of a 3-D grid (6-connectivity), the rule for every volume cluster.
FACES = ndimage.generate_binary_structure(3, 1)


@dataclass(frozen=True)
class VoxelGraph:
    """Neighbouring pairs between analysis units: face-neighbour voxels of a
    mask, or mesh vertices (:mod:`bids_app.inference.connectivity`).

    Attributes
    ----------
    n_voxels : int
        Units; for a mask, vectors on the graph are in the mask's C order
        (``volume[mask]``), the order nilearn's maskers use.
    pairs : ndarray, int32, shape (n_pairs, 2)
        Each neighbouring pair once, as indices into that order.
    connectivity : str
        What makes units neighbours, for provenance.
    """

    n_voxels: int
    pairs: np.ndarray
    connectivity: str = "faces (6)"


def voxel_graph(mask: np.ndarray) -> VoxelGraph:
    """Neighbour graph of a 3D boolean mask (6-connectivity, as nilearn).

    Parameters
    ----------
    mask : ndarray of bool, shape (x, y, z)

    Returns
    -------
    VoxelGraph
    """
    mask = np.asarray(mask, dtype=bool)
    index = np.full(mask.shape, -1, dtype=np.int32)
    index[mask] = np.arange(int(mask.sum()))
    pairs = []
    for axis in range(3):
        moved = np.moveaxis(index, axis, 0)
        lo, hi = moved[:-1].ravel(), moved[1:].ravel()
        both = (lo >= 0) & (hi >= 0)
        pairs.append(np.column_stack([lo[both], hi[both]]))
    return VoxelGraph(int(mask.sum()), np.concatenate(pairs))


def label_volume(selected) -> tuple[np.ndarray, int]:
    """Face-connected clusters of the ``True`` voxels of a 3-D array.

    Returns
    -------
    labels : ndarray, int, same shape
        1-based cluster of each selected voxel (numbered in C order of their
        first voxel), 0 elsewhere.
    n_clusters : int
    """
    return ndimage.label(np.asarray(selected, dtype=bool), FACES)




def mesh_graph(faces, n_vertices: int, vertices=None) -> VoxelGraph:
    """Edges of a triangle mesh as a unit graph.

    Parameters
    ----------
    faces : array_like, int, (n_faces, 3)
        Vertex numbers of each triangle.
    n_vertices : int
        Vertices of the mesh.
    vertices : array_like of int, optional
        The mesh vertices that are units, in unit order (e.g. a CIFTI
        cortex without its medial wall); default: every vertex, unit ``j``
        being vertex ``j``. Edges to other vertices are dropped.

    Returns
    -------
    VoxelGraph
        ``connectivity`` = ``"mesh edges"``.
    """
    faces = np.asarray(faces, dtype=np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be (n_faces, 3), got {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= n_vertices):
        raise ValueError(f"faces refer to vertices outside 0..{n_vertices - 1}")
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    edges = edges[edges[:, 0] != edges[:, 1]]
    if vertices is None:
        return VoxelGraph(int(n_vertices), edges.astype(np.int32), "mesh edges")
    vertices = np.asarray(vertices, dtype=np.int64)
    unit = np.full(int(n_vertices), -1, dtype=np.int64)
    unit[vertices] = np.arange(vertices.size)
    mapped = unit[edges]
    mapped = mapped[(mapped >= 0).all(axis=1)]
    return VoxelGraph(int(vertices.size), np.sort(mapped, axis=1).astype(np.int32), "mesh edges")


def grid_graph(ijk, shape) -> VoxelGraph:
    """Face neighbours (6-connectivity) among voxels listed by their indices, in list order."""
    ijk = np.asarray(ijk, dtype=np.int64)
    mask = np.zeros(tuple(shape), dtype=bool)
    mask[tuple(ijk.T)] = True
    graph = voxel_graph(mask)
    # voxel_graph numbers voxels in C order; map them to the list's order
    to_list = np.argsort(np.ravel_multi_index(tuple(ijk.T), tuple(shape)))
    return VoxelGraph(graph.n_voxels, np.sort(to_list[graph.pairs], axis=1).astype(np.int32))


def join_graphs(parts, n_units: int) -> VoxelGraph:
    """Disjoint union of graphs whose units are some of the joined graph's units.

    Parameters
    ----------
    parts : iterable of (ndarray of int, VoxelGraph)
        ``(units, graph)``: the graph's unit ``j`` is unit ``units[j]``.
    n_units : int
        Units of the joined graph (units of no part have no neighbours).
    """
    parts = list(parts)
    pairs = [np.asarray(units, dtype=np.int64)[g.pairs] for units, g in parts]
    kinds = sorted({g.connectivity for _, g in parts})
    return VoxelGraph(int(n_units), np.concatenate(pairs or [np.zeros((0, 2), np.int64)]).astype(np.int32),
                      " + ".join(kinds) if kinds else "none")


def subgraph(graph: VoxelGraph, keep) -> VoxelGraph:
    """The graph among the units ``keep`` (bool, (n_units,)), renumbered in order."""
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (graph.n_voxels,):
        raise ValueError(f"keep must have shape ({graph.n_voxels},), got {keep.shape}")
    new = np.full(graph.n_voxels, -1, dtype=np.int64)
    new[keep] = np.arange(int(keep.sum()))
    mapped = new[graph.pairs]
    return VoxelGraph(int(keep.sum()), mapped[(mapped >= 0).all(axis=1)].astype(np.int32), graph.connectivity)


def neighbour_table(graph: VoxelGraph) -> np.ndarray:
    """Neighbours of each unit, ``(n_units, max degree)`` int64, padded with -1."""
    pairs = graph.pairs.astype(np.int64)
    src = np.concatenate([pairs[:, 0], pairs[:, 1]])
    dst = np.concatenate([pairs[:, 1], pairs[:, 0]])
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    degree = np.bincount(src, minlength=graph.n_voxels)
    rank = np.arange(src.size) - np.repeat(np.cumsum(degree) - degree, degree)
    table = np.full((graph.n_voxels, max(int(degree.max(initial=0)), 1)), -1, dtype=np.int64)
    table[src, rank] = dst
    return table


def components(graph: VoxelGraph, selected) -> np.ndarray:
    """Connected components of the selected units (bool, (n_units,)).

    Returns
    -------
    ndarray, int64, (n_units,)
        1-based component of each selected unit, numbered by their first
        unit; 0 for units not selected.
    """
    selected = np.asarray(selected, dtype=bool)
    index = np.flatnonzero(selected)
    label = np.zeros(graph.n_voxels, dtype=np.int64)
    if index.size == 0:
        return label
    sub = subgraph(graph, selected)
    adjacency = sparse.coo_matrix((np.ones(len(sub.pairs), dtype=np.int8), (sub.pairs[:, 0], sub.pairs[:, 1])),
                                  shape=(index.size, index.size))
    _, comp = connected_components(adjacency, directed=False)
    label[index] = comp + 1
    return label


def vertex_areas(coordinates, faces) -> np.ndarray:
    """Area (mm², for coordinates in mm) of each vertex: a third of its triangles' areas."""
    coordinates = np.asarray(coordinates, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    a, b, c = (coordinates[faces[:, k]] for k in range(3))
    tri = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    return np.bincount(faces.ravel(), weights=np.repeat(tri / 3.0, 3), minlength=len(coordinates))


def surface_graph(surface, meshes) -> VoxelGraph:
    """Neighbours among the units of a :class:`~bids_app.io.surface.Surface`.

    Cortical parts are joined by their mesh's edges (``meshes[hemi].faces``),
    CIFTI subcortical voxels by faces on their grid; parts never touch.
    """
    parts = []
    for hemi, columns, vertices in surface.parts():
        units = np.arange(surface.n_units)[columns]
        n_mesh = len(meshes[hemi].coordinates)
        if n_mesh != surface.surface_vertices(hemi):
            raise ValueError(f"the {hemi} mesh has {n_mesh} vertices, the data "
                             f"{surface.surface_vertices(hemi)}")
        parts.append((units, mesh_graph(meshes[hemi].faces, n_mesh, vertices)))
    voxels = surface.voxels()
    if voxels is not None:
        columns, ijk, _, shape = voxels
        graph = grid_graph(ijk, shape)
        parts.append((columns, graph))
    return join_graphs(parts, surface.n_units)


def unit_coordinates(surface, meshes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Position (mm), area (mm², NaN for voxels) and part name of each unit of a surface."""
    xyz = np.full((surface.n_units, 3), np.nan)
    area = np.full(surface.n_units, np.nan)
    part = np.full(surface.n_units, "", dtype=object)
    for hemi, columns, vertices in surface.parts():
        mesh = meshes[hemi]
        vertex_area = vertex_areas(mesh.coordinates, mesh.faces)
        index = np.arange(len(mesh.coordinates)) if vertices is None else vertices
        xyz[columns], area[columns], part[columns] = mesh.coordinates[index], vertex_area[index], hemi
    voxels = surface.voxels()
    if voxels is not None:
        columns, ijk, affine, _ = voxels
        xyz[columns] = ijk @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]
        names = np.asarray(surface.axis.name)[columns]
        part[columns] = [n.replace("CIFTI_STRUCTURE_", "") for n in names]
    return xyz, area, part


class ClusterLabeller:
    """Connected clusters of maps on a unit graph, found among the supra-threshold units only.

    Labelling the whole bounding box (``scipy.ndimage.label``) costs the same
    for every map; under the null only ~0.1 % of voxels pass p < 0.001, so
    connecting those few through a precomputed neighbour table is ~20x
    cheaper per permutation. Clusters are numbered by their first unit in
    order, as ``ndimage.label`` numbers voxels of a mask (tested equal).
    """

    def __init__(self, graph):
        self._neighbours = neighbour_table(graph)    # (n_units, max degree), -1: no neighbour
        self._position = np.full(graph.n_voxels + 1, -1, dtype=np.int64)  # last entry: "none"

    def clusters(self, stat, threshold, two_sided):
        """Clusters of ``stat > threshold`` (and ``< -threshold`` if two-sided).

        Returns
        -------
        label : ndarray, int64, (n_voxels,)
            1-based cluster index of each voxel, 0 outside clusters.
        sizes, masses : ndarray, (n_clusters,)
            Voxel count and sum of ``|stat| - threshold`` per cluster.
        """
        stat = np.asarray(stat, dtype=np.float64)
        label = np.zeros(stat.shape, dtype=np.int64)
        sizes, masses, offset = [], [], 0
        for sign in ((1, -1) if two_sided else (1,)):
            supra = np.flatnonzero(sign * stat > threshold)
            if supra.size == 0:
                continue
            component, n_found = self._components(supra)
            label[supra] = component + 1 + offset
            offset += n_found
            sizes.append(np.bincount(component, minlength=n_found))
            masses.append(np.bincount(component, weights=sign * stat[supra] - threshold, minlength=n_found))
        if not sizes:
            return label, np.zeros(0, dtype=np.int64), np.zeros(0)
        return label, np.concatenate(sizes), np.concatenate(masses)

    def max_measures(self, maps, units, stat, threshold, two_sided, n_maps):
        """Largest cluster size and mass of each of ``n_maps`` maps, from their candidate units.

        The numbers :meth:`clusters` gives map by map (``sizes.max(initial=0)``,
        ``masses.max(initial=0.0)``; tested equal), from one connected-components
        call for all maps: a permutation null needs no labels, and only a few
        units of each map pass the threshold.

        Parameters
        ----------
        maps, units : ndarray of int, (k,)
            Map and unit of each candidate, sorted by map then unit (the order
            of ``np.nonzero`` on a (maps, units) array); every unit with
            ``stat > threshold`` (or ``< -threshold`` if two-sided) is among them.
        stat : ndarray, (k,)
            The statistic at the candidates.
        threshold : float
        two_sided : bool
        n_maps : int

        Returns
        -------
        max_size : ndarray, int64, (n_maps,)
        max_mass : ndarray, float64, (n_maps,)
            0 for a map without clusters.
        """
        stat = np.asarray(stat, dtype=np.float64)
        max_size, max_mass = np.zeros(n_maps, dtype=np.int64), np.zeros(n_maps)
        n_units = self._position.size - 1
        for sign in ((1, -1) if two_sided else (1,)):
            supra = sign * stat > threshold
            if not supra.any():
                continue
            owner, unit = np.asarray(maps)[supra].astype(np.int64), np.asarray(units)[supra].astype(np.int64)
            key = owner * n_units + unit                        # sorted: maps, then units
            neighbours = self._neighbours[unit]
            neighbour_key = owner[:, None] * n_units + neighbours
            at = np.minimum(np.searchsorted(key, neighbour_key), key.size - 1)
            rows, cols = np.nonzero((neighbours >= 0) & (key[at] == neighbour_key))
            graph = sparse.coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, at[rows, cols])),
                                      shape=(key.size, key.size))
            n_found, component = connected_components(graph, directed=False)
            sizes = np.bincount(component, minlength=n_found)
            masses = np.bincount(component, weights=sign * stat[supra] - threshold, minlength=n_found)
            of_map = np.empty(n_found, dtype=np.int64)
            of_map[component] = owner
            np.maximum.at(max_size, of_map, sizes)
            np.maximum.at(max_mass, of_map, masses)
        return max_size, max_mass

    def _components(self, supra):
        """Connected components (0-based, by first voxel) of the voxels ``supra`` (sorted indices)."""
        self._position[supra] = np.arange(supra.size)
        try:
            neighbour_position = self._position[self._neighbours[supra]]   # -1 index hits "outside"
        finally:
            self._position[supra] = -1
        rows, cols = np.nonzero(neighbour_position >= 0)
        graph = sparse.coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, neighbour_position[rows, cols])),
                           shape=(supra.size, supra.size))
        n_found, component = connected_components(graph, directed=False)
        return component, n_found
