"""Neighbour graphs of analysis units, whatever the space: voxels, mesh vertices, grayordinates.

Clusters, TFCE and permutation inference need only which units touch: a
:class:`~bids_app.inference.tfce.VoxelGraph` (``n_voxels`` units, each
neighbouring pair once). A volume mask gives face neighbours
(:func:`~bids_app.inference.tfce.voxel_graph`); a triangle mesh gives its
edges (:func:`mesh_graph`); a CIFTI file is the disjoint union
(:func:`join_graphs`) of its cortical meshes and its subcortical voxel grid.
The functions here are pure: meshes arrive as arrays.
"""
from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from bids_app.inference.tfce import VoxelGraph, voxel_graph


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
