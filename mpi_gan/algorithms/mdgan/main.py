"""MD-GAN entry point: ``mpiexec -n N+1 python -m mpi_gan.mdgan [options]``.

Rank 0 is the server holding G; ranks 1..N are workers holding one D each and
a private shard of the training set. See ``--help`` for every option and its
default, docs/mdgan.md for the algorithm's choices and docs/hdf5.md for the
files written under ``--out``.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from mpi4py import MPI

from . import plan as alg
from ...gan.losses import make_adam
from ...io.checkpoint import checkpoint_path, prune_checkpoints, write_checkpoint
from ...config import NUM_CLASSES, Config, dataset_size, parse_config, resolved_cache_dir, validate
from ...data import load_shard
from ...comm.launch import abort_on_exception, agree, select_device, start_run
from ...models import count_params, make_discriminator, make_generator
from ...io.runlog import mdgan_metrics, write_run_file
from .server import Server
from ...io.state import Layout, adam_state, load_rng_state, module_state, rng_state
from ...comm.transport import Transport
from .worker import Worker, channel_state, feedback_channel


@dataclass
class RunResult:
    """What a rank ends with: its model, and on rank 0 the output paths."""

    model: torch.nn.Module
    run_file: str | None = None
    checkpoint: str | None = None
    feedback_bytes: int = 0  # worker: bytes of every feedback message it sent


def disc_outputs(cfg: Config) -> int:
    return 1 + NUM_CLASSES if cfg.acgan else 1


def worker_layout(cfg: Config) -> Layout:
    """Byte layout of a worker's full state (D, Adam, RNG, feedback channel), the same on
    every rank."""
    d = make_discriminator(cfg.model, disc_outputs(cfg), cfg.seed, 1)
    opt = make_adam(d, cfg.lr_d, cfg.beta1, cfg.beta2)
    return Layout(module_state(d) + adam_state(d, opt) + rng_state()
                  + channel_state(feedback_channel(cfg), cfg, 1))


def run(cfg: Config, comm: MPI.Comm | None = None) -> RunResult:
    """Run MD-GAN on every rank of ``comm`` (collective). Set-up errors raise SetupFailed
    on every rank; later failures abort the job."""
    comm = comm if comm is not None else MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    log, ckpt, local = start_run(comm, cfg, validate)
    device = agree(comm, lambda: select_device(cfg.device, local))
    shard = agree(comm, lambda: load_shard(
        cfg.dataset, cfg.seed, size - 1, rank, cfg.data_dir, resolved_cache_dir(cfg),
        cfg.synthetic_size) if rank > 0 else None)
    torch.set_num_threads(cfg.threads)
    with abort_on_exception(comm):
        return _train(cfg, comm, device, ckpt, shard, log)


def _train(cfg, comm, device, ckpt, shard, log) -> RunResult:
    transport = Transport(comm)
    rank, size = transport.rank, transport.size
    workers = size - 1
    layout = worker_layout(cfg)
    period = alg.swap_period(cfg.swap_epochs, dataset_size(cfg) // workers, cfg.batch_size)
    start = np.array([ckpt.iteration if ckpt else 0], dtype=np.int64)
    comm.Bcast([start, MPI.INT64_T], root=0)
    start = int(start[0])

    if rank == 0:
        g = make_generator(cfg.model, cfg.latent_dim, cfg.seed).to(device)
        role = Server(transport, g, make_adam(g, cfg.lr_g, cfg.beta1, cfg.beta2), cfg,
                      device, layout)
        metrics = mdgan_metrics(workers)
        log.info("MD-GAN: 1 server + %d workers, model %s%s, G %d params, D %d params, "
                 "K=%d batches of %d, device %s, iterations %d..%d, swap every %s iterations",
                 workers, cfg.model, " (ACGAN)" if cfg.acgan else "", count_params(g),
                 layout_params(cfg), role.batches, cfg.batch_size, device, start,
                 cfg.iterations, period or "never")
        if ckpt is not None:
            role.load_state(ckpt.generator)
            load_rng_state({"rng/torch": ckpt.rng[0]})
            role.restore_workers({n: {**ckpt.discriminators[n], "rng/torch": ckpt.rng[n]}
                                  for n in role.workers})
            metrics.load(ckpt.metrics)
            transport.add_base(ckpt.traffic_bytes, ckpt.traffic_messages)
            log.info("resumed from %s at iteration %d", ckpt.path, start)
        model = g
    else:
        d = make_discriminator(cfg.model, disc_outputs(cfg), cfg.seed, rank).to(device)
        role = Worker(transport, d, make_adam(d, cfg.lr_d, cfg.beta1, cfg.beta2), shard,
                      cfg, device, feedback_channel(cfg))
        log.info("worker %d: shard of %d samples, device %s", rank, len(shard), device)
        if start > 0:
            role.receive_state(layout)
        model = d

    result = RunResult(model)
    fault = _injected_fault(rank)
    window = time.perf_counter()
    for t in range(start, cfg.iterations):
        if t == fault:
            raise RuntimeError(f"fault injected by MPI_GAN_FAULT at iteration {t} on rank {rank}")
        tic = time.perf_counter()
        if rank == 0:
            d_loss, g_loss = role.step(t)
            metrics.append(iteration=t + 1, seconds=time.perf_counter() - tic, d_loss=d_loss,
                           g_loss=g_loss, server_bytes_out=transport.sent_total())
            if (t + 1) % cfg.log_every == 0 or t + 1 == cfg.iterations:
                done = min(cfg.log_every, t + 1 - start) or 1
                rate = done / (time.perf_counter() - window)
                window = time.perf_counter()
                log.info("iter %d/%d  %.2f it/s  D loss %.4f  G loss %.4f  server sent %.1f MB, "
                         "received %.1f MB", t + 1, cfg.iterations, rate, d_loss.mean(),
                         g_loss.mean(), transport.sent_total() / 1e6,
                         transport.received_total() / 1e6)
        else:
            role.step(t)
            swap = alg.swap_after(t, period)
            if swap is not None:
                role.swap(swap)
        if (cfg.checkpoint_every and (t + 1) % cfg.checkpoint_every == 0) \
                or t + 1 == cfg.iterations:
            paths = _checkpoint(cfg, transport, role, layout, t + 1,
                                metrics if rank == 0 else None)
            if rank == 0:
                result.checkpoint, result.run_file = paths
                log.info("checkpoint %s, run file %s", *paths)
    if rank > 0:
        result.feedback_bytes = role.feedback_bytes
    transport.free()
    return result


def _injected_fault(rank: int) -> int | None:
    """Iteration at which ``MPI_GAN_FAULT=rank:iteration`` makes this rank fail, if any.

    A testing aid for the abort path (an exception on one rank must end the job).
    """
    spec = os.environ.get("MPI_GAN_FAULT", "")
    if not spec:
        return None
    fault_rank, _, iteration = spec.partition(":")
    return int(iteration) if int(fault_rank) == rank else None


def layout_params(cfg: Config) -> int:
    return count_params(make_discriminator(cfg.model, disc_outputs(cfg), cfg.seed, 1))


def _checkpoint(cfg, transport, role, layout, iteration, metrics):
    """Collective: workers ship their state to rank 0, which writes checkpoint and run file."""
    if transport.rank != 0:
        role.send_state(layout)
        transport.totals()
        return None
    states = role.gather_workers()
    traffic = transport.totals()
    rng = {0: torch.get_rng_state()}
    rng.update({n: states[n].pop("rng/torch") for n in states})
    path = checkpoint_path(cfg.out, iteration)
    server_state = role.state()
    write_checkpoint(path, cfg, iteration, transport.size, server_state,
                     {n: list(s.items()) for n, s in states.items()}, rng, metrics, *traffic)
    prune_checkpoints(cfg.out, cfg.keep_checkpoints)
    run_file = os.path.join(cfg.out, "run.h5")
    write_run_file(run_file, "mpi-gan-mdgan-run", cfg, transport.size, iteration,
                   {"metrics": metrics}, *traffic, "generator", server_state,
                   finished=iteration == cfg.iterations)
    return path, run_file


def main(argv: list[str] | None = None) -> int:
    comm = MPI.COMM_WORLD
    cfg = parse_config(sys.argv[1:] if argv is None else argv, quiet=comm.Get_rank() != 0)
    result = run(cfg, comm)
    if comm.Get_rank() == 0:
        print(f"done: run file {os.path.abspath(result.run_file)}, "
              f"checkpoint {os.path.abspath(result.checkpoint)}, logs "
              f"{os.path.abspath(os.path.join(cfg.out, 'logs'))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
