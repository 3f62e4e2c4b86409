"""Analytic traffic of an asynchronous SGD run, given how many pushes each worker sent.

Asynchrony decides who pushes how often; given that (the server's push counts),
everything else follows:
  pull    0 -> n  one per push worker n computed: 16-byte header + |theta| float32;
                  plus a bare 16-byte header per state request and one to stop
  push    n -> 0  data-dependent (compressed payloads): what each worker sent
  checkpoint n -> 0  one report of the worker's shard (its compressor state) per state
                     request
State requests: one per checkpoint when workers keep compressor state, else none.
"""
from __future__ import annotations

import numpy as np

from .protocol import ALL_KINDS as KINDS, HEADER


def expected_traffic(push_counts: np.ndarray, theta_floats: int, state_requests: int,
                     report_bytes: int, push_bytes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, messages), int64 (len(KINDS), world, world), of a fresh run.

    push_counts: (world,) pushes the server received from each rank; push_bytes: (world,)
    bytes each rank pushed; report_bytes: one worker's report of its shard (0 when
    workers keep no state).
    """
    world = len(push_counts)
    k = {kind: i for i, kind in enumerate(KINDS)}
    nbytes = np.zeros((len(KINDS), world, world), dtype=np.int64)
    msgs = np.zeros_like(nbytes)
    for n in range(1, world):
        signals = state_requests + 1  # the state requests and the stop
        msgs[k["pull"], 0, n] = push_counts[n] + signals
        nbytes[k["pull"], 0, n] = push_counts[n] * (HEADER + 4 * theta_floats) + signals * HEADER
        msgs[k["push"], n, 0] = push_counts[n]
        nbytes[k["push"], n, 0] = push_bytes[n]
        msgs[k["checkpoint"], n, 0] = state_requests if report_bytes else 0
        nbytes[k["checkpoint"], n, 0] = state_requests * report_bytes
    return nbytes, msgs
