"""Metric tables, the run file, and the groups it shares with checkpoints.

Groups written by ``write_common`` (layout in docs/hdf5.md):
  /config                      attributes: every config field
  /metrics/<name>, /metrics/<table>/<name>   chunked, extendable datasets, one row per record
  /traffic                     the counters of the links used (io/traffic.py)
  /data/<name>                 facts about the data (label histogram, shard sizes)

The run file (``RunFile``) is written once at start-up (atomically), then metric
rows are appended to it as they come and the model, traffic and progress
attributes are updated in place at every checkpoint; whole tables are never
rewritten. A checkpoint holds the tables too (in row segments, ``io/rows.py``), so
resuming rebuilds the run file exactly as it was at that checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import h5py
import numpy as np

from . import integrity, traffic as links
from .lock import ensure_held
from .atomic import atomic_h5, disk_full_errors


RUN_FILE = "run file"  # the run file's name as a store of rows (``Metrics.stored``)
# rank 0's tables of events (workers lost, resumes on another world size, launches, stops
# by a signal): in the run files and checkpoints written since each table began
EVENT_TABLES = ("faults", "elastic", "launches", "stops")


class Metrics:
    """Rows of per-step records kept in memory; ``columns``: name -> (numpy dtype, shape of
    one row's value, () for scalars)."""

    def __init__(self, columns: dict[str, tuple]):
        self.columns = columns
        self.rows: dict[str, list] = {c: [] for c in columns}
        # each store of the rows (the run file, the checkpoints' row segments) -> how many
        # rows it holds (lowered by a truncation), and the stores holding rows past that
        self.stored: dict[str, int] = {}
        self.stale: set[str] = set()
        self.widened: set[str] = set()  # per-worker columns ``load`` made wider

    def append(self, **values) -> None:
        """One row; a per-worker value narrower than a column ``load`` widened (a run
        resumed on fewer workers than it had) is padded with NaN."""
        if values.keys() != self.columns.keys():
            raise ValueError(f"metrics row has {sorted(values)}, expected {sorted(self.columns)}")
        for column, value in values.items():
            self.rows[column].append(self._padded(column, value))

    def _padded(self, column: str, value):
        if column not in self.widened:
            return value
        dtype, shape = self.columns[column]
        value = np.asarray(value, dtype=dtype)
        if value.shape[0] >= shape[0]:
            return value
        return np.concatenate([value, np.full(shape[0] - value.shape[0], np.nan, dtype)])

    def arrays(self, start: int = 0) -> dict[str, np.ndarray]:
        """Every column from row ``start`` on, as arrays."""
        out = {}
        for c, (dtype, shape) in self.columns.items():
            rows = self.rows[c][start:]
            out[c] = np.asarray(rows, dtype=dtype) if rows else np.zeros((0, *shape), dtype)
        return out

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace the rows by stored arrays (used when resuming). A floating-point column
        the stored table lacks (a score added by a later version) is filled with NaN; a
        missing column of another type is an error (no value can stand for it). A
        per-worker floating-point column (shape (workers,)) stored with another width (a
        run resumed on another number of workers) becomes as wide as the wider of the two,
        NaN where a worker did not exist."""
        count = len(next(iter(arrays.values()))) if arrays else 0
        arrays = dict(arrays)
        for c, (dtype, shape) in list(self.columns.items()):
            stored = arrays.get(c)
            if stored is None or len(shape) != 1 or stored.ndim != 2 or \
                    not np.issubdtype(np.dtype(dtype), np.floating) or stored.shape[1] == shape[0]:
                continue
            width = max(shape[0], stored.shape[1])
            self.columns[c] = (dtype, (width,))
            self.widened.add(c)
            wide = np.full((len(stored), width), np.nan, dtype)
            wide[:, :stored.shape[1]] = stored
            arrays[c] = wide
        missing = [c for c, (dtype, _) in self.columns.items() if c not in arrays]
        bad = [c for c in missing if count and not np.issubdtype(dtype_of(self, c), np.floating)]
        if bad:
            raise ValueError(f"stored table lacks the column(s) {bad}, which have no default")
        self.rows = {c: list(arrays[c]) if c in arrays else
                     [np.full(shape, np.nan, dtype)] * count
                     for c, (dtype, shape) in self.columns.items()}

    def truncate(self, rows: int) -> None:
        """Keep the first ``rows`` rows (each store follows at its next write)."""
        for column in self.rows.values():
            del column[rows:]
        for store, count in self.stored.items():
            if count > rows:
                self.stored[store] = rows
                self.stale.add(store)

    def unstored(self, store: str) -> tuple[int, bool]:
        """(the first row ``store`` lacks, whether it has anything to write: rows added
        since ``mark_stored``, or rows it holds that a truncation dropped). A store not yet
        marked lacks every row."""
        start = min(self.stored.get(store, 0), len(self))
        return start, start < len(self) or store in self.stale or store not in self.stored

    def mark_stored(self, store: str) -> None:
        """``store`` now holds exactly the rows there are."""
        self.stored[store] = len(self)
        self.stale.discard(store)

    def __len__(self) -> int:
        return len(next(iter(self.rows.values()))) if self.rows else 0


def dtype_of(table: Metrics, column: str) -> np.dtype:
    """The numpy dtype of one of ``table``'s columns."""
    return np.dtype(table.columns[column][0])


def gan_table(workers: int, bytes_column: str) -> Metrics:
    """The GAN algorithms' per-step table: iteration (int64, G updates done), seconds
    (float64, wall time of the step on rank 0), d_loss and g_loss (float32 (workers,): each
    worker's D loss and generator loss), and a cumulative int64 byte count of rank 0."""
    return Metrics({"iteration": (np.int64, ()), "seconds": (np.float64, ()),
                    "d_loss": (np.float32, (workers,)), "g_loss": (np.float32, (workers,)),
                    bytes_column: (np.int64, ())})


def write_tables(f, tables: dict[str, Metrics]) -> None:
    """Each table as chunked datasets extendable along rows, under its group path."""
    for path, table in tables.items():
        group = f.require_group(path)
        for name, array in table.arrays().items():
            integrity.create(group, name, array, maxshape=(None,) + array.shape[1:])


@dataclass
class RunRecord:
    """What a run file and a checkpoint both record of a run: its configuration (a run
    configuration: ``as_attrs()``), world size, the message kinds its traffic counters
    count (in order) and rank 0's metric tables by group path; ``segments``: the row
    segments (``io/rows.py``) that hold the tables' rows up to the last checkpoint."""

    cfg: object
    world_size: int
    kinds: tuple[str, ...]
    tables: dict[str, Metrics] = field(default_factory=dict)
    segments: list = field(default_factory=list)


def write_common(f, record: RunRecord, traffic: links.Traffic,
                 extras: dict[str, np.ndarray] | None = None, tables: bool = True) -> None:
    """Write /config, the metric tables (unless not ``tables``), /traffic (the counters of
    the links used, of ``record.kinds``) and ``extras`` (path -> array) into the open h5py
    file ``f``."""
    if traffic.kinds != tuple(record.kinds):
        raise ValueError(f"traffic counts the kinds {traffic.kinds}, the run {record.kinds}")
    config = f.create_group("config")
    for key, value in record.cfg.as_attrs().items():
        config.attrs[key] = value
    integrity.seal(config)
    if tables:
        write_tables(f, record.tables)
    links.write(f, traffic)
    for path, array in (extras or {}).items():
        integrity.create(f, path, array)


def read_traffic(f) -> links.Traffic:
    """The traffic counters of an open run file or checkpoint (either layout)."""
    return links.read(f)


def read_table(f, path: str = "metrics") -> dict[str, np.ndarray]:
    """The datasets directly inside group ``path`` (a metrics table) as arrays."""
    group = f[path]
    return {name: integrity.read(group[name]) for name in group
            if isinstance(group[name], h5py.Dataset)}


class RunFile:
    """``<out>/run.h5``: config, metric tables (appended), traffic and the published model.
    Every write first checks this process still holds the run directory's lock
    (``lock.ensure_held``: LockLost if another job took it over).

    Root attrs: format, iteration, world_size, finished. The model's ``model/<key>``
    entries are stored under ``/<model_group>/model/<key>``.
    """

    def __init__(self, path: str, record: RunRecord, fmt: str, iteration: int,
                 traffic: links.Traffic, model_group: str, model_entries,
                 extras: dict[str, np.ndarray] | None = None):
        """``fmt``: the 'format' attribute; ``iteration``: where the run starts;
        ``traffic``: the counters so far; the model rank 0 publishes: its group and
        named tensors (the ``model/`` ones are written); ``extras``: path -> array."""
        self.path, self.tables, self.model_group = path, record.tables, model_group
        ensure_held()
        with atomic_h5(path) as f:
            f.attrs.update({"format": fmt, "iteration": iteration,
                            "world_size": record.world_size, "finished": 0})
            write_common(f, record, traffic, extras)
            group = f.create_group(model_group)
            for name, tensor in model_entries:
                if name.startswith("model/"):
                    integrity.create(group, name, tensor.detach().cpu().numpy())
        for table in record.tables.values():
            table.mark_stored(RUN_FILE)

    def append_rows(self) -> None:
        """Append the rows added to the tables since the last call (and drop the rows a
        table lost to ``Metrics.truncate``)."""
        pending = {}
        for path, table in self.tables.items():
            start, due = table.unstored(RUN_FILE)
            if due:
                pending[path] = start
        if not pending:
            return
        ensure_held()
        with disk_full_errors(self.path), integrity.open_for_writing(self.path, "r+") as f, \
                integrity.updating(f):
            for path, start in pending.items():
                table = self.tables[path]
                for name, array in table.arrays(start).items():
                    integrity.write_rows(f[f"{path}/{name}"], start, array)
                table.mark_stored(RUN_FILE)

    def update(self, iteration: int, traffic: links.Traffic, model_entries,
               finished: bool, datasets: dict[str, np.ndarray] | None = None) -> None:
        """Rows so far, then the traffic counters, the model, ``datasets`` (path -> array,
        written at creation with the same shapes) and the progress attrs, in place."""
        self.append_rows()
        ensure_held()
        with disk_full_errors(self.path), integrity.open_for_writing(self.path, "r+") as f, \
                integrity.updating(f):
            links.update(f, traffic)
            for name, tensor in model_entries:
                if name.startswith("model/"):
                    integrity.overwrite(f[f"{self.model_group}/{name}"],
                                        tensor.detach().cpu().numpy())
            for path, array in (datasets or {}).items():
                integrity.overwrite(f[path], array)
            f.attrs.update({"iteration": iteration, "finished": int(finished)})
            f.flush()
