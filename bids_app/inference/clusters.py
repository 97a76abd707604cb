"""Cluster tables: clusters of a thresholded map, their peaks and anatomy.

Conventions follow nilearn's :func:`nilearn.reporting.get_clusters_table`
(same clusters, sizes and peaks, see the tests): clusters are face-connected
(6-connectivity) sets of ``stat > threshold`` (and, two-sided, of
``stat < -threshold``, labelled separately); peaks are local maxima over the
26-neighbourhood inside the cluster (a flat top counts once, at its voxel
nearest to its centre of mass); sub-peaks are the next highest maxima at more
than ``min_distance_mm`` from every peak kept before them. Positive clusters
come first, each sign by decreasing peak magnitude.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from nibabel.affines import apply_affine
from scipy import ndimage

from bids_app.inference.atlas import label_coordinates
from bids_app.inference.connectivity import label_volume
from bids_app.inference.peaks import local_peaks

COLUMNS = ["cluster_id", "peak", "x", "y", "z", "i", "j", "k", "peak_stat",
           "cluster_size_voxels", "cluster_size_mm3"]


def cluster_table(stat, affine, threshold, *, two_sided=False, min_size=0, min_distance_mm=8.0,
                  max_subpeaks=3, atlases=()) -> pd.DataFrame:
    """Table of clusters with peak and sub-peak coordinates and atlas labels.

    Parameters
    ----------
    stat : array_like, (x, y, z)
        Statistic map (z, t, -log10 p...: larger is more significant);
        non-finite values count as 0.
    affine : ndarray, (4, 4)
        Voxel to MNI mm.
    threshold : float
        Cluster-forming threshold, >= 0, in the map's units.
    two_sided : bool
        Also report negative clusters (``stat < -threshold``).
    min_size : int
        Smallest cluster reported, in voxels.
    min_distance_mm : float
        Minimum distance between reported peaks of one cluster.
    max_subpeaks : int
        Sub-peaks reported per cluster besides its peak.
    atlases : sequence of Atlas
        Atlases to label each peak with (:func:`bids_app.io.atlases.load_atlas`);
        empty for none.

    Returns
    -------
    pandas.DataFrame
        One row per peak, clusters numbered from 1: :data:`COLUMNS`
        (``peak`` is 0 for a cluster's peak, 1, 2... for sub-peaks; x, y, z
        in mm; i, j, k voxel indices; sizes repeated on sub-peak rows) then
        one label column per atlas.
    """
    if threshold < 0:
        raise ValueError("threshold must be >= 0; use two_sided for negative effects")
    stat = np.nan_to_num(np.asarray(stat, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    affine = np.asarray(affine, dtype=np.float64)
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))

    rows = []
    for sign in ((1.0, -1.0) if two_sided else (1.0,)):
        signed = sign * stat
        labels, n_found = label_volume(signed > threshold)
        clusters = []
        for index, box in enumerate(ndimage.find_objects(labels), start=1):
            inside = labels[box] == index
            size = int(np.count_nonzero(inside))
            if size < min_size:
                continue
            peaks_ijk, peak_values = local_peaks(signed[box], inside, affine, min_distance_mm=min_distance_mm,
                                                  max_peaks=max_subpeaks + 1, offset=[sl.start for sl in box])
            clusters.append((peak_values[0], size, peaks_ijk, peak_values))
        clusters.sort(key=lambda cluster: -cluster[0])
        first_id = len({row[0] for row in rows}) + 1
        for cluster_id, (_, size, peaks_ijk, peak_values) in enumerate(clusters, start=first_id):
            xyz = apply_affine(affine, peaks_ijk)
            for rank, (ijk, mm, value) in enumerate(zip(peaks_ijk, xyz, peak_values)):
                rows.append([cluster_id, rank, *mm, *ijk, sign * value, size, size * voxel_mm3])

    table = pd.DataFrame(rows, columns=COLUMNS)
    table = table.astype({"cluster_id": int, "peak": int, "i": int, "j": int, "k": int,
                          "cluster_size_voxels": int, "x": float, "y": float, "z": float,
                          "peak_stat": float, "cluster_size_mm3": float})
    if atlases:
        labels = label_coordinates(table[["x", "y", "z"]].to_numpy(), atlases)
        table = pd.concat([table, labels.set_index(table.index)], axis=1)
    return table


MESH_COLUMNS = ["cluster_id", "peak", "hemi", "vertex", "x", "y", "z", "peak_stat",
                "cluster_size_vertices", "cluster_area_mm2"]


def mesh_cluster_table(stat, graph, coordinates, areas, parts, threshold, *, two_sided=False, min_size=0,
                       min_distance_mm=8.0, max_subpeaks=3) -> pd.DataFrame:
    """Table of clusters of a map over surface units (vertices; CIFTI voxels too).

    Clusters are connected sets of ``stat > threshold`` (and, two-sided,
    ``stat < -threshold``) on the unit graph (mesh edges); peaks are units
    at least as high as all their neighbours in the cluster, highest first,
    sub-peaks more than ``min_distance_mm`` (straight line) from earlier
    peaks. Ordered as :func:`cluster_table`.

    Parameters
    ----------
    stat : array_like, (n_units,)
        Statistic; non-finite values count as 0.
    graph : VoxelGraph
        Neighbours among the units.
    coordinates : ndarray, (n_units, 3)
        Position of each unit on the mesh (mm).
    areas : ndarray, (n_units,)
        Area of each vertex (mm²); NaN for voxels, which add no area.
    parts : ndarray of str, (n_units,)
        Hemisphere (``L``/``R``) or structure of each unit.
    threshold : float
        Cluster-forming threshold, >= 0.

    Returns
    -------
    pandas.DataFrame
        :data:`MESH_COLUMNS`; ``vertex`` is the unit's index (the vertex
        number for GIFTI data, counting the left hemisphere first).
    """
    from bids_app.inference.connectivity import components, neighbour_table

    if threshold < 0:
        raise ValueError("threshold must be >= 0; use two_sided for negative effects")
    stat = np.nan_to_num(np.asarray(stat, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    coordinates = np.asarray(coordinates, dtype=np.float64)
    neighbours = neighbour_table(graph)
    rows = []
    for sign in ((1.0, -1.0) if two_sided else (1.0,)):
        signed = sign * stat
        label = components(graph, signed > threshold)
        clusters = []
        for cluster in range(1, int(label.max(initial=0)) + 1):
            members = np.flatnonzero(label == cluster)
            if members.size < min_size:
                continue
            around = neighbours[members]
            higher = np.where(around >= 0, signed[np.maximum(around, 0)], -np.inf)
            peaks = members[(signed[members][:, None] >= higher).all(axis=1)]
            peaks = peaks[np.argsort(-signed[peaks], kind="stable")]
            kept = []
            for p in peaks:
                if all(np.linalg.norm(coordinates[p] - coordinates[q]) > min_distance_mm for q in kept):
                    kept.append(p)
                    if len(kept) == max_subpeaks + 1:
                        break
            clusters.append((signed[kept[0]], members.size, float(np.nansum(areas[members])), kept))
        clusters.sort(key=lambda c: -c[0])
        first_id = len({row[0] for row in rows}) + 1
        for cluster_id, (_, size, area, kept) in enumerate(clusters, start=first_id):
            for rank, p in enumerate(kept):
                rows.append([cluster_id, rank, str(parts[p]), int(p), *coordinates[p], sign * signed[p], size, area])
    table = pd.DataFrame(rows, columns=MESH_COLUMNS)
    return table.astype({"cluster_id": int, "peak": int, "hemi": str, "vertex": int, "x": float, "y": float,
                         "z": float, "peak_stat": float, "cluster_size_vertices": int, "cluster_area_mm2": float})
