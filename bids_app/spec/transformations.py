"""The pybids-transforms-v1 vocabulary: transformation names and the arguments each takes.

Names are pybids' own spellings (case-sensitive, as pybids reads them);
arguments are the JSON keys an instruction may hold, compared after pybids'
CamelCase -> snake_case conversion (``RefLevel`` -> ``ref_level``). The
arguments of each transformation are read from pybids' implementation, so
they stay pybids' documented ones; ``Convolve`` takes ours (nilearn HRFs).
"""
from __future__ import annotations

import functools
import inspect
import re

from bids_app.cache import cached_json, package_version

TRANSFORMER = "pybids-transforms-v1"
#: Keys every instruction may hold (snake-cased); ``groupby`` is pybids' spelling of ``GroupBy``.
COMMON_ARGUMENTS = frozenset({"name", "description", "input", "output", "output_prefix", "output_suffix",
                              "dense", "group_by", "groupby"})
#: The first parameter of pybids' ``_transform`` is the data (given as ``Input``), not a JSON key.
_DATA_PARAMETERS = frozenset({"var", "data", "dfs", "col", "variables", "input"})
_OURS = {"Convolve": frozenset({"model", "derivative", "dispersion", "fir_delays"}),
         # pybids' Group needs its group name as ``name``, which JSON cannot give (``Name`` names
         # the transformation): the name is the instruction's Output
         "Group": frozenset()}


@functools.cache
def transformation_arguments() -> dict[str, frozenset[str]]:
    """Transformation name -> the snake-cased argument keys it takes besides the common ones.

    Read from pybids' transformations once per pybids version and kept in the
    user cache (:mod:`bids_app.cache`): ``bids-stats validate`` imports no pybids.
    """
    built = cached_json(f"transformation-arguments-pybids{package_version('pybids')}", _arguments)
    return {name: frozenset(args) for name, args in built.items()}


def _arguments() -> dict[str, list[str]]:
    from bids.modeling import transformations as pbt

    out = {}
    for attr in pbt.__all__:
        if attr == "TransformerManager":
            continue
        name = attr.rstrip("_")
        params = list(inspect.signature(getattr(pbt, attr)._transform).parameters)[1:]
        own = {p for p in params[1:]} if params and params[0] in _DATA_PARAMETERS else set(params)
        if name == "Assign":
            own = {p for p in params if p != "input"}
        out[name] = sorted(own)
    out.update({name: sorted(args) for name, args in _OURS.items()})
    return out


#: pybids' ``convert_JSON`` key rule (bids.utils), so validation needs no pybids import;
#: tests/test_model_language.py checks it against convert_JSON
_CAMEL = re.compile("((?<=[a-z0-9])[A-Z]|(?!^)[A-Z](?=[a-z]))")


def json_key(key: str) -> str:
    """A JSON instruction key as pybids reads it (``RefLevel`` -> ``ref_level``)."""
    return _CAMEL.sub(r"_\1", key).lower()
