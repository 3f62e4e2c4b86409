"""Elastic resume: a run continued on a different number of workers than its checkpoint's
(a requeued job that got fewer or more nodes), for the algorithms that allow it
(``Algorithm.elastic``: MD-GAN).

The rule (``sources``), for a checkpoint of iteration T whose workers with state are W_old
(world ranks 1.., a worker lost before the checkpoint has none) resumed on N_new workers:
  * rank 0 (the server) loads its own state, as always;
  * worker n of the new run that was in W_old loads its whole state (D, Adam, the feedback
    compressor's state and residual, its RNG): it carries on;
  * a worker of W_old above N_new departs: its discriminator is dropped;
  * a new worker n (not in W_old) starts from a copy of the discriminator and its Adam
    state of an old worker drawn uniformly from W_old, by
    ``numpy.random.default_rng(derive_seed(seed, "elastic", T))``, one draw per new worker
    in increasing n; its compressor state and RNG start fresh, as in a new run.
The data are planned anew over the N_new workers (the same plan a fresh run on N_new
workers has), and every schedule that depends on the shards (the swap period) follows.
The run file records the change in its ``/elastic`` table (``elastic_table``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..io.runlog import Metrics
from ..streams import derive_seed


def sources(seed: int, iteration: int, old_workers: Sequence[int], new_workers: int
            ) -> dict[int, tuple[int, bool]]:
    """Worker n of the new run (1..``new_workers``) -> (the old worker whose shard it loads,
    whether it loads the whole state (True: it is that worker) or a copy of its
    discriminator and optimizer state (False: a new worker)); the module docstring's rule.
    ``old_workers``: the old run's workers whose state the checkpoint holds."""
    old = sorted(int(n) for n in old_workers)
    if not old:
        raise ValueError("an elastic resume needs a checkpoint that holds a worker's state")
    new = [n for n in range(1, new_workers + 1) if n not in old]
    draws = np.random.default_rng(derive_seed(seed, "elastic", iteration)).integers(
        len(old), size=len(new))
    out = {n: (n, True) for n in range(1, new_workers + 1) if n in old}
    out.update({n: (old[int(i)], False) for n, i in zip(new, draws)})
    return dict(sorted(out.items()))


def elastic_table() -> Metrics:
    """The run file's ``/elastic``: one row per resume on another number of workers:
    iteration (where it resumed), workers_before, workers_after (int64)."""
    return Metrics({"iteration": (np.int64, ()), "workers_before": (np.int64, ()),
                    "workers_after": (np.int64, ())})
