"""Analytic traffic of an MD-GAN run, message by message (MD-GAN paper, Sec. IV-C).

Per iteration and worker n (b = batch size, d = C*H*W floats per sample), with
--exchange p2p (the paper's):
  batch_g  0 -> n  b*d float32        batch_d  0 -> n  b*d float32
  labels   0 -> n  2*b int64 (ACGAN only)
  feedback n -> 0  b*d float32        losses   n -> 0  2 float32
With --exchange tree, labels and losses are the same, and every batch_g, batch_d and
feedback message (b*d float32 each) follows ``plan.exchange_links``: each of the K
batches leaves the server once, every worker still receives one X_g and one X_d (from
the server or a relay), and the server receives one feedback sum per batch that is
someone's X_g (K of them when N >= K), so the server's link carries 2K instead of 3N
batches an iteration.
Per swap (N >= 2), worker n -> its derangement partner: D's parameters and
buffers (the paper's |theta|), plus Adam's state (2|theta| + one float32 step
per parameter tensor) with --swap-adam travel.
Per checkpoint, worker n -> 0: the report of its shard (its size and digest) and its cost
counters (``train.loop.report_layout``); the state stays in the worker's own shard.
Messages carry no header: header bytes are 0.
"""
from __future__ import annotations

import numpy as np

from . import plan as alg
from .config import MdganConfig
from .protocol import ALL_KINDS as KINDS

FLOAT32, INT64 = 4, 8


def expected_traffic(cfg: MdganConfig, world_size: int, sample_floats: int, mean_shard: int,
                     d_state_bytes: int, d_param_tensors: int, d_param_floats: int,
                     report_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, messages), int64 (len(KINDS), world, world), of a fresh run of ``cfg``.

    sample_floats: d = C*H*W of one image; mean_shard: the m of a local epoch;
    d_state_bytes: bytes of D's parameters and buffers; d_param_tensors: number of
    parameter tensors; d_param_floats: |theta|; report_bytes: a worker's checkpoint
    message (the report of its shard).
    With ``--compress`` other than none, feedback sizes depend on the data: the
    ``feedback`` bytes given here are then those of uncompressed feedback.
    """
    k = {kind: i for i, kind in enumerate(KINDS)}
    nbytes = np.zeros((len(KINDS), world_size, world_size), dtype=np.int64)
    msgs = np.zeros_like(nbytes)
    workers = world_size - 1
    b, iters = cfg.batch_size, cfg.iterations
    batch_bytes = b * sample_floats * FLOAT32

    def add(kind, src, dst, count, size):
        nbytes[k[kind], src, dst] += count * size
        msgs[k[kind], src, dst] += count

    adam_bytes = 2 * d_param_floats * FLOAT32 + d_param_tensors * FLOAT32
    swap_bytes = d_state_bytes + (adam_bytes if cfg.swap_adam == "travel" else 0)
    period = alg.swap_period(cfg.swap_epochs, mean_shard, b)
    swaps = [s for s in (alg.swap_after(t, period) for t in range(iters)) if s is not None]
    checkpoints = len({t for t in range(1, iters + 1)
                       if (cfg.checkpoint_every and t % cfg.checkpoint_every == 0) or t == iters})
    batch_links, feedback_links = alg.exchange_links(
        cfg.exchange, *alg.batch_plan(cfg.k, list(range(1, world_size))))
    for link in batch_links + feedback_links:
        add(link.kind, link.sender, link.receiver, iters, batch_bytes)
    for n in range(1, world_size):
        if cfg.acgan:
            add("labels", 0, n, iters, 2 * b * INT64)
        add("losses", n, 0, iters, 2 * FLOAT32)
        add("checkpoint", n, 0, checkpoints, report_bytes)
    for s in swaps:
        dest = alg.derangement(cfg.seed, s, workers)
        if dest is not None:
            for n in range(1, world_size):
                add("swap", n, dest[n - 1], 1, swap_bytes)
    return nbytes, msgs
