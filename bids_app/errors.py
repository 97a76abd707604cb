"""Exceptions that end a run, each with the exit code the CLI returns.

Exit codes follow the draft BIDS-Apps specification (BEP027) where it
defines one; the rest are ours and documented in README.md.
"""
import difflib


class BidsStatsError(Exception):
    """Base class: a clear, user-facing error that ends the run."""

    exit_code = 1


class UsageError(BidsStatsError):
    """Bad command-line arguments (missing directories, bad labels)."""

    exit_code = 2


class InvalidDatasetError(BidsStatsError):
    """The BIDS or derivatives directory is missing or unreadable."""

    exit_code = 16


class ModelError(BidsStatsError):
    """The model JSON is not valid: not JSON, schema or semantic errors.

    Parameters
    ----------
    issues : list of (str, str)
        ``(json_path, message)`` pairs, e.g.
        ``("Nodes[1].Contrasts[0].Weights", "expected 3 weights, got 2")``.
        All problems are reported at once.
    source : str, optional
        The model file name, shown in the message.
    """

    exit_code = 3

    def __init__(self, issues, source=None):
        self.issues = list(issues)
        self.source = source
        head = f"Invalid model{f' {source}' if source else ''}: {len(self.issues)} problem(s)"
        lines = [f"  - {path or '<root>'}: {msg}" for path, msg in self.issues]
        super().__init__("\n".join([head, *lines]))


class NoInputsError(BidsStatsError):
    """The model's Input or Edge filters selected no files (BEP027 code 18)."""

    exit_code = 18


class InputDataError(BidsStatsError):
    """An input file is unreadable or inconsistent (NIfTI, events, confounds)."""

    exit_code = 19


class DesignError(BidsStatsError):
    """A design matrix cannot be built or is not estimable."""

    exit_code = 20


class OutputError(BidsStatsError):
    """OUTPUT_DIR cannot take these outputs: not writable, full, a file, overlapping the
    inputs, or holding another model's outputs."""

    exit_code = 21


def did_you_mean(word, choices, n: int = 1) -> str:
    """``" (did you mean 'a', 'b'?)"`` naming the up to ``n`` choices closest to ``word``
    (case ignored, spelling kept), or ``""`` when none is close: the one hint of every message."""
    by_lower = {str(c).lower(): c for c in choices}
    close = difflib.get_close_matches(str(word).lower(), list(by_lower), n=n, cutoff=0.6)
    return f" (did you mean {', '.join(repr(by_lower[c]) for c in close)}?)" if close else ""
