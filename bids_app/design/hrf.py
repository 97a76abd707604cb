"""HRF models and convolution, delegated to nilearn.

Every convolution in the design (``Model.HRF`` and the ``Convolve``
transformation) goes through :func:`nilearn.glm.first_level.compute_regressor`
with nilearn's defaults (50x oversampling, events from 24 s before the first
frame), directly at the frame times, so our regressors equal those of
:func:`nilearn.glm.first_level.make_first_level_design_matrix`. pybids' own
``Convolve`` is not used: its 10 Hz output is close to nilearn (r >= 0.99997
on the real Haxby, ds003 and ds005 events) but, once pybids resamples it to
the TR grid, r drops to 0.93-0.998 (max error 11-29 % of the peak).

FIR delays are in scans (multiples of TR), as in nilearn and pybids: the
``delay_d`` column at frame time ``t`` is the fraction (times the amplitude)
of the window ``[t - d*TR, t - (d-1)*TR)`` covered by events, so delay 0 is
the TR starting at the frame. Non-integer delays are rejected instead of
truncated as nilearn would.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from bids_app.errors import DesignError
from bids_app.spec.hrf import HRF_MODELS, fir_delays, hrf_model_name, is_fir_key

#: nilearn's defaults; changing them breaks equality with nilearn's designs.
OVERSAMPLING = 50
MIN_ONSET_S = -24.0



@dataclass(frozen=True)
class HRFModel:
    """A resolved HRF model.

    Attributes
    ----------
    name : str
        nilearn's model string, e.g. ``"spm + derivative"`` or ``"fir"``.
    fir_delays : tuple of int
        Delays in scans; empty unless ``name == "fir"``.
    """

    name: str
    fir_delays: tuple[int, ...] = ()


def parse_hrf_model(
    model: str,
    parameters: dict | None = None,
    *,
    derivative: bool = False,
    dispersion: bool = False,
    where: str = "Model.HRF",
) -> tuple[HRFModel, list[str]]:
    """Map a model spelling to an :class:`HRFModel`.

    Parameters
    ----------
    model : str
        A name from :data:`bids_app.spec.hrf.HRF_MODELS` (bsmschema's list without ``"afni"``),
        compared case-insensitively and ignoring spaces.
    parameters : dict, optional
        ``Model.HRF.Parameters``; only FIR delays are used.
    derivative, dispersion : bool
        pybids ``Convolve`` flags, added to an ``spm``/``glover`` model name.
    where : str
        JSON path used in error messages.

    Returns
    -------
    HRFModel
    warnings : list of str
        Parameters given but not used.

    Raises
    ------
    bids_app.errors.DesignError
        Unknown model, or bad/missing FIR delays.
    """
    name = hrf_model_name(model)
    if name is None:
        raise DesignError(
            f"{where}: unknown HRF model {model!r}; known models: {', '.join(HRF_MODELS)}"
        )
    if name != "fir" and (derivative or dispersion):
        base = name.split(" + ")[0]
        name = hrf_model_name(base + "+derivative" + ("+dispersion" if dispersion else ""))
    parameters = dict(parameters or {})
    if name == "fir":
        try:
            delays = fir_delays(parameters)
        except ValueError as exc:
            raise DesignError(f"{where}: {exc}") from None
        unused = [k for k in parameters if not is_fir_key(k)]
        return HRFModel(name, delays), [
            f"{where}: parameter {k!r} is not used by the fir model" for k in unused
        ]
    return HRFModel(name), [
        f"{where}: parameter {k!r} is not used by the {name} model" for k in parameters
    ]


def frame_times(tr: float, n_vols: int, slice_time_ref: float = 0.0) -> np.ndarray:
    """Acquisition times of the volumes, in seconds: ``tr * (arange(n_vols) + slice_time_ref)``.

    ``slice_time_ref`` is the fraction of the TR (0 to 1) at which the
    slice-timing-corrected data are sampled, as in nilearn's FirstLevelModel.
    """
    if not tr > 0:
        raise DesignError(f"repetition time must be positive, got {tr!r}")
    if int(n_vols) < 2:
        raise DesignError(f"a run needs at least 2 volumes, got {n_vols!r}")
    if not 0.0 <= slice_time_ref <= 1.0:
        raise DesignError(f"slice_time_ref must be within [0, 1], got {slice_time_ref!r}")
    return float(tr) * (np.arange(int(n_vols), dtype=np.float64) + float(slice_time_ref))


def convolve(
    onsets,
    durations,
    amplitudes,
    hrf: HRFModel | None,
    times: np.ndarray,
    name: str,
) -> tuple[np.ndarray, list[str], list[str]]:
    """Regressors for one variable's events, sampled at ``times``.

    Parameters
    ----------
    onsets, durations : array-like, shape (n_events,)
        Seconds from the first volume's acquisition start.
    amplitudes : array-like, shape (n_events,)
        Event heights (1 for a condition, the modulator for parametric ones).
    hrf : HRFModel or None
        None samples the boxcar itself (no convolution).
    times : ndarray, shape (n_vols,)
        Frame times in seconds, see :func:`frame_times`.
    name : str
        Base column name; nilearn appends ``_derivative``, ``_dispersion``
        or ``_delay_<d>``.

    Returns
    -------
    regressors : ndarray, shape (n_vols, n_columns), float64
    names : list of str
    warnings : list of str
        nilearn's warnings (e.g. events before ``times[0] - 24 s`` ignored).
    """
    condition = np.vstack([
        np.asarray(onsets, dtype=np.float64),
        np.asarray(durations, dtype=np.float64),
        np.asarray(amplitudes, dtype=np.float64),
    ])
    from nilearn.glm.first_level import compute_regressor  # ~2 s: only run-level designs import it

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        regressors, names = compute_regressor(
            condition,
            hrf.name if hrf else None,
            times,
            con_id=name,
            oversampling=OVERSAMPLING,
            fir_delays=list(hrf.fir_delays) if hrf and hrf.fir_delays else None,
            min_onset=MIN_ONSET_S,
        )
    messages = [f"{name}: {w.message}" for w in caught]
    return np.asarray(regressors, dtype=np.float64), list(names), messages


def variable_events(var, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(onsets, durations, amplitudes) of a pybids run variable, in seconds.

    A sparse variable gives its events. A dense one (e.g. after ``ToDense``)
    is read as its piecewise-constant time course: one event per run of
    equal samples. Zero-amplitude events are left out (they add nothing).

    Raises
    ------
    bids_app.errors.DesignError
        Text values (a categorical column not passed through ``Factor``) or
        ``n/a`` durations.
    """
    values = np.asarray(var.values).reshape(-1)
    if values.dtype.kind not in "biuf":
        examples = ", ".join(map(repr, list(dict.fromkeys(values.tolist()))[:3]))
        raise DesignError(
            f"{where}: column {var.name!r} holds text values ({examples}); "
            f"split it into indicator columns with a Factor transformation first"
        )
    from bids.variables import SparseRunVariable  # pybids: only run-level designs

    if isinstance(var, SparseRunVariable):
        # Zero-amplitude events add nothing; dropping them keeps an n/a duration
        # of one condition from failing the other Factor levels, which carry
        # every event with amplitude 0 or 1.
        keep = values != 0
        onsets = np.asarray(var.onset, dtype=np.float64)[keep]
        durations = np.asarray(var.duration, dtype=np.float64)[keep]
        if np.isnan(durations).any():
            raise DesignError(
                f"{where}: column {var.name!r} has {int(np.isnan(durations).sum())} "
                f"event(s) with n/a duration; they cannot be convolved"
            )
        return onsets, durations, values[keep].astype(np.float64)
    # Runs of equal samples become one event each: boundaries only where the
    # value changes, so they fall on nilearn's fine grid like sparse events do.
    step = 1.0 / float(var.sampling_rate)
    starts = np.r_[0, np.flatnonzero(np.diff(values)) + 1]
    ends = np.r_[starts[1:], values.size]
    keep = values[starts] != 0
    return (starts[keep] * step, (ends - starts)[keep] * step,
            values[starts][keep].astype(np.float64))
