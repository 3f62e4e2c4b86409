"""Analytic traffic of an FL-GAN run, message by message.

Per round (one ends after every P iterations) and worker n:
  upload   n -> 0  |w| + |theta| float32 (G and D: parameters and BatchNorm statistics)
  losses   n -> 0  2 float32 (the round's mean D and G losses)
  average  0 -> n  the same |w| + |theta| float32
Per checkpoint, worker n -> 0: the report of its shard (its full state stays there).
Messages carry no header.
"""
from __future__ import annotations

import numpy as np

from .protocol import ALL_KINDS as KINDS, round_after

FLOAT32 = 4


def expected_traffic(cfg, world_size: int, period: int, model_floats: int,
                     report_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, messages), int64 (len(KINDS), world, world), of a fresh run of ``cfg``.

    period: iterations per round; model_floats: |w| + |theta| as travelling (floating
    state entries of G and D); report_bytes: a worker's checkpoint message (the report of
    its shard).
    """
    k = {kind: i for i, kind in enumerate(KINDS)}
    nbytes = np.zeros((len(KINDS), world_size, world_size), dtype=np.int64)
    msgs = np.zeros_like(nbytes)
    iters = cfg.iterations
    rounds = sum(round_after(t, period) for t in range(iters))
    checkpoints = len({t for t in range(1, iters + 1)
                       if (cfg.checkpoint_every and t % cfg.checkpoint_every == 0) or t == iters})

    def add(kind, src, dst, count, size):
        nbytes[k[kind], src, dst] += count * size
        msgs[k[kind], src, dst] += count

    for n in range(1, world_size):
        add("upload", n, 0, rounds, model_floats * FLOAT32)
        add("losses", n, 0, rounds, 2 * FLOAT32)
        add("average", 0, n, rounds, model_floats * FLOAT32)
        add("checkpoint", n, 0, checkpoints, report_bytes)
    return nbytes, msgs
