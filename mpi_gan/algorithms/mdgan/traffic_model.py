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

With --staleness-bound S > 0 (``expected_async_traffic``) who computed how many steps is
the schedule's: per feedback the server took from worker n (k = 1), one batch_g of a
32-byte header (``protocol.HEADER``) and b*d float32, one batch_d, the labels (ACGAN),
the feedback and the losses, as above. The server's commands are header-only batch_g
messages: one SWAP to every worker per swap, one STATE per checkpoint, one STOP at the
end. Swaps and checkpoints fall on the same versions as synchronous MD-GAN's iterations.
"""
from __future__ import annotations

import numpy as np

from . import plan as alg
from .config import MdganConfig
from .protocol import ALL_KINDS as KINDS, HEADER

FLOAT32, INT64 = 4, 8


class _Counters:
    """(bytes, messages) per kind and link, filled message by message."""

    def __init__(self, world_size: int):
        self.kinds = {kind: i for i, kind in enumerate(KINDS)}
        self.nbytes = np.zeros((len(KINDS), world_size, world_size), dtype=np.int64)
        self.msgs = np.zeros_like(self.nbytes)

    def add(self, kind: str, src: int, dst: int, count: int, size: int) -> None:
        self.nbytes[self.kinds[kind], src, dst] += count * size
        self.msgs[self.kinds[kind], src, dst] += count


def _swaps_and_checkpoints(counters: _Counters, cfg: MdganConfig, world_size: int,
                           mean_shard: int, d_state_bytes: int, d_param_tensors: int,
                           d_param_floats: int, report_bytes: int) -> tuple[int, int]:
    """Add every swap and checkpoint report of ``cfg.iterations`` iterations (versions);
    returns (swaps with partners, checkpoints)."""
    workers = world_size - 1
    adam_bytes = 2 * d_param_floats * FLOAT32 + d_param_tensors * FLOAT32
    swap_bytes = d_state_bytes + (adam_bytes if cfg.swap_adam == "travel" else 0)
    period = alg.swap_period(cfg.swap_epochs, mean_shard, cfg.batch_size)
    swaps = [s for s in (alg.swap_after(t, period) for t in range(cfg.iterations))
             if s is not None and alg.derangement(cfg.seed, s, workers) is not None]
    iters = cfg.iterations
    checkpoints = len({t for t in range(1, iters + 1)
                       if (cfg.checkpoint_every and t % cfg.checkpoint_every == 0) or t == iters})
    for n in range(1, world_size):
        counters.add("checkpoint", n, 0, checkpoints, report_bytes)
    for s in swaps:
        dest = alg.derangement(cfg.seed, s, workers)
        for n in range(1, world_size):
            counters.add("swap", n, dest[n - 1], 1, swap_bytes)
    return len(swaps), checkpoints


def _step_messages(counters: _Counters, cfg: MdganConfig, worker: int, count: int
                   ) -> None:
    """The labels and losses of ``count`` steps of ``worker``."""
    if cfg.acgan:
        counters.add("labels", 0, worker, count, 2 * cfg.batch_size * INT64)
    counters.add("losses", worker, 0, count, 2 * FLOAT32)


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
    counters = _Counters(world_size)
    iters = cfg.iterations
    batch_bytes = cfg.batch_size * sample_floats * FLOAT32
    batch_links, feedback_links = alg.exchange_links(
        cfg.exchange, *alg.batch_plan(cfg.k, list(range(1, world_size))))
    for link in batch_links + feedback_links:
        counters.add(link.kind, link.sender, link.receiver, iters, batch_bytes)
    for n in range(1, world_size):
        _step_messages(counters, cfg, n, iters)
    _swaps_and_checkpoints(counters, cfg, world_size, mean_shard, d_state_bytes,
                           d_param_tensors, d_param_floats, report_bytes)
    return counters.nbytes, counters.msgs


def expected_async_traffic(cfg: MdganConfig, world_size: int, steps: np.ndarray,
                           sample_floats: int, mean_shard: int, d_state_bytes: int,
                           d_param_tensors: int, d_param_floats: int, report_bytes: int,
                           header_bytes: int = HEADER) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, messages), int64 (len(KINDS), world, world), of a fresh run of ``cfg``
    with ``--staleness-bound`` > 0 whose schedule took ``steps[n]`` feedbacks (applied
    or dropped) from worker n (``steps``: int, (world,); ``steps[0]`` unused). The other
    arguments as ``expected_traffic``'s; header_bytes: the server's command header."""
    counters = _Counters(world_size)
    batch_bytes = cfg.batch_size * sample_floats * FLOAT32
    swaps, checkpoints = _swaps_and_checkpoints(
        counters, cfg, world_size, mean_shard, d_state_bytes, d_param_tensors,
        d_param_floats, report_bytes)
    signals = swaps + checkpoints + 1  # SWAP, STATE and STOP: a header each
    for n in range(1, world_size):
        count = int(steps[n])
        counters.add("batch_g", 0, n, count, header_bytes + batch_bytes)
        counters.add("batch_g", 0, n, signals, header_bytes)
        counters.add("batch_d", 0, n, count, batch_bytes)
        counters.add("feedback", n, 0, count, batch_bytes)
        _step_messages(counters, cfg, n, count)
    return counters.nbytes, counters.msgs
