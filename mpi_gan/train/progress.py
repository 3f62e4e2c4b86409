"""Rank 0's progress: a tqdm bar on a terminal, plain periodic log lines otherwise.

On a terminal (stdout is a TTY) the bar shows the iteration, it/s, time left and a
postfix (losses, bytes, the latest score); the periodic lines then go to the log
file only. In a SLURM job's log (stdout a file) there is no bar, only the lines,
every ``--log-every`` iterations, so logs stay small and greppable. Open MPI's
``mpiexec`` gives its ranks a pseudo-terminal even when its own output is a file:
``MPI_GAN_PROGRESS=lines`` (set by jobs/lib.sh) or ``bar`` overrides the guess.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import time

from tqdm import tqdm

PROGRESS = "progress"  # attribute of the records the console skips while a bar is shown


class _NotProgress(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, PROGRESS, False)


class Progress:
    """Counts iterations on rank 0; ``line`` logs a periodic line, ``note`` sets the postfix."""

    def __init__(self, log: logging.Logger, start: int, total: int, bar: bool | None = None):
        self.log, self.total = log, total
        self.window, self.in_window = time.perf_counter(), 0
        self.score = ""
        if bar is None:
            choice = os.environ.get("MPI_GAN_PROGRESS", "auto")
            bar = sys.stdout.isatty() if choice not in ("bar", "lines") else choice == "bar"
        # the terminal's size (80 x 24 if it reports none, as a bare pseudo-terminal does,
        # which tqdm would take as 'no room' and draw nothing)
        size = shutil.get_terminal_size()
        self.bar = tqdm(total=total, initial=start, unit="it", ncols=size.columns,
                        nrows=size.lines, leave=True, mininterval=0.5,
                        file=sys.stdout) if bar else None
        self._filter = _NotProgress()
        if self.bar is not None:
            for handler in log.handlers:
                if not isinstance(handler, logging.FileHandler):
                    handler.addFilter(self._filter)

    def step(self, done: int) -> None:
        """One more iteration done (``done`` in all)."""
        self.in_window += 1
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def line(self, done: int, text: str) -> None:
        """The periodic progress line: iteration, rate since the last line, ``text``."""
        rate = self.in_window / max(time.perf_counter() - self.window, 1e-9)
        self.log.info("iter %d/%d  %.2f it/s  %s%s", done, self.total, rate, text, self.score,
                      extra={PROGRESS: True})
        if self.bar is not None:
            self.bar.set_postfix_str(text + self.score, refresh=False)
        self.window, self.in_window = time.perf_counter(), 0

    def scored(self, text: str, iteration: int) -> None:
        """The latest scores, those of ``iteration``, shown on the bar and the following
        lines with the iteration they belong to (they stay until the next evaluation)."""
        self.score = f"  scores of iter {iteration}: {text}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            for handler in self.log.handlers:
                handler.removeFilter(self._filter)
