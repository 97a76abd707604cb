"""Apply a node's ``Transformations`` (pybids-transforms-v1) to one run.

Every transformation pybids implements is run by pybids itself on a
:class:`~bids.variables.BIDSRunVariableCollection` holding the run's events
(sparse variables), confounds (dense, one sample per volume) and physio/stim
recordings (dense at their own rate). We only fix what pybids gets wrong or
leaves out:

* ``GroupBy`` (the spelling users write) reaches pybids as ``groupby``;
  pybids' camel-to-snake conversion would otherwise make it ``group_by``,
  which fails (``_transform() got an unexpected keyword argument``).
* ``Convolve`` is ours (nilearn's ``compute_regressor`` at the frame times,
  see :mod:`bids_app.design.hrf`); its outputs are dense variables sampled
  once per volume and named as nilearn names them (``x``, ``x_derivative``,
  ``x_dispersion``, ``x_delay_<d>``).
* ``Scale`` also works on dense variables (confounds, recordings), where
  pybids' own raises.
* ``Assign`` also works on integer-valued targets, which pybids' own fails
  on with pandas >= 3.
* A name that matches no variable raises a :class:`DesignError` naming the
  instruction index and the column, before pybids sees it.
* ``Replace`` keys, always strings in JSON, also match the numbers they
  spell (``{"1": 0.5}`` on a 0/1 column, or on durations), and numeric
  strings become numbers in a numeric column; pybids compares ``"1"`` with
  ``1`` and changes nothing.
* ``Group`` takes its group name from ``Output`` (pybids wants a ``name``
  argument, which JSON cannot give: ``Name`` names the transformation).
* We loop over the instructions ourselves: pybids' ``TransformerManager``
  never calls handlers registered on it.
"""
from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from bids.modeling import transformations as pbt
from bids.utils import convert_JSON, listify
from bids.variables import BIDSRunVariableCollection, DenseRunVariable
from bids.variables.entities import RunInfo

from bids_app.design.columns import is_glob
from bids_app.design.confounds import dense_variables
from bids_app.design.events import sparse_variables
from bids_app.design.hrf import convolve, parse_hrf_model, variable_events
from bids_app.design.names import resolve_run_names
from bids_app.design.recordings import Recording
from bids_app.errors import DesignError, did_you_mean


class RecordingVariable(DenseRunVariable):
    """A pybids dense variable whose first sample is at ``first_sample`` s, not 0.

    pybids places dense sample ``k`` at ``k / sampling_rate``; a recording's
    samples sit up to one interval later. Transformations that clone their
    input (Scale, Demean, Threshold, Rename...) keep the offset.
    """

    def __init__(self, name, values, run_info, source, sampling_rate, first_sample=0.0):
        super().__init__(name=name, values=values, run_info=run_info, source=source,
                         sampling_rate=sampling_rate)
        self.first_sample = float(first_sample)


def recording_variables(recording: Recording, run_info: RunInfo) -> list[RecordingVariable]:
    """One variable per column of ``recording``, at its sampling frequency."""
    return [RecordingVariable(name, recording.values[:, [i]], run_info, recording.source,
                              recording.sampling_frequency, recording.first_sample)
            for i, name in enumerate(recording.columns)]

TRANSFORMER = "pybids-transforms-v1"
#: Arguments (after snake-casing) whose values name variables.
_NAME_ARGUMENTS = ("input", "other", "by", "target")
_CONVOLVE_ARGUMENTS = frozenset({"input", "model", "derivative", "dispersion", "fir_delays",
                                 "output"})


class _Scale(pbt.Scale):
    """pybids' Scale, made to work on dense variables too.

    A dense variable's values are a one-column DataFrame, on which pybids'
    constant-column check (``data.nunique() == 1``) raises "truth value of
    a Series is ambiguous"; scale the column as a Series instead.
    """

    def _transform(self, data, **kwargs):
        if isinstance(data, pd.DataFrame):
            return super()._transform(data.iloc[:, 0], **kwargs).to_frame()
        return super()._transform(data, **kwargs)


class _Assign(pbt.Assign):
    """pybids' Assign, made to put float amplitudes on integer-valued targets.

    pybids writes the input's values into a clone of the target in place;
    when the target holds integers (e.g. ds005's ``gain``), pandas >= 3
    refuses that lossy write ("Invalid value ... for dtype 'int64'").
    """

    def _transform(self, input, target, **kwargs):
        variable = self.collection.variables[target]
        variable.values = variable.values.astype(np.float64)
        return super()._transform(input, target, **kwargs)


_PYBIDS = {name.rstrip("_"): getattr(pbt, name) for name in pbt.__all__
           if name not in ("TransformerManager", "Convolve", "And_", "Or_")}
_PYBIDS["Scale"] = _Scale
_PYBIDS["Assign"] = _Assign


@dataclass
class TransformOutcome:
    """Result of :func:`apply_transformations`.

    Attributes
    ----------
    collection : BIDSRunVariableCollection or None
        The transformed variables (None when the run has no variables).
    convolved : dict
        ``{output name: {"by", "model", "fir_delays", "columns"}}`` for
        each variable convolved by a ``Convolve`` instruction.
    warnings : list of str
    """

    collection: BIDSRunVariableCollection | None
    convolved: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    #: names the instructions use that no variable had, resolved (:mod:`bids_app.design.names`)
    resolved: list = field(default_factory=list)


def make_collection(
    events: pd.DataFrame,
    confounds: pd.DataFrame | None,
    *,
    tr: float,
    n_vols: int,
    entities: dict | None = None,
    source: str = "",
    recordings: tuple[Recording, ...] = (),
) -> BIDSRunVariableCollection | None:
    """Collect a run's event, confound and recording columns as pybids variables.

    Parameters
    ----------
    events : DataFrame
        Validated events (float onset/duration in seconds).
    confounds : DataFrame or None, shape (n_vols, n_confounds)
        Numeric, gap-free confounds (see :mod:`bids_app.design.confounds`);
        names must not clash with event columns.
    tr : float
        Repetition time in seconds.
    n_vols : int
    entities : dict, optional
        BIDS entities of the run, for ``GroupBy``/``Split`` by entity.
    source : str
        Events file name, kept in the pybids ``RunInfo``.
    recordings : tuple of Recording
        Physio/stim columns cut to the run (:mod:`bids_app.design.recordings`),
        dense at their own rate; names must not clash with the others.

    Returns
    -------
    BIDSRunVariableCollection or None
        None when there is no variable at all (empty events, no confounds,
        no recordings).
    """
    run_info = RunInfo(dict(entities or {}), n_vols * tr, tr, source, n_vols)
    variables = sparse_variables(events, run_info)
    if confounds is not None:
        variables += dense_variables(confounds, run_info, tr)
    for recording in recordings:
        variables += recording_variables(recording, run_info)
    return BIDSRunVariableCollection(variables) if variables else None


def _instructions(transformations: dict | None) -> list[dict]:
    if not transformations:
        return []
    transformer = transformations.get("Transformer", TRANSFORMER)
    if str(transformer).lower() != TRANSFORMER:
        raise DesignError(
            f"Transformations.Transformer {transformer!r} is not supported; use {TRANSFORMER!r}"
        )
    return list(transformations.get("Instructions") or [])


def _arguments(instruction: dict) -> dict:
    """Instruction arguments, snake-cased as pybids expects, ``GroupBy`` fixed."""
    kwargs = convert_JSON({k: v for k, v in instruction.items() if k != "Name"})
    if "group_by" in kwargs:
        kwargs["groupby"] = kwargs.pop("group_by")
    return kwargs


def _check_names(collection, kwargs: dict, where: str) -> None:
    variables = list(collection.variables)
    known = set(variables) | set(collection.groups)
    entities = {e for var in collection.variables.values() for e in var.run_info[0].entities}
    for key in _NAME_ARGUMENTS:
        for name in listify(kwargs.get(key) or []):
            if not isinstance(name, str):
                continue
            if is_glob(name):
                found = any(fnmatch.fnmatchcase(v, name) for v in variables)
            else:
                found = name in known or (key == "by" and name in entities)
            if not found:
                raise DesignError(f"{where}: {key.title()} names column {name!r}, which is not "
                                  f"in this run{did_you_mean(name, variables, n=3)}")


def _expand(collection, names) -> list[str]:
    out: list[str] = []
    for name in listify(names):
        if is_glob(name):
            out += [v for v in collection.variables if fnmatch.fnmatchcase(v, name)]
        else:
            out += collection.groups.get(name, [name])
    return list(dict.fromkeys(out))


def _convolve(collection, kwargs: dict, *, times: np.ndarray, tr: float, where: str,
              outcome: TransformOutcome) -> None:
    unknown = sorted(set(kwargs) - _CONVOLVE_ARGUMENTS)
    if unknown:
        raise DesignError(
            f"{where} (Convolve): unsupported argument(s) {', '.join(unknown)}; "
            f"supported: Input, Model, Derivative, Dispersion, FIRDelays, Output"
        )
    parameters = {"fir_delays": kwargs["fir_delays"]} if "fir_delays" in kwargs else {}
    hrf, notes = parse_hrf_model(kwargs.get("model", "spm"), parameters,
                                 derivative=bool(kwargs.get("derivative", False)),
                                 dispersion=bool(kwargs.get("dispersion", False)),
                                 where=f"{where} (Convolve)")
    outcome.warnings += notes
    inputs = _expand(collection, kwargs.get("input"))
    outputs = listify(kwargs.get("output")) or inputs
    if len(outputs) != len(inputs):
        raise DesignError(
            f"{where} (Convolve): {len(outputs)} Output name(s) for {len(inputs)} input(s)"
        )
    for name, out in zip(inputs, outputs):
        var = collection.variables[name]
        regressors, columns, notes = convolve(*variable_events(var, where), hrf, times, out)
        outcome.warnings += [f"{where}: {n}" for n in notes]
        if out == name:
            del collection.variables[name]
        for column, values in zip(columns, regressors.T):
            collection[column] = DenseRunVariable(
                name=column, values=values[:, None], run_info=var.run_info,
                source=var.source, sampling_rate=1.0 / tr)
        outcome.convolved[out] = {"by": where, "model": hrf.name,
                                  "fir_delays": list(hrf.fir_delays), "columns": columns}


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _replace_mapping(collection, inputs, mapping: dict, attribute: str) -> dict:
    """``Replace``'s mapping made to work on numbers (see module docstring)."""
    out = dict(mapping)
    for name in _expand(collection, inputs):
        var = collection.variables.get(name)
        if var is None:
            continue
        column = {"value": var.values, "onset": getattr(var, "onset", None),
                  "duration": getattr(var, "duration", None)}.get(attribute)
        if column is None:
            continue
        values = pd.Series(np.asarray(column).reshape(-1))
        if not pd.api.types.is_numeric_dtype(values):
            continue
        for value in pd.unique(values.dropna()):
            for key, new in mapping.items():
                if _number(key) is not None and _number(key) == float(value):
                    out[value] = _number(new) if isinstance(new, str) and _number(new) is not None else new
    return out


def apply_transformations(
    collection: BIDSRunVariableCollection | None,
    transformations: dict | None,
    *,
    times: np.ndarray,
    tr: float,
) -> TransformOutcome:
    """Run a node's ``Transformations`` block on a run's collection, in place.

    Parameters
    ----------
    collection : BIDSRunVariableCollection or None
        From :func:`make_collection`.
    transformations : dict or None
        ``{"Transformer": "pybids-transforms-v1", "Instructions": [...]}``.
    times : ndarray, shape (n_vols,)
        Frame times in seconds, where ``Convolve`` samples its output.
    tr : float
        Repetition time in seconds.

    Raises
    ------
    bids_app.errors.DesignError
        Unknown transformer or transformation, a name matching no column
        (message: ``Transformations.Instructions[i]`` and the column), or any
        pybids failure, reported with the instruction index.
    """
    outcome = TransformOutcome(collection)
    for i, instruction in enumerate(_instructions(transformations)):
        name = str(instruction.get("Name", ""))
        where = f"Transformations.Instructions[{i}]"
        kwargs = _arguments(instruction)
        if collection is None:
            raise DesignError(f"{where} ({name}): the run has no event or confound columns")
        used = [n for key in _NAME_ARGUMENTS for n in listify(kwargs.get(key) or []) if isinstance(n, str)]
        outcome.resolved += resolve_run_names(collection, used, where=f"{where} ({name})")
        _check_names(collection, kwargs, f"{where} ({name})")
        if name == "Convolve":
            _convolve(collection, kwargs, times=times, tr=tr, where=where, outcome=outcome)
            continue
        if name not in _PYBIDS:
            raise DesignError(
                f"{where}: unknown transformation {name!r}; known: "
                f"{', '.join(sorted([*_PYBIDS, 'Convolve']))}"
            )
        inputs = kwargs.pop("input", None)
        if inputs is not None and name not in ("Group",):
            # groups and patterns expanded here: pybids matches per-variable arguments
            # (Scale's Rescale...) to the names before expanding them, and fails
            inputs = _expand(collection, inputs)
        if name == "Replace" and isinstance(kwargs.get("replace"), dict):
            kwargs["replace"] = _replace_mapping(collection, inputs, kwargs["replace"],
                                                 kwargs.get("attribute", "value"))
        if name == "Group":
            kwargs["name"] = (listify(kwargs.pop("output", None)) or [None])[0]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                _PYBIDS[name](collection, inputs, **kwargs)
            # pybids signals bad arguments with these; AttributeError comes from
            # row-selecting transformations (Filter, DropNA) given a dense variable.
            except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
                raise DesignError(f"{where} ({name}): {type(exc).__name__}: {exc}") from exc
        outcome.warnings += [f"{where} ({name}): {w.message}" for w in caught]
    return outcome
