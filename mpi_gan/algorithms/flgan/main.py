"""FL-GAN on the training skeleton: ``mpiexec -n N+1 python -m mpi_gan.flgan [options]``.

Ranks 1..N each train a full GAN (G and D, MD-GAN's losses and Adam settings) on
their shard; after every round (``--round-epochs`` local epochs, the paper's 1,
or ``--round-every`` iterations) rank 0 averages all G and D weighted by shard
size and sends the averages back. ``--iterations`` counts local G updates per
worker, so MD-GAN and FL-GAN runs compare at equal G updates. The server's
averaged G is the one in the run file.
"""
from __future__ import annotations

from mpi4py import MPI

from .config import FlganConfig, parse_args
from ...algorithms import REGISTRY
from ...io.runlog import gan_table
from ...models import count_params
from ...train import Algorithm, Context, RunResult, run_algorithm, run_main
from ...config import local_settings
from ...gan.local import LocalGAN
from .protocol import KINDS, round_period
from .server import FlganServer
from .worker import FlganWorker


class FLGAN(Algorithm):
    registered = REGISTRY["flgan"]  # name, run format, configuration and its check
    kinds = KINDS
    model_group = "generator"
    evaluates = True

    def make_role(self, ctx: Context):
        cfg, data = ctx.cfg, ctx.data
        period = round_period(cfg, data.mean_shard)
        local = LocalGAN(local_settings(cfg), data.spec.shape, data.shard, ctx.rank, ctx.device)
        if ctx.rank == 0:
            ctx.log.info("FL-GAN: 1 server + %d workers, %s %s, model %s%s, G %d params, "
                         "D %d params, batch %d, device %s, iterations %d..%d, a round every "
                         "%d iterations", ctx.size - 1, cfg.dataset,
                         "x".join(map(str, data.spec.shape)), cfg.model,
                         " (ACGAN)" if cfg.acgan else "", count_params(local.g),
                         count_params(local.d), cfg.batch_size, ctx.device, ctx.start,
                         cfg.iterations, period)
            if cfg.iterations % period:
                ctx.log.warning("--iterations %d is not a multiple of the round length %d: the "
                                "last %d iterations are not in the server's averaged G",
                                cfg.iterations, period, cfg.iterations % period)
            return FlganServer(ctx.transport, local.g, local.d, data.shard_sizes, period)
        ctx.log.info("worker %d: shard of %d samples, device %s", ctx.rank, len(data.shard),
                     ctx.device)
        return FlganWorker(ctx.transport, local, period)

    def worker_template(self, ctx: Context):
        local = LocalGAN(local_settings(ctx.cfg), ctx.data.spec.shape, None, 1)
        return FlganWorker(None, local, 1).state()

    def tables(self, ctx: Context):
        return {"metrics": gan_table(ctx.size - 1, "server_bytes_in")}


def run(cfg: FlganConfig, comm: MPI.Comm | None = None) -> RunResult:
    """Run FL-GAN on every rank of ``comm`` (collective)."""
    return run_algorithm(FLGAN(), cfg, comm)


def main(argv: list[str] | None = None) -> int:
    return run_main(FLGAN(), parse_args, argv)
