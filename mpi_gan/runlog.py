"""Per-iteration metrics and the parts of HDF5 outputs shared by run files and checkpoints.

Groups written by ``write_common`` (layout in docs/hdf5.md):
  /config                      attributes: every Config field
  /metrics/<name>              chunked, extendable datasets, one row per iteration
  /traffic/bytes, /messages    int64 (world, world) [source, destination] totals
  /traffic/kinds/<kind>/bytes, /messages   the same per message kind
"""
from __future__ import annotations

import numpy as np

from .config import Config
from .transport import KINDS


class Metrics:
    """Per-iteration records of a run, kept in memory and written with each file.

    Rows: iteration (int64, 1-based count of G updates done), seconds (float64,
    wall time of the iteration on rank 0), d_loss and g_loss (float32, shape
    (rows, N): each worker's D loss averaged over its L steps and its mean
    generator loss on X_g), server_bytes_out (int64, cumulative bytes sent by rank 0).
    """

    COLUMNS = ("iteration", "seconds", "d_loss", "g_loss", "server_bytes_out")
    DTYPES = {"iteration": np.int64, "seconds": np.float64, "d_loss": np.float32,
              "g_loss": np.float32, "server_bytes_out": np.int64}

    def __init__(self, workers: int):
        self.workers = workers
        self.rows: dict[str, list] = {c: [] for c in self.COLUMNS}

    def append(self, iteration: int, seconds: float, d_loss: np.ndarray, g_loss: np.ndarray,
               server_bytes_out: int) -> None:
        for column, value in zip(self.COLUMNS, (iteration, seconds, d_loss, g_loss,
                                                server_bytes_out)):
            self.rows[column].append(value)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for c in self.COLUMNS:
            shape = (0, self.workers) if c in ("d_loss", "g_loss") else (0,)
            rows = self.rows[c]
            out[c] = np.asarray(rows, dtype=self.DTYPES[c]) if rows else np.zeros(shape, self.DTYPES[c])
        return out

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace the rows by stored arrays (used when resuming)."""
        self.rows = {c: list(arrays[c]) for c in self.COLUMNS}

    def __len__(self) -> int:
        return len(self.rows["iteration"])


def write_common(f, cfg: Config, metrics: Metrics, traffic_bytes: np.ndarray,
                 traffic_messages: np.ndarray) -> None:
    """Write /config, /metrics and /traffic into the open h5py file ``f``.

    traffic_*: int64 (len(KINDS), world, world) [kind, source, destination].
    """
    config = f.create_group("config")
    for key, value in cfg.as_attrs().items():
        config.attrs[key] = value
    group = f.create_group("metrics")
    for name, array in metrics.arrays().items():
        maxshape = (None,) + array.shape[1:]
        group.create_dataset(name, data=array, maxshape=maxshape, chunks=True)
    traffic = f.create_group("traffic")
    traffic.attrs["kinds"] = ",".join(KINDS)
    traffic.attrs["header_bytes_per_message"] = 0
    traffic.create_dataset("bytes", data=traffic_bytes.sum(axis=0))
    traffic.create_dataset("messages", data=traffic_messages.sum(axis=0))
    for i, kind in enumerate(KINDS):
        g = traffic.create_group(f"kinds/{kind}")
        g.create_dataset("bytes", data=traffic_bytes[i])
        g.create_dataset("messages", data=traffic_messages[i])


def read_traffic(f) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, messages) per kind, int64 (len(KINDS), world, world), from an open file."""
    by = np.stack([f[f"traffic/kinds/{k}/bytes"][()] for k in KINDS])
    msg = np.stack([f[f"traffic/kinds/{k}/messages"][()] for k in KINDS])
    return by, msg


def read_metrics(f) -> dict[str, np.ndarray]:
    return {c: f[f"metrics/{c}"][()] for c in Metrics.COLUMNS}


def write_run_file(path: str, cfg: Config, world_size: int, iteration: int, metrics: Metrics,
                   traffic_bytes: np.ndarray, traffic_messages: np.ndarray,
                   generator_entries, finished: bool) -> None:
    """(Re)write the run file ``<out>/run.h5`` atomically.

    Holds /config, /metrics, /traffic and /generator/model/<key> (G's weights at
    ``iteration``) for offline analysis; attrs iteration, world_size, finished.
    """
    from .atomic import atomic_h5

    with atomic_h5(path) as f:
        f.attrs.update({"format": "mpi-gan-mdgan-run", "iteration": iteration,
                        "world_size": world_size, "finished": int(finished)})
        write_common(f, cfg, metrics, traffic_bytes, traffic_messages)
        group = f.create_group("generator")
        for name, tensor in generator_entries:
            if name.startswith("model/"):
                group.create_dataset(name, data=tensor.detach().cpu().numpy())
