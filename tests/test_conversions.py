"""t/F -> p/z conversions against nilearn, scipy and closed-form tails."""
import numpy as np
import pytest
from nilearn.glm.contrasts import Contrast
from numpy.testing import assert_allclose, assert_array_equal
from scipy import special, stats

from bids_app.estimation.conversions import TAIL_SWITCH, f_to_p, f_to_z, t_to_p, t_to_z

DOFS = [1.0, 3.0, 10.0, 50.0, 300.0, 1e4]


@pytest.mark.parametrize("dof", DOFS)
def test_t_to_z_and_p_match_nilearn(dof):
    t = np.concatenate([np.linspace(-60, 60, 481), [-1e4, -200.0, 1e-3, 200.0, 1e4]])
    reference = Contrast(effect=t, variance=np.ones_like(t), dof=dof, stat_type="t")
    nilearn_z, nilearn_p = reference.z_score(), reference.p_value()
    # nilearn clips p at 1e-300 (z ~ 37); compare where it does not, and where
    # scipy (which both use there) is accurate.
    comparable = stats.t.sf(np.abs(t), dof) > 1e-250
    assert comparable.sum() > 250
    assert_allclose(t_to_z(t, dof)[comparable], nilearn_z[comparable], rtol=1e-9, atol=1e-6)
    assert_allclose(t_to_p(t, dof), nilearn_p, rtol=1e-12, atol=0)


@pytest.mark.parametrize("dof_num", [1, 2, 4])
@pytest.mark.parametrize("dof_den", [5.0, 50.0, 500.0])
def test_f_to_z_and_p_match_nilearn(dof_num, dof_den):
    f = np.logspace(-4, 3, 300)
    # effect rows of sqrt(f) with unit variance give nilearn's F = f
    effect = np.tile(np.sqrt(f), (dof_num, 1))
    reference = Contrast(effect=effect, variance=np.ones_like(f), dof=dof_den, stat_type="F")
    assert_allclose(reference.stat(), f, rtol=1e-12)
    nilearn_z, nilearn_p = reference.z_score(), reference.p_value()
    comparable = (nilearn_p > 1e-250) & (stats.f.cdf(f, dof_num, dof_den) > 1e-250)
    assert comparable.sum() > 200
    assert_allclose(f_to_z(f, dof_num, dof_den)[comparable], nilearn_z[comparable], rtol=1e-9, atol=1e-6)
    assert_allclose(f_to_p(f, dof_num, dof_den), nilearn_p, rtol=1e-12, atol=0)


def test_t_to_z_far_tail_is_finite_monotone_and_symmetric():
    assert np.isfinite(t_to_z(40.0, 10.0))
    assert t_to_z(40.0, 10.0) == pytest.approx(stats.norm.isf(stats.t.sf(40.0, 10.0)), rel=1e-12)
    t = np.logspace(0, 250, 3000)
    for dof in DOFS + [1e8]:
        z = t_to_z(t, dof)
        assert np.all(np.isfinite(z)), dof
        assert np.all(np.diff(z) > 0), dof
        assert_array_equal(t_to_z(-t, dof), -z)
    # scipy alone underflows here: p = 0 and isf(0) = inf
    assert stats.norm.isf(stats.t.sf(1e40, 10.0)) == np.inf


def _t2_log_sf(t):
    """Exact log upper tail of t with 2 dof: sf = 1 / ((s + t) s), s = sqrt(t^2 + 2)."""
    log_s = np.log(t) + 0.5 * np.log1p(2.0 / t / t)
    return -log_s - (np.log(t) + np.log1p(np.sqrt(1.0 + 2.0 / t / t)))


def test_t_to_z_far_tail_matches_closed_forms():
    t = np.logspace(1, 300, 500)
    crosses_switch = stats.t.sf(t, 2.0) < TAIL_SWITCH
    assert crosses_switch.any() and not crosses_switch.all()
    assert_allclose(t_to_z(t, 2.0), -special.ndtri_exp(_t2_log_sf(t)), rtol=1e-10)
    # Cauchy (1 dof): sf = arctan(1 / t) / pi
    t = np.logspace(1, 307, 500)
    log_sf = np.log(np.arctan(1.0 / t)) - np.log(np.pi)
    assert_allclose(t_to_z(t, 1.0), -special.ndtri_exp(log_sf), rtol=1e-10)


@pytest.mark.parametrize("dof_den", [5.0, 30.0, 1000.0])
def test_f_to_z_tails_match_closed_form(dof_den):
    # F(2, d): sf = (1 + 2 f / d) ** (-d / 2) exactly
    f = np.logspace(0, 300, 500)
    log_sf = -(dof_den / 2.0) * np.log1p(2.0 * f / dof_den)
    assert (np.exp(log_sf) < TAIL_SWITCH).any()
    z = f_to_z(f, 2, dof_den)
    assert np.all(np.isfinite(z)) and np.all(np.diff(z) > 0)
    assert_allclose(z, -special.ndtri_exp(log_sf), rtol=1e-10)
    # lower tail, F near 0: cdf = 1 - sf
    f = np.logspace(-300, -1, 500)
    log_cdf = np.log(-np.expm1(-(dof_den / 2.0) * np.log1p(2.0 * f / dof_den)))
    assert_allclose(f_to_z(f, 2, dof_den), special.ndtri_exp(log_cdf), rtol=1e-10)


def test_t_squared_is_f_with_one_numerator_dof():
    t = np.linspace(0.1, 30, 50)
    assert_allclose(f_to_p(t**2, 1, 17.0), 2 * t_to_p(t, 17.0), rtol=1e-10)


def test_vectorised_over_voxelwise_dof():
    rng = np.random.default_rng(0)
    t = rng.normal(scale=20, size=200)
    dof = rng.uniform(2, 400, size=200)
    expected = [float(t_to_z(ti, di)) for ti, di in zip(t, dof)]
    assert_allclose(t_to_z(t, dof), expected, rtol=1e-14)
    f = np.abs(t) * 5
    expected = [float(f_to_z(fi, 3, di)) for fi, di in zip(f, dof)]
    assert_allclose(f_to_z(f, 3, dof), expected, rtol=1e-14)


def test_undefined_inputs_give_nan():
    assert np.isnan(t_to_z(np.nan, 10.0))
    assert np.isnan(t_to_z(3.0, -1.0))
    assert np.isnan(t_to_p(3.0, 0.0))
    assert np.isnan(f_to_z(np.nan, 2, 10.0))
    assert np.all(np.isnan(f_to_z([2.0, 1e80], 2, 0.0)))
    assert_array_equal(t_to_z([np.inf, -np.inf], 10.0), [np.inf, -np.inf])
    assert_array_equal(f_to_z([np.inf, 0.0], 3, 10.0), [np.inf, -np.inf])


@pytest.mark.parametrize("dof", [1.0, 4.0, 29.0, 500.0, 1e8])
def test_shared_t_tail_equals_scipy_t_sf(dof):
    """The shared tail equals scipy's t.sf, across 300 orders of magnitude."""
    from bids_app.estimation.conversions import t_to_z_p

    t = np.concatenate([-np.logspace(-6, 2, 200), np.logspace(-6, 2.5, 400)])
    z, p = t_to_z_p(t, dof)
    assert_allclose(p, stats.t.sf(t, dof), rtol=1e-13, atol=0)
    comparable = stats.t.sf(np.abs(t), dof) > TAIL_SWITCH
    assert_allclose(z[comparable], np.sign(t[comparable]) * stats.norm.isf(stats.t.sf(np.abs(t[comparable]), dof)),
                    rtol=1e-12)
