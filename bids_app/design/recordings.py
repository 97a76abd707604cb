"""BIDS physiological and stimulus recordings (``*_physio.tsv.gz``, ``*_stim.tsv.gz``).

A recording is a headerless, tab-separated, gzipped table. Its JSON sidecar
(BIDS inheritance applies) gives ``SamplingFrequency`` (Hz), ``StartTime``
(s, time of the first sample relative to the first volume; negative: the
recording started before the scan) and ``Columns`` (the column names).

Alignment: sample ``k`` is at ``StartTime + k / SamplingFrequency``. Only the
samples inside the run, ``[0, n_vols * TR)``, are kept; a recording that
does not cover the whole run is an error (nothing is padded). Each column
becomes a pybids dense variable at the recording's rate, so Transformations
treat it like a confound.

Sampling at the frame times: point-sampling a trace recorded far above
1/TR would fold (alias) everything above the TR's Nyquist frequency into
the design. A recording column is first low-pass filtered at
``ANTI_ALIAS_FRACTION`` of that Nyquist frequency (zero-phase Butterworth,
:func:`nilearn.signal.butterworth`, on the in-run samples, the edge values
held for ``ANTI_ALIAS_PAD_PERIODS`` cutoff periods as padding), then
linearly interpolated at the frame times. A column listed in
``Model.HRF.Variables`` is convolved instead (nilearn's
``compute_regressor``), unfiltered.

pybids 0.22 has its own loader (``bids.variables.io._load_time_variables``)
that we do not use: it reads the first sample as a header, indexes with
floats and zero-pads a recording that does not cover the run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bids_app.errors import InputDataError

#: pybids ``source`` of recording variables: only these get the anti-aliasing filter.
RECORDING_SOURCES = ("physio", "stim")
ANTI_ALIAS_ORDER = 5
#: Cutoff as a fraction of the TR's Nyquist frequency, scipy.signal.decimate's
#: choice: the filter's transition band then lies mostly below Nyquist.
ANTI_ALIAS_FRACTION = 0.8
#: Padding at each end (the edge value held), in periods of the cutoff. Only the
#: run's samples are filtered, so the first and last frames carry edge errors
#: whatever the padding. Against the same filter run on 60 s more data at each
#: end (synthetic 50 Hz traces, TR 2.5 s), scipy's default (odd, a few
#: samples) erred by up to 1.2 SD of the filtered signal over the first and
#: last three frames when respiration sat at the run's edge (rms over all
#: frames 0.035 SD); holding the edge value, by up to 0.57 SD (rms 0.020), and
#: less on slow drifts too. One period already gives that; three leave a margin.
ANTI_ALIAS_PAD_PERIODS = 3.0
#: StartTime is written with finite precision: times within this fraction of a
#: sample interval of the run's edges count as on them.
_EDGE_TOLERANCE = 1e-3


@dataclass
class RecordingFile:
    """A recording file, its sidecar metadata and, once read, its samples.

    Attributes
    ----------
    path : Path
    metadata : dict
        Sidecar keys, with BIDS inheritance when found through the file
        index; empty when there is no sidecar.
    table : ndarray, shape (n_rows, n_columns), float64, or None
        Every sample of the file (:func:`bids_app.io.recordings.read_table`);
        None while not read (files whose columns a node does not use never are).
    """

    path: Path
    metadata: dict = field(default_factory=dict)
    table: np.ndarray | None = field(default=None, repr=False)

    @property
    def source(self) -> str:
        """pybids source: ``"stim"`` for a ``*_stim`` file, else ``"physio"``."""
        return "stim" if self.path.name.split(".")[0].endswith("_stim") else "physio"

    @property
    def columns(self) -> list[str]:
        """The sidecar's ``Columns``: which names the file provides, known without reading it.

        Raises
        ------
        bids_app.errors.InputDataError
            No sidecar, no ``Columns``, or names that are not unique non-empty strings.
        """
        if not self.metadata:
            raise InputDataError(f"{self.path}: no JSON sidecar found (BIDS requires one with "
                                 "SamplingFrequency, StartTime and Columns)")
        names = self._require("Columns")
        if (not isinstance(names, list) or not names
                or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names)):
            raise InputDataError(f"{self.path}: sidecar Columns must be a list of distinct non-empty "
                                 f"names, got {names!r}")
        return names

    def timing(self) -> tuple[float, float]:
        """``(SamplingFrequency in Hz, StartTime in s)`` from the sidecar, checked.

        Raises
        ------
        bids_app.errors.InputDataError
            A key is missing, not a number, or the frequency is not positive.
        """
        values = []
        for key in ("SamplingFrequency", "StartTime"):
            value = self._require(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise InputDataError(f"{self.path}: sidecar {key} must be a number, got {value!r}")
            values.append(float(value))
        if values[0] <= 0:
            raise InputDataError(f"{self.path}: sidecar SamplingFrequency must be positive, got {values[0]:g}")
        return values[0], values[1]

    def _require(self, key: str):
        if key not in self.metadata:
            raise InputDataError(f"{self.path}: {key} missing from its JSON sidecar(s)")
        return self.metadata[key]


@dataclass
class Recording:
    """Some columns of a recording, cut to one run.

    Attributes
    ----------
    path : Path
    source : {"physio", "stim"}
    sampling_frequency : float
        Hz.
    start_time : float
        The sidecar's StartTime, s.
    first_sample : float
        Time of ``values[0]`` from the first volume, s, in ``[0, 1 / sampling_frequency)``.
    columns : list of str
        The columns read.
    values : ndarray, shape (n_samples, n_columns), float64
        The samples inside the run, one every ``1 / sampling_frequency`` s.
    covered : tuple of float
        ``(start, end)`` s: the interval the whole file covers,
        ``[StartTime, StartTime + n_rows / SamplingFrequency)``.
    """

    path: Path
    source: str
    sampling_frequency: float
    start_time: float
    first_sample: float
    columns: list[str]
    values: np.ndarray = field(repr=False)
    covered: tuple[float, float]

    def record(self) -> dict:
        """JSON-able summary for the design sidecar."""
        return {"path": str(self.path), "source": self.source,
                "sampling_frequency_hz": self.sampling_frequency, "start_time_s": self.start_time,
                "columns": list(self.columns), "covered_s": list(self.covered),
                "samples_in_run": int(self.values.shape[0]), "first_sample_s": self.first_sample}


def cut_to_run(file: RecordingFile, columns: list[str], *, duration: float) -> Recording:
    """``columns`` of a read recording, keeping the samples inside the run.

    Parameters
    ----------
    file : RecordingFile
        With its ``table`` read.
    columns : list of str
        Names from ``file.columns`` to keep.
    duration : float
        Run length in seconds, ``n_vols * TR``.

    Returns
    -------
    Recording

    Raises
    ------
    bids_app.errors.InputDataError
        Bad sidecar metadata, a column count other than the sidecar's,
        non-finite values inside the run, or
        a recording that does not cover ``[0, duration)``; each message
        names the file.
    """
    names = file.columns
    rate, start = file.timing()
    if file.table is None:
        raise ValueError(f"{file.path} has not been read (bids_app.io.recordings.read_table)")
    table = file.table
    if table.shape[1] != len(names):
        raise InputDataError(f"{file.path}: {table.shape[1]} column(s) but its sidecar's Columns names "
                             f"{len(names)}")
    times = start + np.arange(table.shape[0]) / rate
    covered = (start, start + table.shape[0] / rate)
    tol = _EDGE_TOLERANCE / rate
    if covered[0] > tol or covered[1] < duration - tol:
        raise InputDataError(
            f"{file.path}: the recording covers {covered[0]:g} to {covered[1]:g} s from the first "
            f"volume but the run lasts 0 to {duration:g} s; it must cover the whole run (StartTime "
            f"{start:g} s, {table.shape[0]} samples at {rate:g} Hz)")
    keep = (times > -tol) & (times < duration - tol)
    if keep.sum() < 2:
        raise InputDataError(f"{file.path}: fewer than 2 samples inside the run ({rate:g} Hz)")
    values = table[keep][:, [names.index(c) for c in columns]]
    bad = [c for c, ok in zip(columns, np.isfinite(values).all(axis=0)) if not ok]
    if bad:
        raise InputDataError(f"{file.path}: non-finite values inside the run in column(s) {', '.join(bad)}")
    return Recording(file.path, file.source, rate, start, max(float(times[keep][0]), 0.0),
                     list(columns), values, covered)


def anti_alias_cutoff(tr: float) -> float:
    """Cutoff (Hz) of the anti-aliasing filter for frames every ``tr`` seconds."""
    return ANTI_ALIAS_FRACTION * 0.5 / tr


def anti_alias_record(tr: float) -> dict:
    """The anti-aliasing filter for frames every ``tr`` seconds, JSON-able, for the design sidecar."""
    cutoff = anti_alias_cutoff(tr)
    return {"method": "zero-phase Butterworth (nilearn.signal.butterworth) on the run's samples at "
                      "the recording's rate, edge values held as padding, then linear interpolation "
                      "at the frame times; columns at or below 1/TR are only interpolated",
            "order": ANTI_ALIAS_ORDER, "cutoff_hz": cutoff, "padding_s": ANTI_ALIAS_PAD_PERIODS / cutoff}


def _padding(n_samples: int, rate: float, tr: float) -> int:
    """Samples of padding at each end: ``ANTI_ALIAS_PAD_PERIODS`` cutoff periods, at most ``n_samples - 1``."""
    return min(n_samples - 1, int(np.ceil(ANTI_ALIAS_PAD_PERIODS * rate / anti_alias_cutoff(tr))))


def sample_recording(var, times: np.ndarray, tr: float) -> tuple[np.ndarray, bool]:
    """A recording variable at the frame times, low-pass filtered first when it is faster than 1/TR.

    Parameters
    ----------
    var : DenseRunVariable
        A variable from :func:`bids_app.design.transforms.recording_variables`, maybe transformed.
    times : ndarray, shape (n_vols,)
        Frame times in seconds.
    tr : float
        Repetition time in seconds.

    Returns
    -------
    values : ndarray, shape (n_vols,), float64
    filtered : bool
        Whether the anti-aliasing filter was applied (not needed for a
        variable sampled at or below 1/TR: it has nothing above the TR's Nyquist
        frequency).
    """
    values = np.asarray(var.values, dtype=np.float64).reshape(-1)
    rate = float(var.sampling_rate)
    filtered = rate * tr > 1.0 + 1e-9
    if filtered:
        from nilearn.signal import butterworth  # ~2 s to import: only runs with recordings need it

        values = butterworth(values, sampling_rate=rate, low_pass=anti_alias_cutoff(tr),
                             order=ANTI_ALIAS_ORDER, padtype="constant",
                             padlen=_padding(values.size, rate, tr), copy=True)
    # variables pybids builds anew (Split) lose the offset, which is below one sample
    first = getattr(var, "first_sample", 0.0)
    return np.interp(times, first + np.arange(values.size) / rate, values), filtered
