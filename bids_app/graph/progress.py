"""Progress of a run on stderr: one bar per node on a terminal, one plain line per finished unit elsewhere.

On a terminal, tqdm draws ``node NAME: done/total units [elapsed<ETA]`` and
log messages are routed through it so they do not tear the bar. In logs
(batch jobs, CI, pipes) every finished unit is one line that ``grep`` and
``tail -f`` handle::

    bids-stats: node run 3/12 sub-01_run-3 done (00:41 elapsed, ETA 02:04)
"""
from __future__ import annotations

import contextlib
import sys
import time


class Progress:
    """Reports units finished per node.

    Parameters
    ----------
    enabled : bool
        False (``--quiet``) reports nothing.
    stream : file, optional
        Where to write (default ``sys.stderr``).
    terminal : bool, optional
        Draw a live bar; default: whether ``stream`` is a terminal.
    """

    def __init__(self, enabled: bool = True, stream=None, terminal: bool | None = None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal

    @contextlib.contextmanager
    def node(self, name: str, total: int):
        """Context in which ``tick(label)`` reports one finished unit of node ``name`` out of ``total``."""
        if not self.enabled or total == 0:
            yield lambda label: None
            return
        if self.terminal:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            with tqdm(total=total, desc=f"node {name}", unit="unit", file=self.stream, dynamic_ncols=True,
                      bar_format="{desc}: {n}/{total} units {bar} [{elapsed}<{remaining}]") as bar, \
                    logging_redirect_tqdm():
                yield lambda label: bar.update(1)
            return
        yield _LineTicker(name, total, self.stream)


class _LineTicker:
    def __init__(self, name: str, total: int, stream):
        self.name, self.total, self.stream = name, total, stream
        self.done = 0
        self.start = time.monotonic()

    def __call__(self, label: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        print(f"bids-stats: node {self.name} {self.done}/{self.total} {label} done "
              f"({_clock(elapsed)} elapsed, ETA {_clock(eta)})", file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
