"""Per-iteration metrics and the parts of HDF5 outputs shared by run files and checkpoints.

Groups written by ``write_common`` (layout in docs/hdf5.md):
  /config                      attributes: every Config field
  /metrics/<name>              chunked, extendable datasets, one row per iteration
  /traffic/bytes, /messages    int64 (world, world) [source, destination] totals
  /traffic/kinds/<kind>/bytes, /messages   the same per message kind
"""
from __future__ import annotations

import h5py
import numpy as np

from ..comm.transport import KINDS


class Metrics:
    """Rows of per-step records kept in memory and written with each file.

    ``columns``: name -> (numpy dtype, shape of one row's value, () for scalars).
    """

    def __init__(self, columns: dict[str, tuple]):
        self.columns = columns
        self.rows: dict[str, list] = {c: [] for c in columns}

    def append(self, **values) -> None:
        if values.keys() != self.columns.keys():
            raise ValueError(f"metrics row has {sorted(values)}, expected {sorted(self.columns)}")
        for column, value in values.items():
            self.rows[column].append(value)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for c, (dtype, shape) in self.columns.items():
            rows = self.rows[c]
            out[c] = np.asarray(rows, dtype=dtype) if rows else np.zeros((0, *shape), dtype)
        return out

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace the rows by stored arrays (used when resuming)."""
        self.rows = {c: list(arrays[c]) for c in self.columns}

    def __len__(self) -> int:
        return len(next(iter(self.rows.values()))) if self.rows else 0


def mdgan_metrics(workers: int) -> Metrics:
    """MD-GAN's per-iteration table.

    iteration (int64, G updates done), seconds (float64, wall time of the
    iteration on rank 0), d_loss and g_loss (float32 (N,): each worker's D loss
    averaged over its L steps and its mean generator loss on X_g),
    server_bytes_out (int64, cumulative bytes sent by rank 0).
    """
    return Metrics({"iteration": (np.int64, ()), "seconds": (np.float64, ()),
                    "d_loss": (np.float32, (workers,)), "g_loss": (np.float32, (workers,)),
                    "server_bytes_out": (np.int64, ())})


def write_common(f, cfg, tables: dict[str, Metrics], traffic_bytes: np.ndarray,
                 traffic_messages: np.ndarray) -> None:
    """Write /config, the metric tables and /traffic into the open h5py file ``f``.

    tables: group path (e.g. ``metrics``, ``metrics/eval``) -> Metrics, written as
    chunked datasets extendable along rows. traffic_*: int64 (len(KINDS), world,
    world) [kind, source, destination].
    """
    config = f.create_group("config")
    for key, value in cfg.as_attrs().items():
        config.attrs[key] = value
    for path, table in tables.items():
        group = f.require_group(path)
        for name, array in table.arrays().items():
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


def read_table(f, path: str = "metrics") -> dict[str, np.ndarray]:
    """The datasets directly inside group ``path`` (a metrics table) as arrays."""
    group = f[path]
    return {name: group[name][()] for name in group if isinstance(group[name], h5py.Dataset)}


def write_run_file(path: str, fmt: str, cfg, world_size: int, iteration: int,
                   tables: dict[str, Metrics], traffic_bytes: np.ndarray,
                   traffic_messages: np.ndarray, model_group: str, model_entries,
                   finished: bool) -> None:
    """(Re)write a run file (``<out>/run.h5``) atomically.

    Holds /config, the metric tables, /traffic and ``/<model_group>/model/<key>``
    (the trained model's weights at ``iteration``) for offline analysis; root
    attrs format, iteration, world_size, finished.
    """
    from .atomic import atomic_h5

    with atomic_h5(path) as f:
        f.attrs.update({"format": fmt, "iteration": iteration, "world_size": world_size,
                        "finished": int(finished)})
        write_common(f, cfg, tables, traffic_bytes, traffic_messages)
        group = f.create_group(model_group)
        for name, tensor in model_entries:
            if name.startswith("model/"):
                group.create_dataset(name, data=tensor.detach().cpu().numpy())
