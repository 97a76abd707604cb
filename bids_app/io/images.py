"""Read images: BOLD data of a fit, masks (EPI masks computed over runs), the MNI template.

BOLD series are checked in full while planning by :mod:`bids_app.io.bold`.

Also the one resampling rule for masks and labels (:func:`on_grid`,
:func:`mask_on_grid`): nearest neighbour, so values stay as they are.
"""
from __future__ import annotations

import functools
import logging
import warnings
from pathlib import Path

import nibabel as nb
import numpy as np
from nibabel.arrayproxy import ArrayProxy

from bids_app.cache import cached_arrays, package_version
from bids_app.errors import InputDataError
from bids_app.io.bold import open_series
from bids_app.io.surface import is_surface_file

log = logging.getLogger(__name__)


def n_volumes(path: Path) -> int:
    """Volumes of a 4-D BOLD image, from its header."""
    try:
        return nb.load(path).shape[3]
    except Exception as exc:  # nibabel raises several types for broken files
        raise InputDataError(f"cannot read BOLD image {path}: {exc}") from exc


def load_image(path) -> nb.Nifti1Image:
    """A NIfTI image (header read, data on demand)."""
    return nb.load(path)


def run_masks(runs) -> dict[int, nb.Nifti1Image | None]:
    """The analysis mask of each run (keyed by position in ``runs``: objects
    with ``mask``, ``bold`` and ``entities``, e.g. :class:`bids_app.graph.units.RunInputs`).

    A mask file (fMRIPrep ``desc-brain_mask`` or ``Options.Mask``) is used as
    given. Without one, a single EPI mask is computed from all runs of the
    same subject and session (nilearn ``compute_multi_epi_mask``), so the
    runs that a fixed-effects node later combines cover the same voxels.

    Surface runs get None: their vertices are chosen from the data when
    loaded (:func:`bids_app.io.surface.load_series`).
    """
    from nilearn.masking import compute_multi_epi_mask

    masks, pending = {}, {}
    for i, run in enumerate(runs):
        if is_surface_file(run.bold):
            masks[i] = None
        elif run.mask:
            masks[i] = nb.load(run.mask)
        else:
            key = (run.entities.get("subject"), run.entities.get("session"))
            pending.setdefault(key, []).append(i)
    for key, idx in pending.items():
        bolds = [str(runs[i].bold) for i in idx]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mask = compute_multi_epi_mask(bolds)
                if not np.asarray(mask.dataobj).any():
                    # morphological opening erases coarse (e.g. 25 mm) brains entirely
                    log.warning("sub-%s: EPI mask empty after morphological opening; retrying without", key[0])
                    mask = compute_multi_epi_mask(bolds, opening=0)
        except Exception as exc:
            raise InputDataError(f"cannot compute an EPI mask for sub-{key[0]}: {exc}") from exc
        if not np.asarray(mask.dataobj).any():
            raise InputDataError(f"the EPI mask computed for sub-{key[0]} is empty: give a brain mask "
                                 "in the derivatives or with Options.Mask")
        for i in idx:
            masks[i] = mask
    return masks


def load_run_data(bold: Path, mask_img: nb.Nifti1Image, smoothing_fwhm: float | None):
    """BOLD inside the mask as a C-ordered (n_vols, n_voxels) float array, plus the mask on the BOLD grid.

    Voxels in C order of the mask (as :func:`nilearn.masking.apply_mask`
    gives them, and as :func:`~bids_app.derivatives.statmaps.unmask` puts
    them back). Values and dtype are nilearn's too (``NiftiMasker``, so
    ``FirstLevelModel``): float images keep their float dtype, other data
    (e.g. int16) become float32; non-finite values are 0. Unsmoothed, the
    masked voxels are taken straight from the array nibabel reads (Fortran
    order: each volume contiguous), without nilearn's C-ordered float copy
    of the whole series (~4 s and ~0.9 GB for 200 volumes at 2 mm). Gzipped
    files are decompressed with ISA-L (:func:`_series_array`).
    """
    try:
        img = nb.load(bold)
        mask_img = on_grid(mask_img, img)
        series = _series_array(img, Path(bold))
        if smoothing_fwhm:
            # nilearn (~1 s to import) only for smoothed runs: a unit worker process would import it for each run
            from nilearn.image import smooth_img
            from nilearn.masking import apply_mask

            smoothed = smooth_img(nb.Nifti1Image(series, img.affine, img.header), smoothing_fwhm)
            # C order, as nilearn's masker returns it (apply_mask's is Fortran): the scaling's sums follow it
            data = np.ascontiguousarray(apply_mask(smoothed, mask_img))
        else:
            data = _masked_series(series, np.asarray(mask_img.dataobj) != 0)
    except Exception as exc:
        raise InputDataError(f"cannot read BOLD image {bold}: {exc}") from exc
    return data, mask_img


def _series_array(img: nb.Nifti1Image, path: Path) -> np.ndarray:
    """The array nibabel gives for ``img`` (read from ``path``), a gzipped file decompressed with ISA-L
    (:func:`~bids_app.io.bold.open_series`: ~2.5x zlib, which nibabel uses)."""
    proxy = img.dataobj
    if not path.name.endswith(".gz") or not isinstance(proxy, ArrayProxy):
        return np.asanyarray(proxy)
    with open_series(path) as fh:
        spec = (proxy.shape, proxy.dtype, proxy.offset, proxy.slope, proxy.inter)
        return np.asanyarray(ArrayProxy(fh, spec, order=proxy.order))


def _masked_series(series: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n_vols, n_voxels) of a 4-D ``series`` inside the 3-D boolean ``mask``, in nilearn's dtype.

    float32 for non-float data, as nilearn: the percent-signal-change scaling
    then does nilearn's float32 arithmetic, and the AR(1) coefficients,
    truncated onto a grid of 1/100, fall in nilearn's bins.
    """
    volumes = series.reshape(-1, series.shape[3], order="F").T  # a view when Fortran-ordered
    columns = np.ravel_multi_index(np.nonzero(mask), mask.shape, order="F")
    dtype = series.dtype.newbyteorder("=") if series.dtype.kind == "f" else np.dtype(np.float32)
    # take gives C order (nilearn's, so the scaling sums as nilearn's; volumes[:, columns] is Fortran), and faster
    data = np.take(volumes, columns, axis=1).astype(dtype, copy=False)
    data[~np.isfinite(data)] = 0
    return data


def on_grid(img: nb.Nifti1Image, reference: nb.Nifti1Image) -> nb.Nifti1Image:
    """``img`` resampled nearest-neighbour onto ``reference``'s voxel grid, unless already on it.

    Nearest neighbour keeps mask and label values as they are.
    """
    if img.shape[:3] == reference.shape[:3] and np.allclose(img.affine, reference.affine, atol=1e-3):
        return img
    from nilearn.image import resample_to_img  # ~1 s to import: only when a grid differs

    return resample_to_img(img, reference, interpolation="nearest")


def mask_on_grid(img: nb.Nifti1Image, affine: np.ndarray, shape) -> np.ndarray:
    """A mask image on the given grid, nearest-neighbour, as bool (non-zero and finite = in)."""
    from nilearn.image import resample_img

    out = resample_img(img, target_affine=np.asarray(affine), target_shape=tuple(shape),
                       interpolation="nearest", force_resample=True, copy_header=True)
    values = np.asanyarray(out.dataobj)
    return np.isfinite(values) & (values != 0)


def template_brain_mask(affine: np.ndarray, shape) -> np.ndarray:
    """nilearn's MNI152 brain mask on the given grid (nearest-neighbour), as bool.

    Equal to :func:`mask_on_grid` of the template (tested), without
    importing ``nilearn.image`` (~2 s): the same transform and the same
    order-0 ``scipy.ndimage.affine_transform`` call as nilearn's
    ``resample_img``. Resampled once per grid and process (read-only array):
    the group mask and every map of the report ask for the same grid.
    """
    target = np.ascontiguousarray(affine, dtype=np.float64)
    return _template_on_grid(target.tobytes(), tuple(int(n) for n in shape))


@functools.lru_cache(maxsize=8)
def _template_on_grid(affine_bytes: bytes, shape: tuple) -> np.ndarray:
    import scipy.linalg
    from scipy import ndimage

    data, source = _mni_mask()
    target = np.frombuffer(affine_bytes, dtype=np.float64).reshape(4, 4)
    if np.allclose(target, source) and shape == data.shape:
        return _read_only(data != 0)
    transform = np.eye(4) if np.all(target == source) else scipy.linalg.inv(source) @ target
    matrix, offset = transform[:3, :3], transform[:3, 3]
    if np.all(np.diag(np.diag(matrix)) == matrix):
        matrix = np.diag(matrix)
    out = np.zeros(shape, dtype=data.dtype)
    ndimage.affine_transform(data, matrix, offset=offset, output_shape=shape, output=out, cval=0, order=0)
    return _read_only(out != 0)


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def template_image() -> nb.Nifti1Image:
    """nilearn's 2 mm MNI152 brain mask as an image (from the user cache)."""
    data, affine = _mni_mask()
    return nb.Nifti1Image(data, affine)


@functools.lru_cache(maxsize=1)
def _mni_mask() -> tuple[np.ndarray, np.ndarray]:
    """The 2 mm template mask's data and affine, from the user cache.

    nilearn builds it on every load by resampling its 1 mm template (~1 s);
    the result is kept in the user cache, keyed on the nilearn version.
    """
    def build():
        from nilearn.datasets import load_mni152_brain_mask  # package data: never downloads

        img = load_mni152_brain_mask(resolution=2)
        return {"data": np.asanyarray(img.dataobj), "affine": img.affine}

    arrays = cached_arrays(f"mni152-brain-mask-2mm-nilearn{package_version('nilearn')}", build)
    return arrays["data"], arrays["affine"]
