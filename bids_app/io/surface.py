"""Surface data files: GIFTI hemisphere pairs and CIFTI-2 dense files.

fMRIPrep writes surface BOLD as one GIFTI file per hemisphere
(``*_hemi-L_space-fsaverage5_bold.func.gii``) and grayordinates as CIFTI-2
(``*_space-fsLR_den-91k_bold.dtseries.nii``). Both are read here as one 2-D
array ``(n_samples, n_vertices)`` over a :class:`Surface`, the unit space that
says what each column is: for GIFTI, the left hemisphere's vertices then the
right's; for CIFTI, the file's grayordinates (surface vertices, then
subcortical voxels, in the brain-model order of the file). Writers take the
same vectors back to files of the same kind.

A GIFTI map is named by its left-hemisphere file; the right one is its
sibling with ``hemi-R`` (:func:`hemisphere_files`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nb
import numpy as np
from nibabel import cifti2

from bids_app.derivatives.atomic import atomic_path
from bids_app.errors import InputDataError

#: Extensions of surface data files (data arrays, not meshes).
GIFTI_EXTENSIONS = (".func.gii",)
CIFTI_EXTENSIONS = (".dtseries.nii", ".dscalar.nii")
HEMISPHERES = ("L", "R")

#: CIFTI brain structures of the two cortical surfaces, by hemisphere.
CORTEX = {"L": "CIFTI_STRUCTURE_CORTEX_LEFT", "R": "CIFTI_STRUCTURE_CORTEX_RIGHT"}


@dataclass(frozen=True, eq=False)
class Surface:
    """The unit space of surface data: which vertex (or voxel) each column is.

    Attributes
    ----------
    space : str or None
        The template (``space-`` entity), e.g. ``fsaverage5`` or ``fsLR``.
    hemispheres : tuple of (str, int)
        GIFTI data: ``(("L", n_left), ("R", n_right))``, columns are the left
        vertices then the right ones. Empty for CIFTI.
    axis : nibabel.cifti2.BrainModelAxis or None
        CIFTI data: the grayordinates, columns in the axis order.
    """

    space: str | None
    hemispheres: tuple = ()
    axis: cifti2.BrainModelAxis | None = None

    @property
    def kind(self) -> str:
        return "cifti" if self.axis is not None else "gifti"

    @property
    def n_units(self) -> int:
        return len(self.axis) if self.axis is not None else sum(n for _, n in self.hemispheres)

    def parts(self) -> list[tuple[str, slice, np.ndarray | None]]:
        """Surface parts of the columns: ``(hemisphere, columns, vertex numbers)``.

        GIFTI hemispheres hold every vertex of their mesh (vertex numbers
        None: column ``j`` of the part is vertex ``j``); a CIFTI cortex
        holds the vertex numbers the file lists (the medial wall is usually
        left out).
        """
        if self.axis is None:
            out, start = [], 0
            for hemi, n in self.hemispheres:
                out.append((hemi, slice(start, start + n), None))
                start += n
            return out
        out = []
        for name, columns, model in self.axis.iter_structures():
            for hemi, structure in CORTEX.items():
                if name == structure:
                    out.append((hemi, slice(*columns.indices(len(self.axis))),
                                np.asarray(model.vertex[model.surface_mask])))
        return out

    def surface_vertices(self, hemi: str) -> int:
        """Number of vertices of ``hemi``'s mesh (as the file states it)."""
        if self.axis is None:
            return dict(self.hemispheres)[hemi]
        return int(self.axis.nvertices[CORTEX[hemi]])

    def voxels(self):
        """CIFTI subcortical voxels: ``(columns, ijk (n, 3), affine, volume shape)``, or None."""
        if self.axis is None or not self.axis.volume_mask.any():
            return None
        columns = np.flatnonzero(self.axis.volume_mask)
        return columns, np.asarray(self.axis.voxel[columns]), self.axis.affine, tuple(self.axis.volume_shape)

    def same_as(self, other: "Surface") -> bool:
        if self.kind != other.kind:
            return False
        if self.axis is None:
            return tuple(self.hemispheres) == tuple(other.hemispheres)
        return self.axis == other.axis

    def describe(self) -> dict:
        """JSON-able description for sidecars."""
        if self.axis is None:
            return {"Kind": "GIFTI", "Space": self.space,
                    "Hemispheres": {h: n for h, n in self.hemispheres}}
        structures = {name.replace("CIFTI_STRUCTURE_", ""): len(model)
                      for name, _, model in self.axis.iter_structures()}
        return {"Kind": "CIFTI-2", "Space": self.space, "Grayordinates": len(self.axis),
                "Structures": structures}


def is_surface_file(path) -> bool:
    name = Path(path).name
    return name.endswith(GIFTI_EXTENSIONS + CIFTI_EXTENSIONS)


def is_gifti(path) -> bool:
    return Path(path).name.endswith(GIFTI_EXTENSIONS)


def hemisphere_files(path) -> tuple[Path, Path]:
    """The left and right files of a GIFTI map named by either of them.

    Raises
    ------
    InputDataError
        The name has no ``hemi-L``/``hemi-R`` entity or the other file is missing.
    """
    path = Path(path)
    if not re.search(r"_hemi-[LR]_", "_" + path.name):
        raise InputDataError(f"{path}: a GIFTI data file needs a hemi-L or hemi-R entity in its name")
    files = tuple(path.with_name(re.sub(r"(^|_)hemi-[LR](?=_)", rf"\1hemi-{h}", path.name))
                  for h in HEMISPHERES)
    for f in files:
        if not f.exists():
            raise InputDataError(f"{path}: its other hemisphere's file {f.name} is missing "
                                 "(GIFTI data are analysed as both hemispheres together)")
    return files


def read_surface(path, space: str | None = None) -> tuple[np.ndarray, Surface]:
    """Data of a surface file as ``(n_samples, n_units)`` float64, and its unit space.

    Parameters
    ----------
    path : path-like
        A GIFTI file of either hemisphere (both are read), or a CIFTI-2
        dense file (``.dtseries.nii``: samples are time points;
        ``.dscalar.nii``: samples are maps).
    space : str, optional
        The ``space-`` entity, recorded in the returned :class:`Surface`.

    Raises
    ------
    InputDataError
        Unreadable file, missing hemisphere, data arrays of unequal lengths,
        or a CIFTI file whose columns are not grayordinates.
    """
    path = Path(path)
    try:
        if is_gifti(path):
            arrays, hemis = [], []
            for hemi, f in zip(HEMISPHERES, hemisphere_files(path)):
                img = nb.load(f)
                data = np.column_stack([np.asarray(d.data, dtype=np.float64).ravel() for d in img.darrays]) \
                    if img.darrays else np.zeros((0, 0))
                if data.size == 0:
                    raise InputDataError(f"{f}: GIFTI file has no data array")
                arrays.append(data.T)   # (n_samples, n_vertices)
                hemis.append((hemi, data.shape[0]))
            if arrays[0].shape[0] != arrays[1].shape[0]:
                raise InputDataError(f"{path}: the hemispheres hold {arrays[0].shape[0]} and "
                                     f"{arrays[1].shape[0]} data arrays")
            return np.hstack(arrays), Surface(space, tuple(hemis))
        img = nb.load(path)
        if not isinstance(img, cifti2.Cifti2Image):
            raise InputDataError(f"{path}: not a CIFTI-2 file")
        axis = img.header.get_axis(1)
        if not isinstance(axis, cifti2.BrainModelAxis):
            raise InputDataError(f"{path}: CIFTI columns are not grayordinates (dense file expected)")
        return np.asarray(img.get_fdata(dtype=np.float64)), Surface(space, (), axis)
    except InputDataError:
        raise
    except Exception as exc:  # nibabel raises several types for broken files
        raise InputDataError(f"cannot read surface file {path}: {exc}") from exc


def n_samples(path) -> int:
    """Time points (or maps) of a surface file, reading only what is needed."""
    path = Path(path)
    try:
        if is_gifti(path):
            return len(nb.load(path).darrays)
        return int(nb.load(path).shape[0])
    except Exception as exc:  # nibabel raises several types for broken files
        raise InputDataError(f"cannot read surface file {path}: {exc}") from exc


def map_paths(path: Path, surface: Surface) -> list[Path]:
    """Files of one map on ``surface`` named like ``path`` (a name with a ``.nii.gz`` extension).

    GIFTI: one ``.func.gii`` per hemisphere, ``hemi-`` inserted before
    ``space-`` (BIDS order); CIFTI: one ``.dscalar.nii``.
    """
    stem = Path(path).name.removesuffix(".nii.gz")
    if surface.axis is not None:
        return [Path(path).with_name(stem + ".dscalar.nii")]
    out = []
    for hemi, _ in surface.hemispheres:
        parts = stem.split("_")
        at = next((i for i, p in enumerate(parts) if p.startswith(("space-", "res-", "den-", "label-",
                                                                     "contrast-", "stat-", "desc-"))),
                  len(parts) - 1)
        out.append(Path(path).with_name("_".join([*parts[:at], f"hemi-{hemi}", *parts[at:]]) + ".func.gii"))
    return out


def write_surface(path: Path, values: np.ndarray, surface: Surface, names=None) -> list[Path]:
    """Write map(s) over ``surface``'s units atomically; returns the files (left first).

    Parameters
    ----------
    path : Path
        The map's name with a ``.nii.gz`` extension (see :func:`map_paths`).
    values : ndarray, (n_units,) or (n_maps, n_units)
        float32 on disk; NaN where nothing was estimated.
    names : list of str, optional
        CIFTI map names (default: the file stem).
    """
    values = np.atleast_2d(np.asarray(values, dtype=np.float32))
    if values.shape[1] != surface.n_units:
        raise ValueError(f"values have {values.shape[1]} columns, the surface {surface.n_units} units")
    paths = map_paths(path, surface)
    if surface.axis is not None:
        names = names or [paths[0].name.removesuffix(".dscalar.nii")] * values.shape[0]
        img = cifti2.Cifti2Image(values, header=(cifti2.ScalarAxis(names), surface.axis))
        img.nifti_header.set_intent("ConnDenseScalar")
        with atomic_path(paths[0]) as tmp:
            nb.save(img, tmp)
        return paths
    start = 0
    for (hemi, n), target in zip(surface.hemispheres, paths):
        structure = "CortexLeft" if hemi == "L" else "CortexRight"
        img = nb.gifti.GiftiImage(meta=nb.gifti.GiftiMetaData({"AnatomicalStructurePrimary": structure}))
        for row in values[:, start:start + n]:
            img.add_gifti_data_array(nb.gifti.GiftiDataArray(row, intent="NIFTI_INTENT_ESTIMATE",
                                                             datatype="NIFTI_TYPE_FLOAT32"))
        with atomic_path(target) as tmp:
            nb.save(img, tmp)
        start += n
    return paths


@dataclass(frozen=True, eq=False)
class Mesh:
    """One hemisphere's triangle mesh: ``coordinates`` (n, 3) mm, ``faces`` (m, 3) vertex numbers."""

    coordinates: np.ndarray
    faces: np.ndarray
    source: str


#: Templates whose meshes nilearn ships as package data (nothing is downloaded).
PACKAGED_MESHES = ("fsaverage5",)


def load_meshes(space: str | None, mesh_files=(), kind: str = "pial") -> dict[str, Mesh] | None:
    """Meshes of both hemispheres, from ``--surface-mesh`` files or nilearn's package data.

    Parameters
    ----------
    space : str or None
        Template of the data; ``fsaverage5`` meshes come with nilearn.
    mesh_files : sequence of path-like
        GIFTI surface files (``.surf.gii``), one per hemisphere, the
        hemisphere named by a ``hemi-L``/``hemi-R`` entity or the file's
        ``AnatomicalStructurePrimary``; they win over packaged meshes.
    kind : str
        Packaged mesh to use: ``pial`` (geometry: areas, coordinates) or
        ``inflated`` (figures).

    Returns
    -------
    dict of str to Mesh, or None
        None when no mesh is available for ``space``.
    """
    if mesh_files:
        meshes = {}
        for f in mesh_files:
            hemi, mesh = _read_mesh(Path(f))
            meshes[hemi] = mesh
        if set(meshes) != set(HEMISPHERES):
            raise InputDataError(f"--surface-mesh needs one left and one right mesh, got {sorted(meshes)}")
        return meshes
    if space not in PACKAGED_MESHES:
        return None
    from nilearn.datasets import load_fsaverage

    polymesh = load_fsaverage(space)["pial" if kind == "pial" else kind]
    return {h: Mesh(np.asarray(polymesh.parts[part].coordinates, dtype=np.float64),
                    np.asarray(polymesh.parts[part].faces, dtype=np.int64), f"nilearn {space} {kind}")
            for h, part in (("L", "left"), ("R", "right"))}


def _read_mesh(path: Path) -> tuple[str, Mesh]:
    try:
        img = nb.load(path)
        coords = img.get_arrays_from_intent("NIFTI_INTENT_POINTSET")[0].data
        faces = img.get_arrays_from_intent("NIFTI_INTENT_TRIANGLE")[0].data
    except Exception as exc:  # nibabel raises several types for broken files
        raise InputDataError(f"cannot read surface mesh {path}: {exc}") from exc
    found = re.search(r"(?:^|_)hemi-([LR])_", path.name)
    structure = str(img.meta.get("AnatomicalStructurePrimary", ""))
    hemi = found.group(1) if found else {"CortexLeft": "L", "CortexRight": "R"}.get(structure)
    if hemi is None:
        raise InputDataError(f"{path}: cannot tell the hemisphere (no hemi- entity or AnatomicalStructurePrimary)")
    return hemi, Mesh(np.asarray(coords, dtype=np.float64), np.asarray(faces, dtype=np.int64), str(path))
