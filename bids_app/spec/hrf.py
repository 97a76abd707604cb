"""``Model.HRF``: the HRF model names and the FIR delays parameter, one rule for
validating a model and for building its regressors."""
from __future__ import annotations

import re

#: HRF models implemented (bsmschema's list without ``"afni"``), nilearn's spellings.
HRF_MODELS = (
    "spm",
    "spm + derivative",
    "spm + derivative + dispersion",
    "glover",
    "glover + derivative",
    "glover + derivative + dispersion",
    "fir",
)
#: Accepted spellings of the FIR delays parameter, compared without case or
#: "_": the spec's ``fir_delays`` and pybids' ``FIRDelays``/``Delays``.
FIR_KEYS = frozenset({"firdelays", "delays"})
_BY_KEY = {m.replace(" ", ""): m for m in HRF_MODELS}
_DELAYS = "distinct whole delays in scans, e.g. [0, 1, 2, 3]"


def hrf_key(model) -> str:
    """A model spelling without case or white space (``"SPM + derivative"`` -> ``"spm+derivative"``)."""
    return re.sub(r"\s+", "", str(model)).lower()


def hrf_model_name(model) -> str | None:
    """The :data:`HRF_MODELS` name a spelling stands for, or None."""
    return _BY_KEY.get(hrf_key(model))


def is_fir_key(key: str) -> bool:
    """Whether a ``Parameters`` key spells the FIR delays."""
    return re.sub("_", "", str(key)).lower() in FIR_KEYS


def fir_delays(parameters: dict) -> tuple[int, ...]:
    """The FIR delays (whole scans, distinct, >= 0) of ``Model.HRF.Parameters``.

    A whole number written as a float (``1.0``) is a whole delay; a single
    number is a list of one.

    Raises
    ------
    ValueError
        No delays parameter, or delays that are not distinct non-negative
        whole numbers; the message says which.
    """
    keys = [k for k in parameters if is_fir_key(k)]
    if not keys:
        raise ValueError(f"the 'fir' model needs Parameters.fir_delays: {_DELAYS}")
    raw = parameters[keys[0]]
    values = raw if isinstance(raw, (list, tuple)) else [raw]
    delays = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != int(v):
            raise ValueError(f"FIR delay {v!r} is not a non-negative whole number of scans; "
                             f"Parameters.fir_delays: {_DELAYS}")
        delays.append(int(v))
    if not delays or len(set(delays)) != len(delays):
        raise ValueError(f"FIR delays must be a non-empty list of distinct scans; Parameters.fir_delays: {_DELAYS}")
    return tuple(delays)
