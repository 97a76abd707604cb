"""Design-matrix diagnostics: rank, the cause of a rank deficiency, estimability,
collinearity.

Rules (:func:`check_design` raises on any *problem*, returns otherwise):

* Problems: non-finite values; no rows or columns; a contrast with the wrong
  number of weights; a requested contrast that is not estimable (weights
  not in the row space of X, so its value depends on the arbitrary
  pseudo-inverse solution); a redundant intercept (``intercept`` lies in the
  span of the other columns, e.g. ``1`` in X next to one column per subject:
  the intercept's estimate is then arbitrary even when the contrasts asked
  for happen to be estimable); and, unless ``require_residual_dof=False``
  (fixed effects with known variances), no residual degrees of freedom
  (``n_rows <= rank``).
* Warnings: any other rank deficiency (SPM-style paired and
  repeated-measures designs with condition and subject columns are
  rank-deficient by construction; their condition contrasts stay
  estimable); Belsley's scaled condition number > :data:`CONDITION_WARN`
  (30: columns scaled to unit length, not centred; Belsley, Kuh & Welsch
  1980); a variance inflation factor > :data:`VIF_WARN` (10).

Rank, null space and estimability are computed on X with columns scaled to
unit Euclidean norm, so that a covariate in milliseconds next to an
intercept does not fool the tolerance; the dependencies are then reported in
the original units. Each dependency is a basis vector of the null space of
X in reduced row-echelon form (intercept first, then design order), phrased
as "'intercept' equals the sum of the subject.* columns", "'b' is a
multiple of 'a' ('b' = 2*'a')", or generically "'a' = 0.5*'b' + 'c'".
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import scipy.linalg

from bids_app.blas import one_blas_thread
from bids_app.design.columns import INTERCEPT
from bids_app.errors import DesignError

CONDITION_WARN = 30.0
VIF_WARN = 10.0
#: Relative tolerance for "this contrast is orthogonal to the null space".
ESTIMABLE_TOL = 1e-6
_ZERO = 1e-9  # coefficients below this (relative) are 0 in printed dependencies
_VIF_INF = 1e10  # a perfect fit gives 1e15 (R^2 clipped below 1), not inf


@dataclass
class Diagnostics:
    """What :func:`diagnose` found.

    Attributes
    ----------
    n_rows, n_columns, rank : int
    condition_number : float
        Of X with unit-norm columns; ``inf`` when rank-deficient.
    vif : dict
        Column -> variance inflation factor (``inf`` when the column is a
        combination of the others; None for constant columns, where it is
        undefined).
    dependencies : list of str
        One sentence per null-space dimension (empty when full rank).
    non_estimable : list of str
        Names of requested contrasts that are not estimable.
    problems, warnings : list of str
    """

    n_rows: int
    n_columns: int
    rank: int
    condition_number: float
    vif: dict = field(default_factory=dict)
    dependencies: list = field(default_factory=list)
    non_estimable: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-able copy; infinite numbers become the string ``"inf"``."""
        out = asdict(self)
        out["condition_number"] = _json_number(self.condition_number)
        out["vif"] = {k: _json_number(v) for k, v in self.vif.items()}
        return out


def diagnose(matrix: pd.DataFrame, contrasts=(), *, require_residual_dof: bool = True
             ) -> Diagnostics:
    """Diagnose a design matrix and the contrasts to be evaluated on it.

    Parameters
    ----------
    matrix : DataFrame, shape (n_rows, n_columns)
    contrasts : sequence of (str, array_like)
        ``(name, weights)``; weights over all columns of ``matrix``, shape
        (n_columns,) for t or (n_rows_F, n_columns) for F.
    require_residual_dof : bool
        Whether ``n_rows <= rank`` is a problem (True for OLS-type
        estimators, which estimate the residual variance).

    Returns
    -------
    Diagnostics
    """
    names = [str(c) for c in matrix.columns]
    X = matrix.to_numpy(dtype=np.float64)
    n, p = X.shape
    diag = Diagnostics(n_rows=n, n_columns=p, rank=0, condition_number=math.inf)
    bad = [c for c, ok in zip(names, np.isfinite(X).all(axis=0)) if not ok]
    if bad:
        diag.problems.append(f"non-finite values (NaN or inf) in column(s) {_listing(bad)}")
    if n == 0 or p == 0:
        diag.problems.append(f"the design is empty ({n} rows, {p} columns)")
    if diag.problems:
        return diag
    # one BLAS thread: on matrices this small, a second thread only adds synchronisation (a 121 x 19
    # run design took 0.06-0.26 s with two threads on a busy 2-core machine, 0.02-0.04 s with one;
    # the same numbers either way)
    with one_blas_thread():
        return _diagnose(diag, X, names, contrasts, require_residual_dof)


def _diagnose(diag: Diagnostics, X: np.ndarray, names: list[str], contrasts, require_residual_dof: bool
              ) -> Diagnostics:
    n, p = X.shape
    norms = np.linalg.norm(X, axis=0)
    scale = np.where(norms > 0, norms, 1.0)
    Xs = X / scale
    diag.rank = int(np.linalg.matrix_rank(Xs))
    null = scipy.linalg.null_space(Xs)  # orthonormal, scaled coordinates, (p, p - rank)
    if diag.rank == p:
        s = np.linalg.svd(Xs, compute_uv=False)
        diag.condition_number = float(s[0] / s[-1])
    diag.vif = _vif(X, names)
    diag.dependencies = describe_dependencies(null / scale[:, None], names)

    for name, weights in contrasts:
        w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        if w.shape[1] != p:
            diag.problems.append(f"contrast {name!r} has {w.shape[1]} weights for {p} design "
                                 f"columns ({_listing(names)})")
        elif not _estimable(w / scale, null):
            diag.non_estimable.append(str(name))

    rank_text = (f"the design is rank-deficient (rank {diag.rank} < {p} columns): "
                 + "; ".join(diag.dependencies))
    if diag.rank < p:
        if INTERCEPT in names and _redundant(Xs, names.index(INTERCEPT), diag.rank):
            diag.problems.append(
                f"redundant intercept: {rank_text}. Remove 1 from Model.X (the other columns "
                "already model the mean) or code the factor with Constraint \"drop_one\"")
        for name in diag.non_estimable:
            diag.problems.append(
                f"contrast {name!r} is not estimable: its weights are not a combination of "
                f"the design's rows, because {rank_text}")
        if not diag.problems:
            diag.warnings.append(f"{rank_text}; every requested contrast is estimable")
    if require_residual_dof and n <= diag.rank:
        diag.problems.append(f"no residual degrees of freedom: {n} maps for {diag.rank} "
                             "independent columns; a t or F test needs more maps")
    if diag.rank == p and diag.condition_number > CONDITION_WARN:
        diag.warnings.append(
            f"condition number {diag.condition_number:.1f} > {CONDITION_WARN:g} (columns "
            "scaled to unit length): near-collinear columns make the estimates unstable; "
            "demean covariates or drop redundant ones")
    for col, v in diag.vif.items():
        if v is not None and VIF_WARN < v < math.inf:
            diag.warnings.append(f"variance inflation factor of {col!r} is {v:.1f} > "
                                 f"{VIF_WARN:g}: it is largely explained by other columns")
    return diag


def check_design(matrix: pd.DataFrame, contrasts=(), *, require_residual_dof: bool = True
                 ) -> Diagnostics:
    """:func:`diagnose`, raising when there is any problem.

    Raises
    ------
    bids_app.errors.DesignError
        With every problem, one per line.
    """
    diag = diagnose(matrix, contrasts, require_residual_dof=require_residual_dof)
    if diag.problems:
        raise DesignError("\n  - ".join(["the design cannot be estimated:", *diag.problems]))
    return diag


def describe_dependencies(null: np.ndarray, names: list[str]) -> list[str]:
    """Phrase a null-space basis of X as relations between named columns.

    Parameters
    ----------
    null : ndarray, shape (n_columns, k)
        Null-space basis of X in X's own units (``X @ null == 0``).
    names : list of str
        Column names.

    Returns
    -------
    list of str
        k sentences, one per basis vector of the row-reduced null space.
    """
    if null.shape[1] == 0:
        return []
    # pivots are taken in this order: the intercept first (a redundant intercept is
    # what gets expressed), then later columns in terms of earlier ones
    order = sorted(reversed(range(len(names))), key=lambda j: names[j] != INTERCEPT)
    rows = _rref(null.T[:, order])
    out = []
    for row in rows:
        coef = np.zeros(len(names))
        coef[order] = row
        out.append(_phrase(coef, order[int(np.flatnonzero(row)[0])], names))
    return out


def _rref(a: np.ndarray) -> np.ndarray:
    """Reduced row-echelon form (partial pivoting) of a full-row-rank matrix."""
    a = a.copy()
    k, m = a.shape
    row = 0
    for col in range(m):
        if row == k:
            break
        piv = row + int(np.argmax(np.abs(a[row:, col])))
        if abs(a[piv, col]) < _ZERO * np.abs(a).max():
            continue
        a[[row, piv]] = a[[piv, row]]
        a[row] /= a[row, col]
        others = np.arange(k) != row
        a[others] -= np.outer(a[others, col], a[row])
        row += 1
    a[np.abs(a) < _ZERO * np.abs(a).max(axis=1, keepdims=True)] = 0.0
    return a[:row]


def _phrase(coef: np.ndarray, j: int, names: list[str]) -> str:
    """One relation ``sum_m coef_m x_m = 0``, said of column j (where coef is 1)."""
    support = np.flatnonzero(coef)
    others = [int(m) for m in support if m != j]
    if not others:
        return f"{names[j]!r} is all zeros"
    if len(others) == 1:
        m = others[0]
        a = -coef[m]  # x_j = a * x_m
        if np.isclose(a, 1.0):
            return f"{names[j]!r} and {names[m]!r} are identical"
        return (f"{names[j]!r} is a multiple of {names[m]!r} "
                f"({names[j]!r} = {_num(a)}*{names[m]!r})")
    mags = np.abs(coef[support])
    if np.allclose(mags, mags[0]):
        pos = [names[m] for m in support if coef[m] > 0]
        neg = [names[m] for m in support if coef[m] < 0]
        if not neg:
            return f"the sum of {_group(pos, names)} is zero"
        left, right = (pos, neg) if len(pos) <= len(neg) else (neg, pos)
        lhs = repr(left[0]) if len(left) == 1 else f"the sum of {_group(left, names)}"
        return f"{lhs} equals the sum of {_group(right, names)}"
    terms = []
    for m in others:
        a = -coef[m]
        size = "" if np.isclose(abs(a), 1.0) else f"{_num(abs(a))}*"
        terms.append(("-" if a < 0 else "+", f"{size}{names[m]!r}"))
    (sign, first), rest = terms[0], terms[1:]
    text = ("-" if sign == "-" else "") + first + "".join(f" {s} {t}" for s, t in rest)
    return f"{names[j]!r} = {text}"


def _group(cols: list[str], names: list[str]) -> str:
    """``the sub-* columns`` when cols are exactly the columns with a common prefix."""
    prefix = os.path.commonprefix(cols)
    cut = max(prefix.rfind(ch) for ch in "._-")
    prefix = prefix[:cut + 1] if cut >= 0 else prefix
    if prefix and set(cols) == {c for c in names if c.startswith(prefix)}:
        return f"the {prefix}* columns"
    if len(cols) > 6:
        return ", ".join(map(repr, cols[:3])) + f", ..., {cols[-1]!r} ({len(cols)} columns)"
    return _listing(cols)


def _num(a: float) -> str:
    return f"{a:.4g}"


def _listing(cols) -> str:
    cols = [repr(c) for c in cols]
    return cols[0] if len(cols) == 1 else ", ".join(cols[:-1]) + " and " + cols[-1]


def _estimable(w_scaled: np.ndarray, null: np.ndarray) -> bool:
    """Whether every row of w (scaled coordinates) is orthogonal to the null space."""
    if null.shape[1] == 0:
        return True
    resid = np.linalg.norm(w_scaled @ null, axis=1)
    return bool(np.all(resid <= ESTIMABLE_TOL * np.maximum(np.linalg.norm(w_scaled, axis=1),
                                                           np.finfo(float).tiny)))


def _redundant(Xs: np.ndarray, j: int, rank: int) -> bool:
    """Whether column j lies in the span of the other columns."""
    return int(np.linalg.matrix_rank(np.delete(Xs, j, axis=1))) == rank


def _vif(X: np.ndarray, names: list[str]) -> dict:
    out = {}
    constant = np.ptp(X, axis=0) == 0
    for j, name in enumerate(names):
        if constant[j]:
            out[name] = None
        elif X.shape[1] == 1:
            out[name] = 1.0
        else:
            v = variance_inflation(X, j)
            out[name] = math.inf if v >= _VIF_INF else v
    return out


def variance_inflation(X: np.ndarray, j: int) -> float:
    """Variance inflation factor of column ``j``: ``1 / (1 - R^2)`` of ``X[:, j]`` on the other columns.

    The definition statsmodels' ``variance_inflation_factor(X, j,
    standardize=False)`` evaluates (tested equal), without its ~1 s import in
    every group run with covariates: least squares by pseudo-inverse, R^2
    centred when the other columns hold a constant (a constant column, or an
    implicit one such as cell-means dummies that sum to 1), uncentred
    otherwise, clipped to [0, 1 - 1e-15]. Columns are not centred, so
    cell-means columns stay uncorrelated.

    Parameters
    ----------
    X : ndarray, (n_rows, n_columns)
        Design with at least two columns.
    j : int
        Column index.

    Returns
    -------
    float
        At least 1; 1e15 for a column in the span of the others.
    """
    x = X[:, j]
    others = np.delete(X, j, axis=1)
    ssr = float(np.sum(np.square(x - others @ (np.linalg.pinv(others, rcond=1e-15) @ x))))
    tss = float(np.sum(np.square(x - x.mean())) if _has_constant(others) else np.sum(np.square(x)))
    r_squared = min(max(1.0 - ssr / tss, 0.0), 1.0 - 1e-15)
    return 1.0 / (1.0 - r_squared)


def _has_constant(X: np.ndarray) -> bool:
    """Whether the columns of ``X`` hold a constant: a non-zero constant column, or a
    combination of columns equal to one (statsmodels' rule for the centred R^2)."""
    constant = np.ptp(X, axis=0) == 0
    if np.any(constant & (X[0] != 0)):
        return True
    return bool(np.linalg.matrix_rank(np.column_stack([np.ones(X.shape[0]), X])) == np.linalg.matrix_rank(X))


def _json_number(v):
    return v if v is None or math.isfinite(v) else "inf"
