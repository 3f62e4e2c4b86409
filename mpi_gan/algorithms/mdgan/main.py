"""MD-GAN on the training skeleton: ``mpiexec -n N+1 python -m mpi_gan.mdgan [options]``.

Rank 0 is the server holding G; ranks 1..N are workers holding one D each and
a private shard of the training set. See ``--help`` for every option and its
default, docs/mdgan.md for the algorithm's choices and docs/hdf5.md for the
files written under ``--out``.
"""
from __future__ import annotations

import numpy as np
import torch
from mpi4py import MPI

from ...algorithms import REGISTRY
from ...argtypes import slow_factors
from ...config import disc_outputs, latent_classes
from .config import MdganConfig, parse_args
from ...data import spec_of
from ...gan.ema import make_average
from ...gan.losses import make_adam
from ...io.runlog import Metrics, gan_table
from ...io.state import adam_state, module_state
from ...models import count_params, make_discriminator, make_generator
from ...train import Algorithm, Context, RunResult, run_algorithm, run_main
from ...train.straggler import Straggler
from . import plan as alg
from ...io.checkpoint import read_checkpoint
from ...io.runlog import EVENT_TABLES
from .async_roles import AsyncServer, AsyncWorker, schedule_table
from .protocol import KINDS
from .server import Server
from .worker import Worker, channel_state, feedback_channel



def mdgan_metrics(workers: int, staleness: bool = False) -> Metrics:
    """MD-GAN's per-iteration table (``gan_table``): d_loss is each worker's D loss averaged
    over its L steps, g_loss its mean generator loss on X_g; server_bytes_out the bytes
    rank 0 has sent. With ``staleness`` (--staleness-bound > 0), of the feedbacks the
    server took during the row's step (those of a checkpoint's drain are in the schedule
    only): ``applied``, ``dropped`` and ``tau_sum`` (int64: the sum of the staleness of
    those applied; tau_sum / applied is their mean)."""
    table = gan_table(workers, "server_bytes_out")
    if staleness:
        table = Metrics({**table.columns, "applied": (np.int64, ()), "dropped": (np.int64, ()),
                         "tau_sum": (np.int64, ())})
    return table


def worker_template(cfg: MdganConfig, worker: int = 1) -> list[tuple[str, torch.Tensor]]:
    """Named tensors shaped like a worker's state (D, Adam, feedback channel)."""
    spec = spec_of(cfg)
    d = make_discriminator(cfg.model, disc_outputs(cfg), cfg.seed, worker, spec.shape)
    opt = make_adam(d, cfg.lr_d, cfg.beta1, cfg.beta2)
    return module_state(d) + adam_state(d, opt) + channel_state(
        feedback_channel(cfg), (cfg.batch_size, *spec.shape), worker)


class MDGAN(Algorithm):
    registered = REGISTRY["mdgan"]  # name, run format, configuration and its check
    kinds = KINDS
    model_group = "generator"
    evaluates = True
    fault_tolerant = True
    elastic = True  # a new worker copies an old one's D and Adam state (train/elastic.py)
    copied_state = ("model/", "adam/")

    measures_asynchronous_steps = True  # a bounded-staleness worker times its steps

    def is_synchronous(self, cfg) -> bool:
        """--staleness-bound 0: the synchronous algorithm; above: the asynchronous loop."""
        return cfg.staleness_bound == 0

    def make_role(self, ctx: Context):
        cfg, data = ctx.cfg, ctx.data
        shape = data.spec.shape
        if ctx.rank == 0:
            g = make_generator(cfg.model, cfg.latent_dim, cfg.seed, shape).to(ctx.device)
            opt = make_adam(g, cfg.lr_g, cfg.beta1, cfg.beta2, cfg.on_nonfinite == "skip")
            average = make_average(g) if cfg.g_ema else None
            if cfg.staleness_bound:
                role = AsyncServer(ctx.transport, g, opt, cfg, ctx.device, shape,
                                   latent_classes(cfg), self.swap_period(cfg, data), average)
                fresh = (f"{role.core.quorum} fresh ones" if role.core.quorum else
                         "the fresh ones of the workers keeping pace (patience "
                         f"{cfg.staleness_patience:g})")
                plan = (f"staleness bound {cfg.staleness_bound} (feedback scaled "
                        f"{cfg.staleness_scale}), G steps every "
                        f"{ctx.size - 1} feedbacks or {fresh}, "
                        f"{cfg.staleness_batches} batches, "
                        f"one pair of batches of {cfg.batch_size} per version (as K=1)")
            else:
                role = Server(ctx.transport, g, opt, cfg,
                              ctx.device, shape, latent_classes(cfg), average)
                plan = f"K={role.batches} batches of {cfg.batch_size}"
            d_params = count_params(make_discriminator(cfg.model, disc_outputs(cfg), cfg.seed, 1,
                                                       shape))
            ctx.log.info(
                "MD-GAN: 1 server + %d workers, %s %s, model %s%s, G %d params, D %d params, "
                "%s, device %s, iterations %d..%d, swap every %s iterations",
                ctx.size - 1, cfg.dataset, "x".join(map(str, shape)), cfg.model,
                " (ACGAN)" if cfg.acgan else "", count_params(g), d_params, plan,
                ctx.device, ctx.start, cfg.iterations,
                self.swap_period(cfg, data) or "never")
            if cfg.slow:
                ctx.log.info("stragglers (--slow): %s", ", ".join(
                    f"worker {rank} takes {factor:g} times its compute time per step"
                    for rank, factor in sorted(slow_factors(cfg.slow).items())))
            return role
        d = make_discriminator(cfg.model, disc_outputs(cfg), cfg.seed, ctx.rank,
                               shape).to(ctx.device)
        ctx.log.info("worker %d: shard of %d samples, device %s", ctx.rank, len(data.shard),
                     ctx.device)
        factor = slow_factors(cfg.slow).get(ctx.rank)
        if factor is not None:
            ctx.log.info("worker %d: a straggler (--slow %d:%g): it takes %g times its "
                         "compute time per step", ctx.rank, ctx.rank, factor, factor)
        straggler = Straggler(factor) if factor is not None else None
        opt = make_adam(d, cfg.lr_d, cfg.beta1, cfg.beta2, cfg.on_nonfinite == "skip")
        if cfg.staleness_bound:
            return AsyncWorker(ctx.transport, d, opt, data.shard, cfg, ctx.device,
                               feedback_channel(cfg), straggler)
        return Worker(ctx.transport, d, opt, data.shard, cfg, ctx.device,
                      feedback_channel(cfg), self.swap_period(cfg, data), straggler)

    @staticmethod
    def swap_period(cfg, data) -> int:
        """E local epochs of the mean shard (m // b iterations each; 0: never)."""
        return alg.swap_period(cfg.swap_epochs, data.mean_shard, cfg.batch_size)

    def generator(self, role: Server) -> torch.nn.Module:
        """The moving average of G with ``--g-ema``, else G."""
        return role.scored

    def worker_template(self, ctx: Context):
        return worker_template(ctx.cfg)

    def tables(self, ctx: Context):
        tables = {"metrics": mdgan_metrics(ctx.size - 1, bool(ctx.cfg.staleness_bound))}
        if ctx.cfg.staleness_bound:
            tables["schedule"] = schedule_table()
        return tables

    def reader(self, path: str):
        return read_checkpoint(path, self.name, self.config_class, self.table_paths(),
                               ("scores", "schedule", *EVENT_TABLES))


def run(cfg: MdganConfig, comm: MPI.Comm | None = None) -> RunResult:
    """Run MD-GAN on every rank of ``comm`` (collective). Set-up errors raise SetupFailed
    on every rank; later failures abort the job."""
    return run_algorithm(MDGAN(), cfg, comm)


def main(argv: list[str] | None = None) -> int:
    return run_main(MDGAN(), parse_args, argv)
