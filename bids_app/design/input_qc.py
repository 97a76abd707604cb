"""Quality control of the maps entering a group-level model.

Each file is checked on its own, before the group mask is built:

* effect map: no finite value ("all NaN"), all finite values zero
  ("all zero"), or one single non-zero value ("constant": a broken
  contrast or a mask saved as an effect);
* geometry: shape or affine different from the reference, the
  (shape, affine) pair most inputs share; affines match within
  :data:`AFFINE_ATOL` mm (float32 storage round-off);
* variance map, when given: shape different from its effect map, or NaN,
  infinite, zero or negative values where the effect is defined (finite and
  non-zero: the file's own brain). A variance of 0 there would give an
  infinite weight in fixed or mixed effects.

Region (ROI) tables are checked the same way without geometry, and without
the "constant" rule: a table of one region always holds one value.

Policy ``"exclude"`` (default) drops bad files and records why, JSON-able for
provenance; ``"fail"`` raises :class:`InputDataError` listing every bad file.
Either way, no usable file left is an error.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from bids_app.errors import InputDataError

POLICIES = ("exclude", "fail")
AFFINE_ATOL = 1e-3


@dataclass
class QCReport:
    """Outcome of :func:`qc_maps`.

    Attributes
    ----------
    policy : str
    names : list of str
        All input names, in input order.
    kept : list of int
        Indices of the files that passed, in input order.
    excluded : list of dict
        ``{"index", "name", "reasons": [str, ...]}`` per excluded file.
    reference_shape : tuple of int
    reference_affine : ndarray, shape (4, 4)
    """

    policy: str
    names: list
    kept: list
    excluded: list = field(default_factory=list)
    reference_shape: tuple = ()
    reference_affine: np.ndarray | None = None

    @property
    def kept_names(self) -> list[str]:
        return [self.names[i] for i in self.kept]

    def to_dict(self) -> dict:
        return {
            "policy": self.policy,
            "n_inputs": len(self.names),
            "n_kept": len(self.kept),
            "kept": self.kept_names,
            "excluded": self.excluded,
            "reference_shape": list(self.reference_shape),
            "reference_affine": None if self.reference_affine is None
            else self.reference_affine.tolist(),
        }


def qc_maps(effects, variances, names, affines=None, shapes=None, *, policy: str = "exclude",
            constant: bool = True) -> QCReport:
    """Check every input map and decide which ones enter the model.

    Parameters
    ----------
    effects : list of ndarray
        Effect maps (3-D, any units), or region tables' effects (n_regions,).
    variances : list of (ndarray or None), or None
        Matching sampling-variance maps (squared effect units); None when
        the inputs have none.
    names : list of str
        File names (or labels) used in messages.
    affines : list of ndarray, shape (4, 4), or None
        Voxel-to-world affines, mm; None (with ``shapes``) skips the
        geometry checks, for region tables.
    shapes : list of tuple of int, or None
        Image shapes as stored (may differ from a bad array's shape).
    policy : {"exclude", "fail"}
    constant : bool
        Exclude maps whose non-zero values are all equal (False for tables).

    Returns
    -------
    QCReport

    Raises
    ------
    ValueError
        Unknown policy or lists of different lengths.
    bids_app.errors.InputDataError
        ``policy="fail"`` and some file is bad (all listed), or no file passed.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    variances = list(variances) if variances is not None else [None] * len(effects)
    geometry = affines is not None
    lengths = {len(effects), len(variances), len(names),
               *((len(affines), len(shapes)) if geometry else ())}
    if len(lengths) != 1:
        raise ValueError("effects, variances, names, affines and shapes differ in length")
    report = QCReport(policy=policy, names=list(names), kept=[])
    if geometry:
        shapes = [tuple(int(d) for d in s) for s in shapes]
        affines = [np.asarray(a, dtype=np.float64) for a in affines]
        report.reference_shape, report.reference_affine = _reference(shapes, affines)
    for i, (effect, variance) in enumerate(zip(effects, variances)):
        reasons = _geometry_reasons(shapes[i], affines[i], report.reference_shape,
                                    report.reference_affine) if geometry else []
        reasons += map_reasons(np.asarray(effect), None if variance is None
                               else np.asarray(variance), constant=constant)
        if reasons:
            report.excluded.append({"index": i, "name": str(names[i]), "reasons": reasons})
        else:
            report.kept.append(i)
    if report.excluded and policy == "fail":
        raise InputDataError(_message("input maps failed quality control", report.excluded))
    if not report.kept:
        raise InputDataError(_message("no input map passed quality control", report.excluded))
    return report


def map_reasons(effect: np.ndarray, variance: np.ndarray | None, constant: bool = True) -> list[str]:
    """Why one effect map (and its variance) is unusable; empty when fine.

    ``constant=False`` accepts maps whose non-zero values are all equal.
    """
    reasons = []
    finite = np.isfinite(effect)
    defined = finite & (effect != 0)
    if not finite.any():
        reasons.append("all values are NaN" if np.isnan(effect).all()
                       else "no finite value (NaN or inf everywhere)")
    elif not defined.any():
        reasons.append("all values are zero")
    elif constant:
        values = effect[defined]
        if values.min() == values.max():
            reasons.append(f"constant map: every non-zero value is {values.flat[0]:g}")
    if variance is None:
        return reasons
    if variance.shape != effect.shape:
        return [*reasons, f"variance shape {variance.shape} differs from the effect's "
                          f"{effect.shape}"]
    inside = variance[defined]
    n_nan = int(np.count_nonzero(~np.isfinite(inside)))
    n_nonpos = int(np.count_nonzero(inside <= 0))
    if n_nan or n_nonpos:
        parts = [f"{n} {what}" for n, what in ((n_nan, "NaN/inf"), (n_nonpos, "zero or negative"))
                 if n]
        reasons.append(f"variance has {' and '.join(parts)} values in {inside.size} voxels "
                       "where the effect is defined")
    return reasons


def _reference(shapes, affines) -> tuple[tuple, np.ndarray]:
    """The (shape, affine) most inputs share."""
    ref_shape = Counter(shapes).most_common(1)[0][0]
    candidates = [a for s, a in zip(shapes, affines) if s == ref_shape]
    votes = [sum(np.allclose(a, b, atol=AFFINE_ATOL) for b in candidates) for a in candidates]
    return ref_shape, candidates[int(np.argmax(votes))]


def _geometry_reasons(shape, affine, ref_shape, ref_affine) -> list[str]:
    reasons = []
    if shape != ref_shape:
        reasons.append(f"shape {shape} differs from {ref_shape} of most inputs")
    if not np.allclose(affine, ref_affine, atol=AFFINE_ATOL):
        diff = float(np.abs(affine - ref_affine).max())
        reasons.append(f"affine differs from that of most inputs (max difference {diff:.3g} mm)")
    return reasons


def _message(head: str, excluded: list[dict]) -> str:
    lines = [f"  - {e['name']}: {'; '.join(e['reasons'])}" for e in excluded]
    return "\n".join([f"{head} ({len(excluded)} file(s)):", *lines])
