"""Single-process reference of MD-GAN's Algorithm 1 (no MPI), for equivalence checks.

Holds G and all N discriminators in one process and performs, in the same order
and with the same seed-derived streams, what the MPI server and workers do.
The MPI run must reproduce its parameters (tests/mpi/test_mdgan.py).
"""
from __future__ import annotations

import torch

from . import plan as alg
from ...gan.losses import discriminator_step, error_feedback, latent_batch, make_adam
from ...config import disc_outputs, latent_classes
from .config import MdganConfig
from ...data import plan_data, real_batch_indices
from ...io.state import adam_state, load_adam_state, load_module_state, module_state
from ...models import make_discriminator, make_generator
from ...train import elastic
from .worker import feedback_channel, feedback_name


def server_feedback(exchange: str, feedbacks: list[torch.Tensor], batches: int,
                    assignment: dict[int, tuple[int, int]]
                    ) -> tuple[list[torch.Tensor], list[int]]:
    """(what reaches the server, the batch of each) from every worker's feedback
    (``feedbacks`` in worker order): p2p, each worker's own; tree, one ``plan.tree_sum``
    per batch over its X_g holders in worker order (their tree positions)."""
    workers = sorted(assignment)
    if exchange == "p2p":
        return feedbacks, [assignment[n][0] for n in workers]
    sums, summed = [], []
    for j in range(batches):
        held = [fb for n, fb in zip(workers, feedbacks) if assignment[n][0] == j]
        if held:
            sums.append(alg.tree_sum(held))
            summed.append(j)
    return sums, summed


def run_reference(cfg: MdganConfig, world_size: int, lost: dict[int, list[int]] | None = None,
                  resize: dict[int, int] | None = None, optimizers: bool = False):
    """Train for ``cfg.iterations`` iterations; returns (G, {n: D held by worker n}), and
    {n: D's Adam} too with ``optimizers``.

    ``lost``: {iteration: workers}, workers that leave (die) at the start of that 0-based
    iteration, with their D and their shard; the others go on as ``--fault-tolerant`` does
    (``plan.batch_plan`` over the survivors, feedback scaled by 1 / (N_alive b), swaps
    among the survivors). ``resize``: {iteration: world size}, an elastic resume there on
    that many ranks (``train/elastic.py``): the data planned over the new workers,
    departing discriminators dropped, a new worker a copy of a drawn old worker's D and
    Adam state with a fresh feedback channel."""
    workers = world_size - 1
    plans = {n: plan_data(cfg, workers, n) for n in range(1, workers + 1)}
    shards = {n: p.shard for n, p in plans.items()}
    shape, classes = plans[1].spec.shape, latent_classes(cfg)
    g = make_generator(cfg.model, cfg.latent_dim, cfg.seed, shape)
    g_opt = make_adam(g, cfg.lr_g, cfg.beta1, cfg.beta2)
    discs = {n: make_discriminator(cfg.model, disc_outputs(cfg), cfg.seed, n, shape)
             for n in shards}
    d_opts = {n: make_adam(d, cfg.lr_d, cfg.beta1, cfg.beta2) for n, d in discs.items()}
    channels = {n: feedback_channel(cfg) for n in shards}
    period = alg.swap_period(cfg.swap_epochs, plans[1].mean_shard, cfg.batch_size)
    b = cfg.batch_size
    for t in range(cfg.iterations):
        for n in (lost or {}).get(t, ()):
            for held in (shards, discs, d_opts, channels):
                del held[n]
        if t in (resize or {}):
            plans = {n: plan_data(cfg, resize[t] - 1, n) for n in range(1, resize[t])}
            shards = {n: p.shard for n, p in plans.items()}
            discs, d_opts, channels = resized(cfg, t, discs, d_opts, channels, len(plans),
                                              shape)
            period = alg.swap_period(cfg.swap_epochs, plans[1].mean_shard, cfg.batch_size)
        batches, assignment = alg.batch_plan(cfg.k, sorted(shards))
        latents = [latent_batch(cfg.latent_dim, classes, b, cfg.seed, t, j)
                   for j in range(batches)]
        g.train()
        generated = [g(z) for z, _ in latents]
        feedbacks = []
        for n in sorted(shards):
            gi, di = assignment[n]
            idx = real_batch_indices(cfg.seed, n, len(shards[n]), b, t)
            x_r = shards[n].images[idx]
            y_r = shards[n].labels[idx] if cfg.acgan else None
            for _ in range(cfg.disc_steps):
                discriminator_step(discs[n], d_opts[n], x_r, y_r, generated[di].detach(),
                                       latents[di][1])
            fb, _ = error_feedback(discs[n], generated[gi].detach(), latents[gi][1],
                                       cfg.g_loss == "saturating")
            if channels[n] is not None:  # what the server decodes from the compressed payload
                fb = channels[n].compressor.decompress(channels[n].encode(fb, feedback_name(n)))
            feedbacks.append(fb)
        grads = alg.feedback_gradients(*server_feedback(cfg.exchange, feedbacks, batches,
                                                        assignment),
                                       batches, 1.0 / (len(shards) * b))
        alg.generator_step(g_opt, generated, grads)
        swap = alg.swap_after(t, period)
        if swap is not None and len(shards) > 1:
            discs, d_opts = swapped(cfg, swap, discs, d_opts)
    return (g, discs, d_opts) if optimizers else (g, discs)


def swapped(cfg: MdganConfig, index: int, discs: dict, d_opts: dict, skip: bool = False
            ) -> tuple[dict, dict]:
    """The workers' discriminators and their Adams ({worker: ...}) after swap ``index``
    among them all: each D (with --swap-adam travel its Adam too) moves to its partner
    along the derangement; with reset every D gets a fresh Adam (``skip``: one that skips
    non-finite steps, --on-nonfinite skip)."""
    alive = sorted(discs)
    dest = {n: alg.swap_partners(cfg.seed, index, alive, n)[0] for n in alive}
    discs = {dest[n]: discs[n] for n in discs}
    if cfg.swap_adam == "travel":
        return discs, {dest[n]: d_opts[n] for n in d_opts}
    return discs, {n: make_adam(d, cfg.lr_d, cfg.beta1, cfg.beta2, skip)
                   for n, d in discs.items()}


def resized(cfg: MdganConfig, iteration: int, discs: dict, d_opts: dict, channels: dict,
            workers: int, shape) -> tuple[dict, dict, dict]:
    """The workers' discriminators, their Adams and feedback channels after an elastic
    resume at ``iteration`` on ``workers`` workers (``train.elastic.sources``)."""
    out_d, out_opt, out_channel = {}, {}, {}
    for n, (source, whole) in elastic.sources(cfg.seed, iteration, sorted(discs),
                                              workers).items():
        if whole:
            out_d[n], out_opt[n], out_channel[n] = discs[n], d_opts[n], channels[n]
            continue
        d = make_discriminator(cfg.model, disc_outputs(cfg), cfg.seed, n, shape)
        load_module_state(d, dict(module_state(discs[source])))
        opt = make_adam(d, cfg.lr_d, cfg.beta1, cfg.beta2)
        load_adam_state(d, opt, dict(adam_state(discs[source], d_opts[source])))
        out_d[n], out_opt[n], out_channel[n] = d, opt, feedback_channel(cfg)
    return out_d, out_opt, out_channel
