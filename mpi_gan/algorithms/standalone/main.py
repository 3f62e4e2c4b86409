"""The standalone GAN on the training skeleton: ``python -m mpi_gan.standalone [options]``.

One process trains one G and one D on the whole training set, with the same
datasets, models, losses, Adam settings, run file and checkpoints as the
distributed algorithms: the reference point of the paper's comparison.
"""
from __future__ import annotations

import time

import torch
from mpi4py import MPI

from ...algorithms import REGISTRY
from ...config import GanConfig, local_settings
from .config import parse_args
from ...data import plan_data
from ...io.runlog import gan_table
from ...io.state import module_state
from ...models import count_params
from ...train import Algorithm, Context, RunResult, run_algorithm, run_main
from ...gan.local import LocalGAN


class StandaloneRole:
    """The one GAN; every iteration is a metrics row."""

    def __init__(self, local: LocalGAN):
        self.local, self.last = local, None

    def step(self, iteration: int):
        tic = time.perf_counter()
        d_loss, g_loss = self.local.step(iteration)
        self.last = dict(iteration=iteration + 1, seconds=time.perf_counter() - tic,
                         d_loss=[d_loss], g_loss=[g_loss], samples_seen=(iteration + 1) *
                         self.local.cfg.batch_size)
        return [("metrics", self.last)]

    def progress(self) -> str:
        return f"D loss {self.last['d_loss'][0]:.4f}  G loss {self.last['g_loss'][0]:.4f}"

    def state(self) -> list[tuple[str, torch.Tensor]]:
        return self.local.state()

    def load_state(self, values) -> None:
        self.local.load_state(values)

    def published(self) -> list[tuple[str, torch.Tensor]]:
        """What the run file holds: the scored generator (the average with --g-ema)."""
        return module_state(self.local.scored)


class Standalone(Algorithm):
    registered = REGISTRY["standalone"]  # name, run format, configuration and its check
    kinds = ()
    model_group = "generator"
    evaluates = True

    def load_data(self, ctx: Context):
        return plan_data(ctx.cfg, 1, 1)  # the whole training set (its i.i.d. order)

    def make_role(self, ctx: Context):
        cfg, data = ctx.cfg, ctx.data
        local = LocalGAN(local_settings(cfg), data.spec.shape, data.shard, 1, ctx.device)
        ctx.log.info("standalone GAN: %s %s, %d samples, model %s%s, G %d params, D %d params, "
                     "batch %d, device %s, iterations %d..%d", cfg.dataset,
                     "x".join(map(str, data.spec.shape)), len(data.shard), cfg.model,
                     " (ACGAN)" if cfg.acgan else "", count_params(local.g),
                     count_params(local.d), cfg.batch_size, ctx.device, ctx.start,
                     cfg.iterations)
        return StandaloneRole(local)

    def tables(self, ctx: Context):
        return {"metrics": gan_table(1, "samples_seen")}

    def generator(self, role: StandaloneRole) -> torch.nn.Module:
        return role.local.scored


def run(cfg: GanConfig, comm: MPI.Comm | None = None) -> RunResult:
    return run_algorithm(Standalone(), cfg, comm)


def main(argv: list[str] | None = None) -> int:
    return run_main(Standalone(), parse_args, argv)
