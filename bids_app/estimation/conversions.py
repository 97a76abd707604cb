"""Convert t and F statistics to p-values and standard-normal z scores.

The z score of a statistic is the standard-normal quantile with the same
tail probability, as in nilearn's :mod:`nilearn.glm.contrasts`: for t,
``z = isf(sf(t))`` (``ppf(cdf(t))`` for negative t), for F ``z = isf(sf(F))``
(``ppf(cdf(F))`` when F is below its median). p-values are one-sided upper
tails (nilearn's convention for t).

Where a tail probability is below :data:`TAIL_SWITCH`, ``scipy.stats`` gives
0 (or loses digits just above the double-precision underflow), which nilearn
clips to ``z ~ 37``. Here the logarithm of the tail is integrated directly
(:func:`_log_tail`) and mapped to z with :func:`scipy.special.ndtri_exp`, so z
stays finite, accurate and monotone far beyond that (t = 1e200 is fine).
"""
from __future__ import annotations

import numpy as np
from scipy import special

#: Degrees of freedom are capped here, as nilearn's ``DEF_DOFMAX``: beyond it
#: t and F are their normal / chi-square limits to double precision.
DOF_MAX = 1e10

#: Tail probabilities below this come from :func:`_log_tail` instead of
#: ``scipy.stats``; scipy's ``sf`` is accurate to ~1e-12 (relative, in log)
#: down to ~1e-260 but degrades near 1e-300.
TAIL_SWITCH = 1e-200

# Gauss-Laguerre rule for integrals of exp(-w) h(w) over [0, inf); 48 nodes
# give ~1e-12 relative accuracy in log-tail for t and F (see the tests).
_LAGUERRE_NODES, _LAGUERRE_WEIGHTS = np.polynomial.laguerre.laggauss(48)
_LOG_LAGUERRE_WEIGHTS = np.log(_LAGUERRE_WEIGHTS)


def t_to_z_p(t, dof):
    """z score and one-sided upper-tail p-value of t statistics, from one tail evaluation.

    Parameters
    ----------
    t : array_like
        t statistics.
    dof : float or array_like
        Error degrees of freedom, broadcastable against ``t``; capped at
        :data:`DOF_MAX`.

    Returns
    -------
    z : ndarray, float64
        Standard-normal z with the same tail probability; symmetric
        (``z(-t) == -z(t)``), finite for every finite ``t`` and positive
        ``dof``, +-inf for infinite ``t``.
    p : ndarray, float64
        ``P(T >= t)``; underflows to 0 below ~1e-308 (rank such voxels by z).
        Both are NaN where ``t`` or ``dof`` is NaN or ``dof <= 0``.
    """
    t, dof = _broadcast_float(t, dof)
    dof = np.minimum(dof, DOF_MAX)
    abs_t = np.abs(t)
    sf = _t_upper_tail(abs_t, dof)
    p = np.where(t >= 0, sf, 1.0 - sf)
    z = np.array(-special.ndtri(sf), dtype=np.float64)
    deep = (sf < TAIL_SWITCH) & np.isfinite(t)
    if np.any(deep):
        log_sf = _log_tail(*_t_log_density(dof[deep]), np.log(abs_t[deep]), upper=True)
        z[deep] = -special.ndtri_exp(log_sf)
    return np.sign(t) * z, p


def f_to_z_p(f, dof_num, dof_den):
    """z score and upper-tail p-value of F statistics.

    Parameters
    ----------
    f : array_like
        F statistics (>= 0).
    dof_num, dof_den : float or array_like
        Numerator and denominator degrees of freedom, broadcastable against
        ``f``; ``dof_den`` is capped at :data:`DOF_MAX`.

    Returns
    -------
    z : ndarray, float64
        Positive when ``f`` is above the median of F(dof_num, dof_den),
        negative below it; finite for every finite positive ``f``, -inf at
        ``f == 0``, +inf at ``f == inf``.
    p : ndarray, float64
        ``P(F >= f)``. Both are NaN where an input is NaN or a dof is not
        positive.
    """
    f, dof_num, dof_den = _broadcast_float(f, dof_num, dof_den)
    dof_den = np.minimum(dof_den, DOF_MAX)
    with np.errstate(invalid="ignore"):
        sf = special.fdtrc(dof_num, dof_den, f)
        # Take each side's quantile from its own small tail so neither loses
        # digits to 1 - p; the lower tail is only needed below the median.
        z = np.array(-special.ndtri(sf), dtype=np.float64)
        low = sf > 0.5
        cdf = np.full_like(sf, np.nan)
        cdf[low] = special.fdtr(dof_num[low], dof_den[low], f[low])
        z[low] = special.ndtri(cdf[low])
    for tail, upper in ((sf, True), (cdf, False)):
        with np.errstate(invalid="ignore"):
            deep = (tail < TAIL_SWITCH) & (f > 0) & np.isfinite(f)
        if np.any(deep):
            density = _f_log_density(dof_num[deep], dof_den[deep])
            log_tail = _log_tail(*density, np.log(f[deep]), upper=upper)
            z[deep] = -special.ndtri_exp(log_tail) if upper else special.ndtri_exp(log_tail)
    return z, sf


def t_to_p(t, dof):
    """One-sided upper-tail p-value of a t statistic, ``P(T >= t)`` (see :func:`t_to_z_p`)."""
    return t_to_z_p(t, dof)[1]


def t_to_z(t, dof):
    """Standard-normal z with the same tail probability as a t statistic (see :func:`t_to_z_p`)."""
    return t_to_z_p(t, dof)[0]


def f_to_p(f, dof_num, dof_den):
    """Upper-tail p-value of an F statistic, ``P(F >= f)`` (see :func:`f_to_z_p`)."""
    return f_to_z_p(f, dof_num, dof_den)[1]


def f_to_z(f, dof_num, dof_den):
    """Standard-normal z with the same upper-tail probability as an F statistic (see :func:`f_to_z_p`)."""
    return f_to_z_p(f, dof_num, dof_den)[0]


def _t_upper_tail(abs_t, dof):
    """``P(T >= |t|)``: scipy's t distribution function without scipy.stats' wrapper.

    Computed once per map and shared by z and p (evaluating it twice was most
    of the cost of a contrast on whole-brain maps).
    """
    return special.stdtr(dof, -abs_t)


def _broadcast_float(*arrays):
    return [np.array(a, dtype=np.float64) for a in np.broadcast_arrays(*arrays)]


def _t_log_density(dof):
    """Log density of log|T| and its derivative, for T ~ t(dof), dof (m,).

    With ``u = log s``, ``psi(u) = log f_T(e^u) + u``. Working in ``u`` keeps
    ``s**2`` from overflowing and makes ``psi`` concave, which
    :func:`_log_tail` relies on.
    """
    dof = dof[:, None]
    log_dof = np.log(dof)
    # betaln stays accurate for huge dof where gammaln differences cancel
    const = -special.betaln(dof / 2.0, 0.5) - 0.5 * log_dof

    def psi(u):
        return const + u - (dof + 1.0) / 2.0 * np.logaddexp(0.0, 2.0 * u - log_dof)

    def dpsi(u):
        return 1.0 - (dof + 1.0) * special.expit(2.0 * u - log_dof)

    return psi, dpsi


def _f_log_density(dof_num, dof_den):
    """Log density of log F and its derivative, for F ~ F(dof_num, dof_den), dofs (m,)."""
    dof_num, dof_den = dof_num[:, None], dof_den[:, None]
    log_ratio = np.log(dof_num / dof_den)
    const = dof_num / 2.0 * log_ratio - special.betaln(dof_num / 2.0, dof_den / 2.0)

    def psi(u):
        return const + dof_num / 2.0 * u - (dof_num + dof_den) / 2.0 * np.logaddexp(0.0, u + log_ratio)

    def dpsi(u):
        return dof_num / 2.0 - (dof_num + dof_den) / 2.0 * special.expit(u + log_ratio)

    return psi, dpsi


def _log_tail(psi, dpsi, u0, upper):
    """Log of ``integral of exp(psi(u)) du`` beyond ``u0`` (above if ``upper``).

    ``psi`` is concave and falls away from ``u0`` with slope ``k0 = |psi'(u0)|``,
    so after ``u = u0 +/- w / k0`` the integrand is ``exp(-w) h(w)`` with a
    smooth, decreasing ``h <= 1``: Gauss-Laguerre integrates it in log space,
    with no underflow however small the tail.

    Parameters
    ----------
    psi, dpsi : callable
        Log density of ``u`` and its derivative, elementwise on (m, k) arrays.
    u0 : ndarray, (m,)
        Lower (``upper=True``) or upper limit of integration, in the tail.

    Returns
    -------
    ndarray, (m,)
        Natural log of the tail probability.
    """
    u0 = u0[:, None]
    direction = 1.0 if upper else -1.0
    slope = -direction * dpsi(u0)
    psi0 = psi(u0)
    u = u0 + direction * _LAGUERRE_NODES / slope
    log_h = psi(u) - psi0 + _LAGUERRE_NODES
    return (psi0 - np.log(slope))[:, 0] + special.logsumexp(_LOG_LAGUERRE_WEIGHTS + log_h, axis=1)
