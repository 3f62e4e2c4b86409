"""Stragglers on demand (``--slow RANK:FACTOR``): a worker that takes FACTOR times its
measured compute time per step, for experiments and tests of what a slow node costs.

The worker measures the seconds of its own computation in a step (not its waits for
messages) and then sleeps (FACTOR - 1) times as long before it answers, so it looks to its
peers like a node FACTOR times slower: a busy node, a slower GPU. FACTOR 1 sleeps never.
"""
from __future__ import annotations

import time


class Straggler:
    """``pad(seconds)`` after a step that computed for ``seconds``: sleeps (factor - 1) x
    seconds; ``padded`` adds up the seconds slept (the run file's cost table counts them
    as the straggler's compute seconds, as a slower node's would be)."""

    def __init__(self, factor: float = 1.0):
        if not factor >= 1:
            raise ValueError(f"a straggler's factor must be >= 1, got {factor}")
        self.factor = factor
        self.padded = 0.0

    def pad(self, seconds: float) -> float:
        """Sleep (factor - 1) x ``seconds`` (a step's compute time); returns the seconds
        it meant to sleep."""
        extra = (self.factor - 1) * max(seconds, 0.0)
        if extra > 0:
            time.sleep(extra)
            self.padded += extra
        return extra
