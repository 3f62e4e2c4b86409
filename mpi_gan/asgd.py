"""Asynchronous parameter-server SGD with AdaComp: ``mpiexec -n N+1 python -m mpi_gan.asgd``.

Rank 0 holds the AdaComp paper's MNIST CNN and applies each worker's push the
moment it arrives (any source, no barrier), with AdaComp's staleness-aware step
(``--staleness adacomp``) or a plain one; ranks 1..N pull the model with its
version, compute a gradient on a batch of their shard, compress it
(``--compress``) and push. Test accuracy is logged every ``--eval-every`` pushes;
every byte is counted by link and kind in ``<out>/run.h5`` (docs/asgd.md).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import h5py
import numpy as np
import torch
from mpi4py import MPI

import compression

from .asgd_roles import AsgdServer, AsgdWorker, evaluate
from .atomic import atomic_h5
from .checkpoint import CheckpointError, checkpoint_path, load_resume, prune_checkpoints
from .config import AsgdConfig, parse_asgd_config, resolved_cache_dir, validate_asgd
from .data import ensure_mnist_cache, load_shard, load_test_set
from .launch import abort_on_exception, agree, local_rank, prepare_out, setup_logging
from .models import count_params, make_classifier
from .runlog import Metrics, read_table, read_traffic, write_common, write_run_file
from .state import module_state
from .transport import Transport

FORMAT = "mpi-gan-asgd-checkpoint"


def push_table() -> Metrics:
    """One row per applied push: push number, worker rank, version it pulled, delay
    (pushes applied in between), values sent, max and sum of the staleness tau over
    the sent indices, bytes of the push message, seconds since the run (re)started."""
    i64 = (np.int64, ())
    return Metrics({"push": i64, "worker": i64, "t_pull": i64, "delay": i64, "sent": i64,
                    "tau_max": i64, "tau_sum": i64, "bytes": i64, "seconds": (np.float64, ())})


def eval_table() -> Metrics:
    """One row per evaluation: push number, test accuracy, mean test cross-entropy."""
    return Metrics({"push": (np.int64, ()), "accuracy": (np.float64, ()),
                    "loss": (np.float64, ())})


@dataclass
class AsgdCheckpoint:
    path: str
    config: AsgdConfig
    iteration: int
    world_size: int
    theta: torch.Tensor
    touches: torch.Tensor
    push_counts: np.ndarray
    tables: dict[str, dict[str, np.ndarray]]
    traffic_bytes: np.ndarray
    traffic_messages: np.ndarray


def read_asgd_checkpoint(path: str) -> AsgdCheckpoint:
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT or int(f.attrs.get("complete", 0)) != 1:
                raise CheckpointError(f"{path} is not a complete mpi-gan ASGD checkpoint")
            traffic = read_traffic(f)
            return AsgdCheckpoint(
                path=path, config=AsgdConfig.from_attrs(f["config"].attrs),
                iteration=int(f.attrs["iteration"]), world_size=int(f.attrs["world_size"]),
                theta=torch.from_numpy(f["server/theta"][()]),
                touches=torch.from_numpy(f["server/touches"][()]),
                push_counts=f["server/push_counts"][()],
                tables={"metrics": read_table(f, "metrics"),
                        "metrics/eval": read_table(f, "metrics/eval")},
                traffic_bytes=traffic[0], traffic_messages=traffic[1])
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt or truncated ({exc})") \
            from exc


def write_asgd_checkpoint(path: str, cfg: AsgdConfig, server: AsgdServer, tables, traffic):
    """Atomic: /config, metrics tables, /traffic, /model (state dict), /server state."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_h5(path) as f:
        f.attrs.update({"format": FORMAT, "format_version": 1, "iteration": server.version,
                        "world_size": server.t.size})
        write_common(f, cfg, tables, *traffic)
        model = f.create_group("model")
        for name, tensor in module_state(server.model_with_theta()):
            model.create_dataset(name, data=tensor.detach().numpy())
        f.create_dataset("server/theta", data=server.theta.numpy())
        f.create_dataset("server/touches", data=server.touches.numpy())
        f.create_dataset("server/push_counts", data=server.push_counts)
        f.attrs["complete"] = 1


@dataclass
class AsgdResult:
    model: torch.nn.Module
    run_file: str | None = None
    checkpoint: str | None = None
    pushed_bytes: int = 0  # worker: bytes of every push it sent


def run_asgd(cfg: AsgdConfig, comm: MPI.Comm | None = None) -> AsgdResult:
    """Collective over ``comm``: rank 0 serves, the others work."""
    comm = comm if comm is not None else MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    agree(comm, lambda: validate_asgd(cfg, size))
    log = setup_logging(agree(comm, lambda: prepare_out(cfg.out, rank)), rank)
    ckpt = agree(comm, lambda: load_resume(cfg, size, read_asgd_checkpoint)
                 if rank == 0 else None)
    local = local_rank(comm)
    cache = resolved_cache_dir(cfg)
    needs_cache = cfg.dataset == "mnist" and not cfg.data_dir and local == 0
    agree(comm, lambda: ensure_mnist_cache(cache) if needs_cache else None)
    data = agree(comm, lambda: load_shard(cfg.dataset, cfg.seed, size - 1, rank, cfg.data_dir,
                                          cache, cfg.synthetic_size) if rank > 0 else
                 load_test_set(cfg.dataset, cfg.seed, cfg.eval_size, cfg.data_dir, cache))
    torch.set_num_threads(cfg.threads)
    with abort_on_exception(comm):
        transport = Transport(comm)
        model = make_classifier(cfg.seed)
        if rank == 0:
            return _serve(cfg, transport, model, data, ckpt, log)
        worker = AsgdWorker(transport, model, data, compression.Channel(
            compression.parse_spec(cfg.compress),
            compression.ResidualMemory() if cfg.residual else None), cfg.batch_size, cfg.seed)
        log.info("worker %d: shard of %d samples, compress %s", rank, len(data), cfg.compress)
        worker.run()
        transport.totals()
        log.info("worker %d: pushed %.1f MB, %.1f s computing", rank, worker.pushed_bytes / 1e6,
                 worker.compute_seconds)
        return AsgdResult(model, pushed_bytes=worker.pushed_bytes)


def _serve(cfg, transport, model, test, ckpt, log) -> AsgdResult:
    server = AsgdServer(transport, model, cfg.lr, cfg.staleness == "adacomp")
    pushes, evals = push_table(), eval_table()
    tables = {"metrics": pushes, "metrics/eval": evals}
    if ckpt is not None:
        server.theta.copy_(ckpt.theta)
        server.touches.copy_(ckpt.touches)
        server.push_counts[:] = ckpt.push_counts
        server.version = ckpt.iteration
        for name, table in tables.items():
            table.load(ckpt.tables[name])
        transport.add_base(ckpt.traffic_bytes, ckpt.traffic_messages)
        log.info("resumed from %s at push %d", ckpt.path, ckpt.iteration)
    dense_push = 8 + sum(compression.get("none").compress(p.detach(), n).nbytes
                         for n, p in model.named_parameters())
    log.info("ASGD: 1 server + %d workers, AdaComp CNN %d params, compress %s%s, staleness %s, "
             "lr %g, pushes %d..%d (an uncompressed push is %d bytes)", transport.size - 1,
             count_params(model), cfg.compress, " + residual" if cfg.residual else "",
             cfg.staleness, cfg.lr, server.version, cfg.iterations, dense_push)
    start = time.perf_counter()
    window = (start, server.version)
    for w in server.workers:
        server.send_pull(w)
    result = AsgdResult(model)
    while server.version < cfg.iterations:
        worker, buf = server.receive_push()
        row = server.apply(worker, buf)
        pushes.append(**row, seconds=time.perf_counter() - start)
        v = server.version
        if v % cfg.eval_every == 0 or v == cfg.iterations:
            accuracy, loss = evaluate(server.model_with_theta(), test)
            evals.append(push=v, accuracy=accuracy, loss=loss)
        if v % cfg.log_every == 0 or v == cfg.iterations:
            rate = (v - window[1]) / (time.perf_counter() - window[0])
            window = (time.perf_counter(), v)
            received = int(np.sum(pushes.rows["bytes"]))
            log.info("push %d/%d  %.0f pushes/s  test accuracy %.4f  worker->server %.2f MB "
                     "(%.1fx smaller than uncompressed)", v, cfg.iterations, rate,
                     evals.rows["accuracy"][-1] if len(evals) else float("nan"), received / 1e6,
                     dense_push * len(pushes) / max(received, 1))
        if v == cfg.iterations:
            break
        server.send_pull(worker)
        if cfg.checkpoint_every and v % cfg.checkpoint_every == 0:
            path = checkpoint_path(cfg.out, v)
            write_asgd_checkpoint(path, cfg, server, tables, transport.local_view())
            prune_checkpoints(cfg.out, cfg.keep_checkpoints)
    # stop everyone: the last pusher now, the others after their in-flight push
    server.send_stop(worker)
    for _ in range(len(server.workers) - 1):
        other, _ = server.receive_push()  # computed on a stale model: counted, not applied
        server.send_stop(other)
    traffic = transport.totals()
    result.checkpoint = checkpoint_path(cfg.out, server.version)
    write_asgd_checkpoint(result.checkpoint, cfg, server, tables, traffic)
    prune_checkpoints(cfg.out, cfg.keep_checkpoints)
    result.run_file = os.path.join(cfg.out, "run.h5")
    write_run_file(result.run_file, "mpi-gan-asgd-run", cfg, transport.size, server.version,
                   tables, *traffic, "model", module_state(server.model_with_theta()),
                   finished=True)
    log.info("final test accuracy %.4f after %d pushes; run file %s",
             evals.rows["accuracy"][-1], server.version, result.run_file)
    result.model = server.model_with_theta()
    return result


def main(argv: list[str] | None = None) -> int:
    comm = MPI.COMM_WORLD
    cfg = parse_asgd_config(sys.argv[1:] if argv is None else argv, quiet=comm.Get_rank() != 0)
    result = run_asgd(cfg, comm)
    if comm.Get_rank() == 0:
        print(f"done: run file {os.path.abspath(result.run_file)}, checkpoint "
              f"{os.path.abspath(result.checkpoint)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
