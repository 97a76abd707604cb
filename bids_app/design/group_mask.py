"""Which voxels a group-level model is fitted in.

A voxel enters the group mask when it is *valid* (finite and non-zero: SPM
and FSL write 0 or NaN outside their masks) in at least ``coverage`` of the
inputs, intersected with

* the explicit mask (``Model.Options.Mask``, resampled nearest-neighbour to
  the inputs) when there is one; otherwise
* nilearn's packaged MNI152 brain mask (2 mm, no download), resampled
  nearest-neighbour to the inputs, when the inputs fill their box: valid in
  more than :data:`FILL_FRACTION` of it, which no masked brain does (a brain
  fills about 25-45 % of an MNI bounding box). Such inputs, like the Wager
  et al. 2008 maps, have values in the air around the head; without this
  rule the model would run, and find "activations", there.

The template rule assumes MNI-aligned inputs; pass ``brain_mask=False`` for
native-space data.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from bids_app.errors import InputDataError

FILL_FRACTION = 0.75
TEMPLATE = "MNI152 brain mask packaged with nilearn (2 mm, threshold 0.2)"


def group_mask(data: np.ndarray, affine: np.ndarray, *, coverage: float = 1.0,
               explicit_mask: np.ndarray | None = None, brain_mask="auto",
               template: Callable[[], np.ndarray] | None = None) -> tuple[np.ndarray, dict]:
    """Voxels to fit at group level.

    Parameters
    ----------
    data : ndarray, shape (n_inputs, x, y, z)
        Input maps on one grid.
    affine : ndarray, shape (4, 4)
        Their voxel-to-world affine (mm).
    coverage : float in (0, 1]
        Minimum fraction of inputs in which a voxel must be valid.
    explicit_mask : ndarray of bool, shape (x, y, z), or None
        A mask on the inputs' grid (:func:`bids_app.io.images.mask_on_grid`).
    brain_mask : {"auto", True, False}
        Intersect with the MNI152 template brain mask: when the inputs fill
        their box and there is no explicit mask ("auto"), always (True) or
        never (False).
    template : callable, optional
        Returns the template brain mask on the inputs' grid, ndarray of bool
        (x, y, z) (:func:`bids_app.io.images.template_brain_mask`); called
        only when the rule needs it, required unless ``brain_mask`` is False.

    Returns
    -------
    mask : ndarray of bool, shape (x, y, z)
    info : dict
        JSON-able: ``rule`` applied and voxel counts at each step.

    Raises
    ------
    ValueError
        Bad ``coverage``/``brain_mask`` or data that is not 4-D.
    bids_app.errors.InputDataError
        The resulting mask is empty.
    """
    if data.ndim != 4 or data.shape[0] == 0:
        raise ValueError(f"data must be (n_inputs, x, y, z) with n_inputs > 0, got {data.shape}")
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    if brain_mask not in ("auto", True, False):
        raise ValueError(f"brain_mask must be 'auto', True or False, got {brain_mask!r}")
    n, shape = data.shape[0], data.shape[1:]
    affine = np.asarray(affine, dtype=np.float64)
    # 1e-9 keeps e.g. coverage=0.5 of 10 inputs at 5, not 6, despite float round-off
    needed = max(1, math.ceil(coverage * n - 1e-9))
    counts = (np.isfinite(data) & (data != 0)).sum(axis=0)
    mask = counts >= needed
    box_fraction = float(mask.mean())
    info = {"coverage": coverage, "n_inputs": n, "min_valid_inputs": needed,
            "n_voxels_box": int(mask.size), "n_voxels_covered": int(mask.sum()),
            "box_fraction_covered": box_fraction, "explicit_mask": None, "template": None,
            "warnings": []}
    rules = [f"valid (finite, non-zero) in >= {needed} of {n} inputs"]

    if explicit_mask is not None:
        explicit = np.asarray(explicit_mask, dtype=bool)
        if explicit.shape != shape:
            raise ValueError(f"explicit_mask has shape {explicit.shape}, the inputs {shape}")
        mask &= explicit
        info["explicit_mask"] = "image"
        info["n_voxels_explicit"] = int(explicit.sum())
        rules.append("inside the explicit mask")
    fills_box = box_fraction > FILL_FRACTION
    if brain_mask is True or (brain_mask == "auto" and explicit_mask is None and fills_box):
        if template is None:
            raise ValueError("the template brain mask is needed: pass template")
        template = template()
        mask &= template
        info["template"] = TEMPLATE
        info["n_voxels_template"] = int(template.sum())
        rules.append("inside the MNI152 brain mask" + (
            f" (inputs fill {box_fraction:.0%} of their box: not masked)" if fills_box else ""))
    elif fills_box:
        info["warnings"].append(f"inputs fill {box_fraction:.0%} of their box (not masked) "
                                "and no brain mask was applied")
    info["rule"] = "; ".join(rules)
    info["n_voxels_mask"] = int(mask.sum())
    if not mask.any():
        raise InputDataError(f"the group mask is empty ({info['rule']}); check that the "
                             "inputs and the mask are in the same space")
    return mask, info


def surface_mask(data: np.ndarray, parts) -> tuple[np.ndarray, dict]:
    """Surface units (vertices, grayordinates) to fit at group level.

    A unit is fitted when every input has a finite, non-zero value there
    (the medial wall and vertices outside the sampled volume hold 0 or NaN)
    and the inputs are not all equal there (zero variance across inputs:
    no residual variance to test against).

    Parameters
    ----------
    data : ndarray, shape (n_inputs, n_units)
    parts : dict of str to ndarray of bool
        Name (hemisphere, structure) -> its units, for per-part counts.

    Returns
    -------
    mask : ndarray of bool, shape (n_units,)
    info : dict
        JSON-able ``rule`` and per-part counts of excluded units.

    Raises
    ------
    bids_app.errors.InputDataError
        No unit is left.
    """
    valid = (np.isfinite(data) & (data != 0)).all(axis=0)
    varying = np.zeros(data.shape[1], dtype=bool)
    varying[valid] = np.ptp(data[:, valid], axis=0) > 0
    mask = valid & varying
    info = {"rule": f"valid (finite, non-zero) in all {data.shape[0]} inputs and not equal across them "
                    "(medial wall, out-of-coverage and zero-variance units excluded)",
            "n_units": int(data.shape[1]), "n_units_mask": int(mask.sum()),
            "excluded": {name: {"units": int(inside.sum()), "zero_or_missing": int((inside & ~valid).sum()),
                                "zero_variance": int((inside & valid & ~varying).sum())}
                         for name, inside in parts.items()}}
    if not mask.any():
        raise InputDataError(f"the group mask is empty ({info['rule']})")
    return mask, info
