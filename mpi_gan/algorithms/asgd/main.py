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

from ... import compression

from .roles import AsgdServer, AsgdWorker, evaluate, make_channel, worker_state
from ...io.atomic import atomic_h5
from ...io.checkpoint import CheckpointError, checkpoint_path, prune_checkpoints
from ...config import AsgdConfig, parse_asgd_config, resolved_cache_dir, validate_asgd
from ...data import load_shard, load_test_set
from ...comm.launch import abort_on_exception, agree, start_run
from ...models import count_params, make_classifier
from ...io.runlog import Metrics, read_table, read_traffic, write_common, write_run_file
from ...io.checkpoint import read_entries, write_entries
from ...io.state import Layout, module_state
from ...comm.transport import Transport

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
    worker_states: dict[int, dict[str, torch.Tensor]]


def worker_layout(cfg: AsgdConfig) -> Layout:
    """Layout of a worker's compressor/residual state (empty for stateless compressors)."""
    model = make_classifier(cfg.seed)
    return Layout(worker_state(make_channel(cfg.compress, cfg.residual),
                               [n for n, _ in model.named_parameters()],
                               [tuple(p.shape) for p in model.parameters()]))


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
                traffic_bytes=traffic[0], traffic_messages=traffic[1],
                worker_states={int(name.split("_")[1]): read_entries(f["workers"][name])
                               for name in f.get("workers", {})})
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt or truncated ({exc})") \
            from exc


def write_asgd_checkpoint(path: str, cfg: AsgdConfig, server: AsgdServer, tables, traffic,
                          worker_states: dict[int, dict[str, torch.Tensor]]):
    """Atomic: /config, metrics tables, /traffic, /model (state dict), /server state,
    /workers/worker_<n>/channel/... (compressor and residual state, when there is any)."""
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
        for n, state in sorted(worker_states.items()):
            write_entries(f.create_group(f"workers/worker_{n}"), list(state.items()))
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
    log, ckpt, _ = start_run(comm, cfg, validate_asgd, read_asgd_checkpoint)
    cache = resolved_cache_dir(cfg)
    data = agree(comm, lambda: load_shard(cfg.dataset, cfg.seed, size - 1, rank, cfg.data_dir,
                                          cache, cfg.synthetic_size) if rank > 0 else
                 load_test_set(cfg.dataset, cfg.seed, cfg.eval_size, cfg.data_dir, cache))
    torch.set_num_threads(cfg.threads)
    with abort_on_exception(comm):
        transport = Transport(comm)
        model = make_classifier(cfg.seed)
        layout = worker_layout(cfg)
        start = np.array([ckpt.iteration if ckpt else 0], dtype=np.int64)
        comm.Bcast([start, MPI.INT64_T], root=0)
        if rank == 0:
            return _serve(cfg, transport, model, data, ckpt, log, layout)
        worker = AsgdWorker(transport, model, data, make_channel(cfg.compress, cfg.residual),
                            cfg.batch_size, cfg.seed)
        log.info("worker %d: shard of %d samples, compress %s", rank, len(data), cfg.compress)
        if start[0] > 0 and layout.fields:
            worker.load_state(layout.unpack(transport.recv_into(layout.empty(), 0, "restore")))
        worker.run()
        transport.totals()
        log.info("worker %d: pushed %.1f MB, %.1f s computing", rank, worker.pushed_bytes / 1e6,
                 worker.compute_seconds)
        return AsgdResult(model, pushed_bytes=worker.pushed_bytes)


class _Progress:
    """Per-push bookkeeping of the server: log rows, evaluations, progress lines."""

    def __init__(self, cfg, server, test, log, dense_push):
        self.cfg, self.server, self.test, self.log = cfg, server, test, log
        self.pushes, self.evals = push_table(), eval_table()
        self.tables = {"metrics": self.pushes, "metrics/eval": self.evals}
        self.dense_push = dense_push
        self.start = time.perf_counter()
        self.window = (self.start, server.version)

    def record(self, row: dict) -> None:
        cfg, v = self.cfg, self.server.version
        self.pushes.append(**row, seconds=time.perf_counter() - self.start)
        if v % cfg.eval_every == 0 or v == cfg.iterations:
            accuracy, loss = evaluate(self.server.model_with_theta(), self.test)
            self.evals.append(push=v, accuracy=accuracy, loss=loss)
        if v % cfg.log_every == 0 or v == cfg.iterations:
            rate = (v - self.window[1]) / (time.perf_counter() - self.window[0])
            self.window = (time.perf_counter(), v)
            received = int(np.sum(self.pushes.rows["bytes"]))
            self.log.info("push %d/%d  %.0f pushes/s  test accuracy %.4f  worker->server "
                          "%.2f MB (%.1fx smaller than uncompressed)", v, cfg.iterations, rate,
                          self.evals.rows["accuracy"][-1] if len(self.evals) else float("nan"),
                          received / 1e6, self.dense_push * len(self.pushes) / max(received, 1))


def _serve(cfg, transport, model, test, ckpt, log, layout) -> AsgdResult:
    server = AsgdServer(transport, model, cfg.lr, cfg.staleness == "adacomp")
    dense_push = 8 + sum(compression.get("none").compress(p.detach(), n).nbytes
                         for n, p in model.named_parameters())
    progress = _Progress(cfg, server, test, log, dense_push)
    if ckpt is not None:
        server.theta.copy_(ckpt.theta)
        server.touches.copy_(ckpt.touches)
        server.push_counts[:] = ckpt.push_counts
        server.version = ckpt.iteration
        for name, table in progress.tables.items():
            table.load(ckpt.tables[name])
        transport.add_base(ckpt.traffic_bytes, ckpt.traffic_messages)
        if layout.fields:
            server.restore_states(layout, ckpt.worker_states)
        log.info("resumed from %s at push %d", ckpt.path, ckpt.iteration)
    progress.window = (progress.start, server.version)
    log.info("ASGD: 1 server + %d workers, AdaComp CNN %d params, compress %s%s, staleness %s, "
             "lr %g, pushes %d..%d (an uncompressed push is %d bytes)", transport.size - 1,
             count_params(model), cfg.compress, " + residual" if cfg.residual else "",
             cfg.staleness, cfg.lr, server.version, cfg.iterations, dense_push)
    for w in server.workers:
        server.send_pull(w)
    every = cfg.checkpoint_every
    next_checkpoint = (server.version // every + 1) * every if every else None
    while server.version < cfg.iterations:
        worker, buf = server.receive_push()
        progress.record(server.apply(worker, buf))
        if server.version >= cfg.iterations:
            break
        if next_checkpoint is not None and server.version >= next_checkpoint:
            states = _quiesce(cfg, server, progress, layout)
            _write_checkpoint(cfg, server, progress, transport.local_view(), states)
            next_checkpoint = (server.version // every + 1) * every
            if server.version >= cfg.iterations:
                break
            for w in server.workers:
                if w not in server.computing:
                    server.send_pull(w)
            continue
        server.send_pull(worker)
    states = _quiesce(cfg, server, progress, layout)  # the target is reached: nothing applied
    for w in server.workers:
        server.send_stop(w)
    traffic = transport.totals()
    result = AsgdResult(model)
    result.checkpoint = _write_checkpoint(cfg, server, progress, traffic, states)
    result.run_file = os.path.join(cfg.out, "run.h5")
    write_run_file(result.run_file, "mpi-gan-asgd-run", cfg, transport.size, server.version,
                   progress.tables, *traffic, "model", module_state(server.model_with_theta()),
                   finished=True)
    log.info("final test accuracy %.4f after %d pushes; run file %s",
             progress.evals.rows["accuracy"][-1], server.version, result.run_file)
    result.model = server.model_with_theta()
    return result


def _quiesce(cfg, server, progress, layout) -> dict[int, dict[str, torch.Tensor]]:
    """Let every in-flight push land, then collect the idle workers' compressor states.

    Pushes are applied while the server is below --iterations and discarded after
    (counted in the traffic either way). Without worker state to save (a stateless
    compressor, no --residual) nothing waits: returns {} at once, unless this is
    the end of the run (the caller then stops the workers, who must be idle).
    """
    if not layout.fields and server.version < cfg.iterations:
        return {}
    while server.computing:
        worker, buf = server.receive_push()
        if server.version < cfg.iterations:
            progress.record(server.apply(worker, buf))
    return server.gather_states(layout) if layout.fields else {}


def _write_checkpoint(cfg, server, progress, traffic, states) -> str:
    path = checkpoint_path(cfg.out, server.version)
    write_asgd_checkpoint(path, cfg, server, progress.tables, traffic, states)
    prune_checkpoints(cfg.out, cfg.keep_checkpoints)
    return path


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
