"""Build one run's design matrix from its events, confounds, recordings and a Run node.

Steps: validate events -> apply the confound missing-value policy -> read
the physio/stim recordings the node references -> pybids variables ->
``Transformations`` -> resolve ``Model.X`` -> sample every
column at the frame times (convolving ``Model.HRF.Variables``) -> append
cosine drifts for the high-pass filter.

Column order: ``Model.X`` expanded in X order; a convolved column is
followed by its HRF derivative columns (``<name>_derivative``,
``<name>_dispersion``) or replaced by its FIR columns (``<name>_delay_<d>``),
as nilearn lays them out; cosine drifts (``drift_1`` ...) come last.

Sampling at the frame times ``tr * (arange(n_vols) + slice_time_ref)``:

* sparse variables in ``Model.HRF.Variables``: nilearn ``compute_regressor``;
* other sparse variables: their boxcar sampled without convolution (with a
  warning: usually a forgotten HRF entry);
* dense variables at one sample per volume (confounds, ``Convolve``
  outputs): taken row by row;
* physio/stim recordings (pybids source ``physio``/``stim``) faster than
  1/TR: low-pass filtered below the TR's Nyquist frequency, then linearly
  interpolated at the frame times (:mod:`bids_app.design.recordings`);
* other dense variables (``ToDense``/``Resample`` outputs): linearly
  interpolated at the frame times.
"""
from __future__ import annotations

import fnmatch
import functools
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from bids_app.design.columns import INTERCEPT, match_entry
from bids_app.design.confounds import NAN_POLICY, prepare_confounds
from bids_app.design.events import REQUIRED, validate_events
from bids_app.design.hrf import convolve, frame_times, parse_hrf_model, variable_events
from bids_app.design.names import level_label, node_names, resolve_run_names
from bids_app.design.recordings import (RECORDING_SOURCES, Recording, RecordingFile,
                                        anti_alias_record, cut_to_run, sample_recording)
from bids_app.errors import DesignError, InputDataError, did_you_mean
from bids_app.spec.model import Node

#: High-pass cutoff when the model sets none: SPM's and FSL's usual 128 s.
DEFAULT_HIGH_PASS_HZ = 1.0 / 128.0
EVENTS_NAN_POLICY = "events with n/a in a column are left out of that column's variable (pybids)"
MISSING_CONFOUNDS_POLICIES = ("drop", "error")
LOW_PASS_ORDER = 5
LOW_PASS_METHOD = ("zero-phase Butterworth, order 5 (nilearn.signal.butterworth), applied to the "
                   "percent-signal-change data and to every design column")


@dataclass
class DesignRecord:
    """How one run's design was built: the design sidecar's record.

    Attributes
    ----------
    source : str
        The run's file (BOLD or events) as messages name it.
    tr : float
        Repetition time, seconds.
    n_vols : int
    slice_time_ref : float
        Fraction of the TR at which volumes are sampled.
    missing_confounds : {"drop", "error"}
    transformations : list of str
        Names of the node's transformation instructions, in order.
    nan_policy : dict
        ``events`` and ``confounds`` rules, and ``filled``: confound column ->
        ``{"leading": n, "other": n}`` gaps filled.
    dropped : list of dict
        X entries absent from this run: ``entry``, ``kind`` (event or
        confound), ``reason``.
    convolved : dict
        Column -> how it was convolved (``by``, ``model``, ``fir_delays``,
        ``columns``), transformations first, then ``Model.HRF``.
    not_convolved : list of str
        Sparse columns used as unconvolved boxcars.
    warnings : list of str
    recordings : list of dict
        The physio/stim files read (path, sampling frequency, StartTime,
        columns, interval covered).
    anti_aliasing : dict or None
        None without recordings, else the filter and the ``columns`` it was
        applied to.
    resolved : list
        Names the model uses that no variable had, resolved as
        :mod:`bids_app.design.names` says.
    hrf : dict or None
        ``model``, ``fir_delays``, ``variables`` convolved.
    x_columns : list of str
        The columns standing for Model.X entries: no HRF derivatives, no
        drifts; FIR delay columns replace their variable.
    high_pass : dict
        ``cutoff_hz``, ``source`` ("model" or "default"), ``applied``,
        ``drift_columns``.
    low_pass : dict or None
        None, or the cutoff in Hz: the matrix is already filtered and the
        data must be filtered with :func:`low_pass_filter` before fitting.
    columns : list of str
        Every column of the matrix, in order.
    """

    source: str
    tr: float
    n_vols: int
    slice_time_ref: float
    missing_confounds: str
    transformations: list
    nan_policy: dict
    dropped: list
    convolved: dict
    not_convolved: list
    warnings: list
    recordings: list
    anti_aliasing: dict | None
    resolved: list
    hrf: dict | None
    x_columns: list
    high_pass: dict
    low_pass: dict | None
    columns: list

    def to_dict(self) -> dict:
        """A JSON-able copy, keys in field order (the sidecar's order)."""
        return asdict(self)


@dataclass
class RunDesign:
    """A run's design matrix and how it was built.

    Attributes
    ----------
    matrix : DataFrame, shape (n_vols, n_regressors)
        float64; index = frame times in seconds.
    info : DesignRecord
        How it was built (written to the design sidecar).
    inventory : dict
        What the run offers, for messages when a name matches nothing:
        ``events`` (column -> its levels, or ``"numeric"``), ``confounds``
        (column names) and ``entities``. Not written to the sidecar.
    """

    matrix: pd.DataFrame
    info: DesignRecord
    inventory: dict = field(default_factory=dict)


def _inventory(events: pd.DataFrame, confounds, recordings, entities: dict) -> dict:
    listed = {}
    for col in events.columns:
        if col in REQUIRED:
            continue
        values = events[col].dropna()
        listed[str(col)] = "numeric" if pd.api.types.is_numeric_dtype(values) and \
            values.nunique() > 12 else sorted({level_label(v) for v in values})
    return {"events": listed,
            "confounds": [*(map(str, confounds.columns) if confounds is not None else []),
                          *(c for file in recordings for c in file.columns)],
            "entities": dict(entities)}


@functools.cache
def _pybids_entities() -> tuple:
    """pybids' entities of raw and derivative names (``parse_file_entities``' default), loaded once:
    pybids rebuilds them from its configuration files on every call otherwise."""
    from bids.layout.models import Config  # pybids (~1 s): imported only when a design is built

    entities = {}
    for name in ("bids", "derivatives"):
        entities.update(Config.load(name).entities)
    return tuple(entities.values())


def _entities(source: str) -> dict:
    if not source:
        return {}
    from bids.layout import parse_file_entities

    ents = parse_file_entities(source, entities=_pybids_entities())
    return {k: str(v) for k, v in ents.items() if k not in ("suffix", "extension", "datatype")}


def _strings(value):
    """Every string inside a JSON value (dict values, list items)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def referenced_columns(columns, node: Node) -> list[str]:
    """Confound columns the node can reach: named or globbed by X, HRF or a transformation.

    Only these become pybids variables; building one per column of a
    several-hundred-column fMRIPrep table costs about 1 ms each.
    """
    patterns = {*_strings(list(node.model.x)), *_strings(node.transformations or {})}
    if node.model.hrf is not None:
        patterns.update(node.model.hrf.variables)
    return [c for c in columns
            if c in patterns or any(fnmatch.fnmatchcase(str(c), p) for p in patterns)]


def _is_event_entry(entry, event_columns, hrf_variables) -> bool:
    """Whether a missing X entry names an event variable (vs a confound).

    Event variables are the events columns, their ``Factor`` levels
    (``column.level``) and anything listed in ``Model.HRF.Variables``.
    """
    if not isinstance(entry, str):
        return False
    return entry in hrf_variables or any(
        entry == c or entry.startswith(f"{c}.") for c in event_columns
    )


def _high_pass(options: dict, times: np.ndarray) -> tuple[np.ndarray, dict, list[str]]:
    """Cosine drifts (n_vols, n_drifts), the ``high_pass`` record and warnings."""
    cutoff = options.get("HighPassFilterCutoffHz")
    source, notes = "model", []
    if cutoff is None:
        cutoff, source = DEFAULT_HIGH_PASS_HZ, "default"
        notes.append("Model.Options.HighPassFilterCutoffHz is not set: using the default "
                     f"{DEFAULT_HIGH_PASS_HZ} Hz (1/128 s) cosine drift")
    cutoff = float(cutoff)
    if cutoff < 0:
        raise DesignError(f"Model.Options.HighPassFilterCutoffHz must be >= 0, got {cutoff}")
    drift, names = np.empty((times.size, 0)), []
    if cutoff > 0:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from nilearn.signal import create_cosine_drift  # imported by run-level designs only

            drift = create_cosine_drift(cutoff, times)[:, :-1]  # last column is a constant
        notes += [f"high-pass: {w.message}" for w in caught]
        names = [f"drift_{k}" for k in range(1, drift.shape[1] + 1)]
    record = {"cutoff_hz": cutoff, "source": source, "applied": cutoff > 0, "drift_columns": names}
    return drift, record, notes


def _low_pass(options: dict, tr: float, source: str) -> tuple[dict | None, list[str]]:
    """The ``low_pass`` record (None without a cutoff) and its warning."""
    cutoff = options.get("LowPassFilterCutoffHz")
    if cutoff is None:
        return None, []
    cutoff, nyquist = float(cutoff), 0.5 / tr
    if not 0 < cutoff < nyquist:
        raise DesignError(f"{source}: Model.Options.LowPassFilterCutoffHz={cutoff} Hz must be "
                          f"between 0 and the Nyquist frequency {nyquist:g} Hz of TR = {tr:g} s")
    note = (f"low-pass filter at {cutoff:g} Hz: the data and the design are filtered alike; the filter "
            "makes the noise smoother than the AR(1) model assumes, so t values are approximate")
    return {"cutoff_hz": cutoff, "applied": True, "method": LOW_PASS_METHOD}, [note]


def low_pass_filter(values: np.ndarray, tr: float, cutoff_hz: float) -> np.ndarray:
    """Zero-phase low-pass filter along time, for the design and the data alike.

    Filtering only the data would leave the regressors with power the data
    no longer have (SPM's K applies to both sides of the GLM for that
    reason). The constant column stays constant.

    Parameters
    ----------
    values : ndarray, (n_vols, n_columns)
        Time series, one per column, sampled every ``tr`` seconds.
    tr : float
        Repetition time in seconds.
    cutoff_hz : float
        Cutoff in Hz, below the Nyquist frequency ``0.5 / tr``.

    Returns
    -------
    ndarray, (n_vols, n_columns), float64
        A filtered copy.
    """
    values = np.array(values, dtype=np.float64)
    from nilearn.signal import butterworth

    return butterworth(values, sampling_rate=1.0 / tr, low_pass=cutoff_hz, order=LOW_PASS_ORDER)


def _sample_dense(var, times: np.ndarray, tr: float) -> tuple[np.ndarray, bool]:
    """A dense variable at the frame times (n_vols,), and whether it was anti-alias filtered."""
    values = np.asarray(var.values, dtype=np.float64).reshape(-1)
    if np.isclose(var.sampling_rate * tr, 1.0) and values.size == times.size:
        return values, False
    if var.source in RECORDING_SOURCES:
        return sample_recording(var, times, tr)
    return np.interp(times, np.arange(values.size) / var.sampling_rate, values), False


def _prepare(confounds, node: Node, events: pd.DataFrame, n_vols: int) -> tuple[object, list[str]]:
    """Referenced confound columns after the missing-value policy (or None), and warnings."""
    if confounds is None:
        return None, []
    prepared = prepare_confounds(confounds[referenced_columns(confounds.columns, node)], n_vols,
                                 source=confounds.attrs.get("source") or "confounds")
    notes = []
    clash = [c for c in prepared.table.columns if c in events.columns]
    if clash:
        notes.append(f"{prepared.source}: confound column(s) {', '.join(clash)} have the name of an "
                     "events column; the events column is used")
        prepared.table = prepared.table.drop(columns=clash)
    notes += [f"{prepared.source}: {n['other']} non-leading n/a in {col!r} filled with the previous value"
              for col, n in prepared.filled.items() if n["other"]]
    return prepared, notes


def uses_recording(node: Node, file: RecordingFile) -> bool:
    """Whether the node references a column of the recording (only those files are read)."""
    return bool(referenced_columns(file.columns, node))


def _cut_recordings(files, node: Node, *, taken: dict, duration: float) -> tuple[Recording, ...]:
    """The recordings whose sidecar ``Columns`` the node references, cut to the run.

    A referenced name must come from one file only: ``taken`` maps the run's
    event and (referenced) confound columns to their file.
    """
    owners = dict(taken)
    wanted = []
    for file in files:
        used = referenced_columns(file.columns, node)
        for col in used:
            if col in owners:
                raise InputDataError(f"column {col!r} is in both {owners[col]} and {file.path}: "
                                     "rename it in one file's sidecar Columns, or remove one file")
            owners[col] = str(file.path)
        if used:
            wanted.append((file, used))
    return tuple(cut_to_run(file, used, duration=duration) for file, used in wanted)


def _hrf(node: Node, available: list[str]) -> tuple[object, list[str], dict | None, list[str]]:
    """The node's HRF model (or None), the available columns it convolves, its record and warnings."""
    hrf = node.model.hrf
    if hrf is None:
        return None, [], None, []
    model, notes = parse_hrf_model(hrf.model, hrf.parameters)
    columns: list[str] = []
    for entry in hrf.variables:
        columns += [c for c in match_entry(entry, available) if c not in columns]
    record = {"model": model.name, "fir_delays": list(model.fir_delays), "variables": columns}
    return model, columns, record, list(notes)


def _select(node: Node, available: list[str], *, event_columns: list[str], prepared,
            all_confounds: list[str], events_source: str, missing_confounds: str,
            source: str) -> tuple[list[str], list[dict], list[str]]:
    """Expand Model.X over the available columns, applying the missing-column policies.

    Returns the selected columns, the dropped X entries and warnings.
    """
    hrf_names = set(node.model.hrf.variables) if node.model.hrf is not None else set()
    selected: list[str] = []
    dropped, notes = [], []
    for entry in node.model.x:
        matched = match_entry(entry, available)
        if matched:
            selected += [c for c in matched if c not in selected]
            continue
        hint = did_you_mean(entry, [*available, *all_confounds], n=3)
        if _is_event_entry(entry, event_columns, hrf_names):
            dropped.append({"entry": str(entry), "kind": "event", "reason": "no such event variable in this run"})
            notes.append(f"{events_source}: Model.X entry {entry!r} matches no event variable in this "
                         f"run (condition absent?){hint}; dropped")
            continue
        if prepared is None:
            reason = "the run has no confounds file"
        elif isinstance(entry, str) and entry in prepared.unusable:
            reason = f"the confound column is {prepared.unusable[entry]}"
        else:
            reason = "no such confound column"
        where = prepared.source if prepared else events_source
        message = f"{where}: Model.X entry {entry!r} matches no column ({reason}){hint}"
        if missing_confounds == "error":
            raise DesignError(message)
        dropped.append({"entry": str(entry), "kind": "confound", "reason": reason})
        notes.append(f"{message}; dropped")
    if not selected:
        raise DesignError(f"{source}: Model.X resolves to no column in this run")
    return selected, dropped, notes


@dataclass
class _Sampled:
    """The selected columns at the frame times, and how each was made."""

    names: list = field(default_factory=list)
    #: (n_vols, k) arrays, one per selected column
    blocks: list = field(default_factory=list)
    convolved: dict = field(default_factory=dict)
    not_convolved: list = field(default_factory=list)
    #: recording columns low-pass filtered before interpolation
    anti_aliased: list = field(default_factory=list)
    warnings: list = field(default_factory=list)


def _sample(selected: list[str], variables: dict, *, hrf_model, hrf_columns: list[str],
            pre_convolved: set[str], times: np.ndarray, tr: float) -> _Sampled:
    """Each selected column at the frame times."""
    from bids.variables import SparseRunVariable

    out = _Sampled()
    for col in selected:
        if col == INTERCEPT:
            out.names.append(col)
            out.blocks.append(np.ones((times.size, 1)))
            continue
        var = variables[col]
        if col in hrf_columns and col in pre_convolved:
            out.warnings.append(f"Model.HRF: {col!r} was already convolved by a Convolve transformation; "
                                "not convolved again")
        elif col in hrf_columns or isinstance(var, SparseRunVariable):
            kernel = hrf_model if col in hrf_columns else None
            where = "Model.HRF" if kernel else "Model.X"
            regressors, cols, notes = convolve(*variable_events(var, where), kernel, times, col)
            out.warnings += notes
            if kernel:
                out.convolved[col] = {"by": "Model.HRF", "model": kernel.name,
                                      "fir_delays": list(kernel.fir_delays), "columns": cols}
            else:
                out.not_convolved.append(col)
                out.warnings.append(f"event column {col!r} is not in Model.HRF.Variables: used as an "
                                    "unconvolved boxcar")
            out.names += cols
            out.blocks.append(regressors)
            continue
        values, filtered = _sample_dense(var, times, tr)
        if filtered:
            out.anti_aliased.append(var.name)
        out.names.append(col)
        out.blocks.append(values[:, None])
    return out


def build_run_design(
    node: Node,
    events: pd.DataFrame,
    *,
    tr: float,
    n_vols: int,
    confounds: pd.DataFrame | None = None,
    slice_time_ref: float = 0.0,
    source: str = "",
    missing_confounds: str = "drop",
    recordings: tuple[RecordingFile, ...] = (),
) -> RunDesign:
    """Design matrix of one run for a Run-level node.

    Parameters
    ----------
    node : Node
        A node with ``level == "Run"``.
    events : DataFrame
        The run's events (``onset``, ``duration`` in seconds, other columns
        are variables); ``attrs["source"]`` (set by ``read_events``) names
        the file in messages.
    tr : float
        Repetition time in seconds.
    n_vols : int
        Number of volumes.
    confounds : DataFrame, optional, shape (n_vols, n_confounds)
        E.g. fMRIPrep's confounds table (``read_confounds``).
    slice_time_ref : float
        Fraction of the TR at which volumes are sampled (0 to 1).
    source : str
        The run's file name (BOLD or events): its BIDS entities feed
        ``GroupBy``/``Split``, and it labels messages.
    missing_confounds : {"drop", "error"}
        A confound column requested by ``Model.X`` (name or glob) that this
        run lacks is dropped with a warning, or raises :class:`DesignError`
        naming the file and column. Absent event variables (a condition not
        shown in this run) are always dropped with a warning and listed in
        ``info.dropped``.
    recordings : tuple of RecordingFile
        The run's ``*_physio.tsv.gz``/``*_stim.tsv.gz`` files with their
        sidecar metadata; their columns are variables named by the sidecar's
        ``Columns``. Files with a column the node references (X,
        HRF.Variables, a transformation: :func:`uses_recording`) must come
        with their ``table`` read (:func:`bids_app.io.recordings.read_used`).

    Returns
    -------
    RunDesign

    Raises
    ------
    bids_app.errors.InputDataError
        Invalid events or confounds (missing onset, wrong row count...); a
        recording without sidecar ``Columns``; a referenced recording that
        is inconsistent with its sidecar or shorter than the run;
        a referenced column provided by two files.
    bids_app.errors.DesignError
        Unknown HRF model or transformation, a transformation naming a
        missing column, text values where numbers are needed, a missing
        confound with ``missing_confounds="error"``, an empty or non-finite
        design.
    """
    if missing_confounds not in MISSING_CONFOUNDS_POLICIES:
        raise ValueError(f"missing_confounds must be one of {MISSING_CONFOUNDS_POLICIES}")
    if node.level != "Run":
        raise DesignError(f"node {node.name!r} is at level {node.level}, not Run")
    times = frame_times(tr, n_vols, slice_time_ref)
    events_source = events.attrs.get("source") or source or "events"
    events = validate_events(events, events_source)
    source = source or events_source
    notes = ["Model.Formula is not used: the design is built from Model.X"] if node.model.formula else []

    prepared, prepare_notes = _prepare(confounds, node, events, n_vols)
    taken = {**({c: prepared.source for c in prepared.table.columns} if prepared else {}),
             **{c: events_source for c in events.columns}}
    recorded = _cut_recordings(recordings, node, taken=taken, duration=n_vols * tr)
    from bids_app.design.transforms import apply_transformations, make_collection  # pybids: ~1 s

    entities = _entities(source)
    collection = make_collection(events, prepared.table if prepared else None, tr=tr,
                                 n_vols=n_vols, entities=entities,
                                 source=events_source, recordings=recorded)
    outcome = apply_transformations(collection, node.transformations, times=times, tr=tr)
    resolved = outcome.resolved + resolve_run_names(outcome.collection, node_names(node), where=events_source)
    variables = outcome.collection.variables if outcome.collection is not None else {}
    available = list(variables)

    hrf_model, hrf_columns, hrf_record, hrf_notes = _hrf(node, available)
    selected, dropped, select_notes = _select(
        node, available, event_columns=[c for c in events.columns if c not in REQUIRED],
        prepared=prepared, missing_confounds=missing_confounds, events_source=events_source,
        all_confounds=[*(map(str, confounds.columns) if confounds is not None else []),
                       *(c for file in recordings for c in file.columns)],
        source=source)
    left_out = [f"Model.HRF.Variables {c!r} is not in Model.X: left out" for c in hrf_columns if c not in selected]
    pre_convolved = {c for entry in outcome.convolved.values() for c in entry["columns"]}
    sampled = _sample(selected, variables, hrf_model=hrf_model, hrf_columns=hrf_columns,
                      pre_convolved=pre_convolved, times=times, tr=tr)
    convolved = {**outcome.convolved, **sampled.convolved}
    fir = {c: e["columns"] for c, e in convolved.items() if e["by"] == "Model.HRF" and e["fir_delays"]}

    drift, high_pass, high_notes = _high_pass(node.model.options, times)
    if high_pass["drift_columns"] and any(c.startswith("cosine") for c in selected):
        high_notes.append("Model.X includes fMRIPrep cosine regressors and a cosine drift is added too: "
                          "set HighPassFilterCutoffHz to 0 to use only fMRIPrep's")
    low_pass, low_notes = _low_pass(node.model.options, tr, source)

    names = sampled.names + high_pass["drift_columns"]
    values = np.column_stack([*sampled.blocks, drift]).astype(np.float64)
    if low_pass:
        values = low_pass_filter(values, tr, low_pass["cutoff_hz"])
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DesignError(f"{source}: duplicate design columns {', '.join(duplicates)}")
    bad = [n for n, ok in zip(names, np.isfinite(values).all(axis=0)) if not ok]
    if bad:
        raise DesignError(f"{source}: non-finite values in design column(s) {', '.join(bad)}")
    record = DesignRecord(
        source=source, tr=float(tr), n_vols=int(n_vols), slice_time_ref=float(slice_time_ref),
        missing_confounds=missing_confounds,
        transformations=[str(i.get("Name")) for i in (node.transformations or {}).get("Instructions") or []],
        nan_policy={"events": EVENTS_NAN_POLICY, "confounds": NAN_POLICY,
                    "filled": prepared.filled if prepared else {}},
        dropped=dropped, convolved=convolved, not_convolved=sampled.not_convolved,
        warnings=[*notes, *prepare_notes, *outcome.warnings, *hrf_notes, *select_notes, *left_out,
                  *sampled.warnings, *high_notes, *low_notes],
        recordings=[r.record() for r in recorded],
        anti_aliasing={**anti_alias_record(float(tr)), "columns": sampled.anti_aliased} if recorded else None,
        resolved=resolved, hrf=hrf_record, x_columns=[x for c in selected for x in fir.get(c, [c])],
        high_pass=high_pass, low_pass=low_pass, columns=names)
    matrix = pd.DataFrame(values, columns=names, index=pd.Index(times, name="frame_time"))
    return RunDesign(matrix, record, _inventory(events, confounds, recordings, entities))
