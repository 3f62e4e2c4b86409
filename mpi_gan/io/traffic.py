"""Traffic counters as links: one row per (kind, source, destination) that carried a message.

A run's traffic is counted per message kind and per link, in bytes and messages. Only the
links that were used are kept, by every rank (``comm.transport``) and in the files, so the
counters grow with the links a run uses (MD-GAN over p2p: about 6 per worker, plus its swap
partners), not with the square of the world size.

In a run file or checkpoint (``write``; docs/hdf5.md):
  /traffic                       attrs: kinds (comma-separated, in counting order),
                                 layout = "links", ranks (the world the ranks count in:
                                 the world size, or more after an elastic resume on fewer
                                 workers), header_bytes_per_message = 0
  /traffic/links/{kind,source,destination}   int32 (L,): the kind's index in ``kinds``, and
                                 the sending and receiving world ranks, rows sorted
  /traffic/links/{bytes,messages}            int64 (L,): that link's totals
  /traffic/kind_bytes, /traffic/kind_messages  int64 (len(kinds),): each kind's totals
Files written before this layout hold dense arrays instead (``/traffic/kinds/<kind>/bytes``
and ``messages``, int64 (world, world) [source, destination]); ``read`` turns either into a
``Traffic``.
"""
from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np

from . import integrity

LAYOUT = "links"
COLUMNS = ("kind", "source", "destination", "bytes", "messages")
_INDEX_TYPE = np.int32


@dataclass(frozen=True, eq=False)
class Traffic:
    """Counters of the links used: ``rows`` int64 (L, 5), columns ``COLUMNS``, sorted by
    (kind, source, destination), each link once, no row of zeros; ``kinds``: the message
    kinds, in the order their indices count; ``world``: the world size."""

    kinds: tuple[str, ...]
    world: int
    rows: np.ndarray

    @classmethod
    def from_rows(cls, kinds, world: int, rows) -> "Traffic":
        """Counters from rows (any order; a link's rows are summed)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1, len(COLUMNS))
        if len(rows) and (rows[:, 0].min() < 0 or rows[:, 0].max() >= len(kinds) or
                          rows[:, 1:3].min() < 0 or rows[:, 1:3].max() >= world):
            raise ValueError(f"traffic rows name a kind or rank outside {len(kinds)} kinds "
                             f"and {world} ranks")
        keys = (rows[:, 0] * world + rows[:, 1]) * world + rows[:, 2]
        unique, inverse = np.unique(keys, return_inverse=True)
        out = np.zeros((len(unique), len(COLUMNS)), dtype=np.int64)
        out[:, 0], rest = np.divmod(unique, world * world)
        out[:, 1], out[:, 2] = np.divmod(rest, world)
        np.add.at(out[:, 3], inverse, rows[:, 3])
        np.add.at(out[:, 4], inverse, rows[:, 4])
        return cls(tuple(kinds), int(world), out[(out[:, 3] != 0) | (out[:, 4] != 0)])

    @classmethod
    def empty(cls, kinds, world: int) -> "Traffic":
        return cls.from_rows(kinds, world, np.zeros((0, len(COLUMNS)), dtype=np.int64))

    @classmethod
    def from_dense(cls, kinds, nbytes: np.ndarray, messages: np.ndarray) -> "Traffic":
        """Counters from dense int64 (len(kinds), world, world) [kind, source, destination]."""
        nbytes, messages = np.asarray(nbytes), np.asarray(messages)
        kind, source, destination = np.nonzero((nbytes != 0) | (messages != 0))
        rows = np.stack([kind, source, destination, nbytes[kind, source, destination],
                         messages[kind, source, destination]], axis=1)
        return cls.from_rows(kinds, nbytes.shape[1], rows)

    def __eq__(self, other) -> bool:
        return isinstance(other, Traffic) and (self.kinds, self.world) == (
            other.kinds, other.world) and np.array_equal(self.rows, other.rows)

    __hash__ = None

    def __add__(self, other: "Traffic") -> "Traffic":
        """Both counters' links, summed; over the larger world (a run resumed on another
        world size keeps the links of the ranks it no longer has)."""
        if other.kinds != self.kinds:
            raise ValueError(f"cannot add the traffic of kinds {other.kinds} to that of "
                             f"{self.kinds}")
        return Traffic.from_rows(self.kinds, max(self.world, other.world),
                                 np.concatenate([self.rows, other.rows]))

    def column(self, name: str) -> np.ndarray:
        return self.rows[:, COLUMNS.index(name)]

    def matrix(self, kind: str | None = None, what: str = "bytes") -> np.ndarray:
        """Dense int64 (world, world) [source, destination] of one kind (None: all kinds),
        ``what`` "bytes" or "messages" (memory: world squared; for analysis and tests)."""
        rows = self.rows if kind is None else self.rows[self.rows[:, 0] ==
                                                        self.kinds.index(kind)]
        out = np.zeros((self.world, self.world), dtype=np.int64)
        np.add.at(out, (rows[:, 1], rows[:, 2]), rows[:, COLUMNS.index(what)])
        return out

    def dense(self) -> tuple[np.ndarray, np.ndarray]:
        """(bytes, messages), int64 (len(kinds), world, world) (memory: world squared)."""
        shape = (len(self.kinds), self.world, self.world)
        nbytes, messages = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        index = (self.rows[:, 0], self.rows[:, 1], self.rows[:, 2])
        nbytes[index], messages[index] = self.rows[:, 3], self.rows[:, 4]
        return nbytes, messages

    def per_kind(self, what: str = "bytes") -> np.ndarray:
        """int64 (len(kinds),): each kind's total ``what`` ("bytes" or "messages")."""
        out = np.zeros(len(self.kinds), dtype=np.int64)
        np.add.at(out, self.rows[:, 0], self.rows[:, COLUMNS.index(what)])
        return out

    def total(self, what: str = "bytes") -> int:
        return int(self.rows[:, COLUMNS.index(what)].sum())


def write(f, traffic: Traffic) -> None:
    """``traffic`` as the ``/traffic`` group of the open file ``f`` (module docstring); its
    datasets extendable, so that ``update`` can rewrite them with more links."""
    group = f.create_group("traffic")
    group.attrs["kinds"] = ",".join(traffic.kinds)
    group.attrs["layout"] = LAYOUT
    group.attrs["ranks"] = traffic.world  # the world the ranks count in (>= world_size)
    group.attrs["header_bytes_per_message"] = 0
    integrity.seal(group)
    links = group.create_group("links")
    for i, name in enumerate(COLUMNS):
        dtype = _INDEX_TYPE if i < 3 else np.int64
        integrity.create(links, name, traffic.rows[:, i].astype(dtype), maxshape=(None,))
    integrity.create(group, "kind_bytes", traffic.per_kind("bytes"))
    integrity.create(group, "kind_messages", traffic.per_kind("messages"))


def update(f, traffic: Traffic) -> None:
    """Replace the ``/traffic`` counters ``write`` wrote into the open file ``f``."""
    links = f["traffic/links"]
    for i, name in enumerate(COLUMNS):
        integrity.write_rows(links[name], 0, traffic.rows[:, i])
    integrity.overwrite(f["traffic/kind_bytes"], traffic.per_kind("bytes"))
    integrity.overwrite(f["traffic/kind_messages"], traffic.per_kind("messages"))


def read(f: h5py.File | h5py.Group) -> Traffic:
    """The ``/traffic`` counters of an open run file or checkpoint, of either layout."""
    group = f["traffic"]
    kinds = tuple(str(group.attrs["kinds"]).split(","))
    world = int(group.attrs.get("ranks", f.attrs["world_size"]))
    if group.attrs.get("layout") == LAYOUT:
        columns = [integrity.read(group[f"links/{name}"]).astype(np.int64) for name in COLUMNS]
        return Traffic.from_rows(kinds, world, np.stack(columns, axis=1))
    nbytes = np.stack([integrity.read(group[f"kinds/{k}/bytes"]) for k in kinds])
    messages = np.stack([integrity.read(group[f"kinds/{k}/messages"]) for k in kinds])
    return Traffic.from_dense(kinds, nbytes, messages)
