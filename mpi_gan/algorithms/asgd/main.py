"""Asynchronous parameter-server SGD with AdaComp on the training skeleton:
``mpiexec -n N+1 python -m mpi_gan.asgd``.

Rank 0 holds the AdaComp paper's CNN and applies each worker's push the
moment it arrives (any source, no barrier), with AdaComp's staleness-aware step
(``--staleness adacomp``) or a plain one; ranks 1..N pull the model with its
version, compute a gradient on a batch of their shard, compress it
(``--compress``) and push. Accuracy is logged every ``--eval-every`` pushes, on
``--validation`` training samples held out from every shard (then on the test set
once, at the end) or, without them, on the test set; every byte is counted by
link and kind in ``<out>/run.h5`` (docs/asgd.md).
"""
from __future__ import annotations

import numpy as np
from mpi4py import MPI
from torch import nn

from .config import AsgdConfig, parse_args
from ...algorithms import REGISTRY
from ...data import open_dataset, plan_data, spec_of
from ...io.runlog import Metrics
from ...models import count_params, make_classifier
from ...train import Algorithm, Context, RunResult, run_algorithm, run_main
from .protocol import KINDS, make_channel, worker_state
from .server import AsgdServer
from .worker import AsgdWorker


def push_table() -> Metrics:
    """One row per applied push: push number, worker rank, version it pulled, delay
    (pushes applied in between), values sent, max and sum of the staleness tau over
    the sent indices, bytes of the push message, seconds since the run (re)started."""
    i64 = (np.int64, ())
    return Metrics({"push": i64, "worker": i64, "t_pull": i64, "delay": i64, "sent": i64,
                    "tau_max": i64, "tau_sum": i64, "bytes": i64, "seconds": (np.float64, ())})


class EvalTable(Metrics):
    """One row per evaluation: push number, accuracy, mean cross-entropy, and on which
    samples: ``validation`` 1 for the held-out training samples (``--validation``), 0 for
    the test set. Rows of checkpoints written before the column existed were all on the
    test set (0)."""

    def __init__(self):
        super().__init__({"push": (np.int64, ()), "accuracy": (np.float64, ()),
                          "loss": (np.float64, ()), "validation": (np.int64, ())})

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        if arrays and "validation" not in arrays:
            arrays = {**arrays, "validation": np.zeros(len(arrays["push"]), np.int64)}
        super().load(arrays)


def eval_table() -> Metrics:
    """The evaluation table (``EvalTable``)."""
    return EvalTable()


def make_model(cfg: AsgdConfig) -> nn.Module:
    """The AdaComp CNN for the dataset's shape and classes, seeded."""
    spec = spec_of(cfg)
    return make_classifier(cfg.seed, spec.shape, spec.classes)


def worker_template(cfg: AsgdConfig):
    """A worker's compressor/residual state entries ([] for stateless compressors)."""
    model = make_model(cfg)
    return worker_state(make_channel(cfg.compress, cfg.residual),
                        [n for n, _ in model.named_parameters()],
                        [tuple(p.shape) for p in model.parameters()])


class ASGD(Algorithm):
    registered = REGISTRY["asgd"]  # name, run format, configuration and its check
    kinds = KINDS
    model_group = "model"
    synchronous = False

    def table_paths(self):
        return ("metrics", "metrics/eval")

    def load_data(self, ctx: Context):
        """Workers: their shard (of the training samples not held out). Server: the first
        ``--eval-size`` test samples as ``shard``, and with ``--validation`` the held-out
        training samples as ``validation``."""
        plan = plan_data(ctx.cfg, ctx.size - 1, ctx.rank)
        if ctx.rank == 0:
            dataset = open_dataset(ctx.cfg)
            plan.shard = dataset.test_set(ctx.cfg.eval_size)
            if plan.validation_indices is not None:
                plan.validation = dataset.train_rows(plan.validation_indices)
        return plan

    def make_role(self, ctx: Context):
        cfg, model = ctx.cfg, make_model(ctx.cfg)
        if ctx.rank == 0:
            ctx.log.info("ASGD: 1 server + %d workers, AdaComp CNN %d params, compress %s%s, "
                         "staleness %s, lr %g, pushes %d..%d", ctx.size - 1, count_params(model),
                         cfg.compress,
                         " + residual" if cfg.residual and cfg.compress != "none" else "",
                         cfg.staleness,
                         cfg.lr, ctx.start, cfg.iterations)
            held = ctx.data.validation
            ctx.log.info("evaluation every %d pushes on %s", cfg.eval_every,
                         f"{len(held)} held-out training samples (validation), on "
                         f"{len(ctx.data.shard)} test samples once at the end" if held is not None
                         else f"{len(ctx.data.shard)} test samples")
            server = AsgdServer(ctx.transport, model, cfg.lr, cfg.staleness == "adacomp",
                                ctx.data.shard, cfg.eval_every, cfg.iterations, held)
            server.skip_nonfinite = cfg.on_nonfinite == "skip"
            server.skip_limit = cfg.log_every
            return server
        ctx.log.info("worker %d: shard of %d samples, compress %s, device %s", ctx.rank,
                     len(ctx.data.shard), cfg.compress, ctx.device)
        return AsgdWorker(ctx.transport, model.to(ctx.device), ctx.data.shard,
                          make_channel(cfg.compress, cfg.residual), cfg.batch_size, cfg.seed,
                          ctx.rank)

    def worker_template(self, ctx: Context):
        return worker_template(ctx.cfg)

    def tables(self, ctx: Context):
        return {"metrics": push_table(), "metrics/eval": eval_table()}

    def summary(self, result):
        role = result.role
        if role.validation is None:
            return [f"final test accuracy {role.accuracy:.4f} after {role.version} pushes"]
        test = (f"final test accuracy {role.test_accuracy:.4f}" if role.test_accuracy ==
                role.test_accuracy else "no test evaluation (it runs once, at --iterations)")
        return [f"final validation accuracy {role.accuracy:.4f} ({len(role.validation)} held-out "
                f"training samples), {test} after {role.version} pushes"]


def run_asgd(cfg: AsgdConfig, comm: MPI.Comm | None = None) -> RunResult:
    """Collective over ``comm``: rank 0 serves, the others work."""
    return run_algorithm(ASGD(), cfg, comm)


def main(argv: list[str] | None = None) -> int:
    return run_main(ASGD(), parse_args, argv)
