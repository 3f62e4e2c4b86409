"""Numbers that go bad stop the run (``--on-nonfinite stop``, the default) or the step that
made them is skipped (``--on-nonfinite skip``).

Rank 0 watches (``Watch``), cheaply, what passes through it anyway:
  * every metric row as it is recorded, each iteration: the losses of every worker (D loss,
    G loss: a worker whose D or feedback went bad reports a non-finite loss at once; FL-GAN
    at the end of its round);
  * its own state (G, or ASGD's theta, with the optimizer's moments) every ``--log-every``
    iterations and before every evaluation;
  * every rank's state as a checkpoint is written: a non-finite value is never saved (the
    temporary file is dropped), so the last good checkpoint stays the newest.
With ``stop`` the first non-finite value ends the job with one ``mpi_gan: error:`` line
naming the iteration, the rank (worker) and the quantity (``NonFiniteError``). With
``skip`` a non-finite loss is recorded as it is and the optimizer steps whose gradients are
non-finite are not taken (``gan.adam.Adam``'s ``skip_nonfinite``; ASGD's server drops a
non-finite push); the run still stops if a quantity is non-finite in every row recorded
since the last progress line (it has diverged: skipping cannot help), and always on a
non-finite state (but for the loss sums a state keeps, ``RECORD_ENTRIES``).
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from .launch import ClearError
from ..io.checkpoint import list_checkpoints

MODES = ("stop", "skip")
# state entries that sum losses (FL-GAN's round totals), not parameters: with skip they
# hold the non-finite losses of skipped steps until the round ends
RECORD_ENTRIES = ("round/losses",)


class NonFiniteError(ClearError):
    """A loss, a gradient or a parameter became NaN or infinite."""


def first_nonfinite(entries) -> tuple[str, int] | None:
    """(name of the first floating-point tensor of ``entries`` [(name, tensor)] holding a
    NaN or an infinity, how many entries do), or None if all are finite."""
    bad = [name for name, tensor in entries
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    return (bad[0], len(bad)) if bad else None


def nonfinite_columns(row: dict, ranked: bool = True) -> list[tuple[str, int]]:
    """(name, rank) of each floating-point value of one metric row that is NaN or infinite:
    ``column`` and rank 0, or for a per-worker column (one value per worker, workers being
    ranks 1..N: ``ranked``) ``column of worker n`` and rank n."""
    found = []
    for column, value in row.items():
        array = np.asarray(value)
        if not np.issubdtype(array.dtype, np.floating):
            continue
        bad = ~np.isfinite(array)
        if array.ndim == 0:
            found += [(column, 0)] if bad else []
        else:
            found += [(f"{column} of worker {i + 1}", i + 1) if ranked else (column, 0)
                      for i in np.flatnonzero(bad.reshape(-1))]
    return found


class Watch:
    """Rank 0's watch over the numbers of a run (module docstring): ``rows`` every
    iteration, ``state`` on its own state and the states checkpointed, ``period`` at every
    progress line."""

    def __init__(self, mode: str, out: str, start: int, log, ranked: bool = True,
                 lost: set | None = None, own_state=None, silent: set | None = None):
        self.mode, self.out, self.log, self.ranked = mode, out, log, ranked
        self.lost = lost if lost is not None else set()  # dead workers: NaN rows by design
        # workers with nothing to report yet (an asynchronous server's): NaN rows by design
        self.silent = silent if silent is not None else set()
        self.own_state = own_state        # rank 0's state entries (a callable), or None
        self.since = start                # iteration of the last ``period``
        self.bad: Counter = Counter()     # quantity -> rows it was non-finite in since
        self.seen = 0                     # iterations with rows since

    def _last_good(self) -> str:
        newest = list_checkpoints(self.out)
        return (f"the newest checkpoint is {newest[-1]}: resume from it with lower learning "
                "rates" if newest else
                "no checkpoint was written before: start again with lower learning rates")

    def _stop(self, what: str, iteration: int, rank: int) -> NonFiniteError:
        other = ", or with --on-nonfinite skip" if self.mode == "stop" else ""
        return NonFiniteError(
            f"non-finite {what} (NaN or inf) on rank {rank} at iteration {iteration}: the run "
            f"stops before saving it; {self._last_good()}{other}")

    def rows(self, iteration: int, rows) -> None:
        """Check the metric rows of one iteration, [(table, row)], as they are recorded. A
        bad row stops (``stop``) naming the first bad quantity and its worker, or rank 0's
        own state when every worker's value is bad and that state is non-finite (a G gone
        bad spoils every worker's loss; one worker gone bad spoils G through its feedback
        within the same iteration, and is the one to name)."""
        self.seen += bool(rows)
        found = []
        for table, row in rows or ():
            for name, rank in nonfinite_columns(row, self.ranked):
                if rank in self.lost or rank in self.silent:  # a dead worker's losses, or
                    continue  # those of one that has not reported yet, are NaN
                found.append((f"{name} in /{table}" if table != "metrics" else name, rank))
        if found and self.mode == "stop":
            workers = {rank for _, rank in found}
            if self.own_state is not None and (0 in workers or len(workers) == self._width(
                    rows)):
                self.state(iteration, 0, self.own_state())
            name, rank = found[0]
            raise self._stop(name, iteration, rank)
        for name, _ in found:
            self.bad[name] += 1

    def _width(self, rows) -> int:
        """The number of workers the rows' per-worker columns have (those alive)."""
        widths = [np.asarray(v).size for _, row in rows for v in row.values()
                  if np.asarray(v).ndim > 0 and np.issubdtype(np.asarray(v).dtype, np.floating)]
        return max(widths, default=0) - len(self.lost)

    def state(self, iteration: int, rank: int, entries, what: str = "state") -> None:
        """Stop (in both modes) if rank ``rank``'s ``entries`` hold a non-finite value."""
        found = first_nonfinite([(name, t) for name, t in entries
                                 if not (self.mode == "skip" and name in RECORD_ENTRIES)])
        if found is not None:
            name, count = found
            more = f" and {count - 1} more" if count > 1 else ""
            raise self._stop(f"{what} ({name}{more})", iteration, rank)

    def period(self, iteration: int) -> None:
        """At a progress line (``skip``): log what was non-finite since the last one; stop if
        a quantity was in every row recorded since (every iteration's, or with FL-GAN every
        round's)."""
        for name, count in self.bad.items():
            if count >= self.seen > 0:
                raise NonFiniteError(
                    f"non-finite {name} (NaN or inf) in every row from iteration "
                    f"{self.since + 1} to {iteration}, even with --on-nonfinite skip: the run "
                    f"has diverged; {self._last_good()}")
        if self.bad:
            self.log.warning("iterations %d..%d: non-finite losses, their steps skipped: %s",
                             self.since + 1, iteration,
                             ", ".join(f"{n} {c}x" for n, c in sorted(self.bad.items())))
        self.bad.clear()
        self.since, self.seen = iteration, 0
