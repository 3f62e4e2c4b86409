"""The one module that talks MPI for tensors: raw buffers, one tag per kind, counters.

Protocol-agnostic: each algorithm declares its own message kinds (a tuple of
names) and hands them to ``Transport``; the tag of a kind is its position +
``TAG_BASE``. Every tensor travels with mpi4py's upper-case (buffer) methods: no pickle on any
tensor path. The sender counts each message it sends, per (kind, source,
destination), in messages and payload bytes; messages carry no header, because
both sides know every shape from the run configuration, so the bytes counted
are exactly the bytes of the tensors on the wire. Each rank keeps the links it
used only (``io.traffic.Traffic``): memory and the collective that totals them
grow with the links used, not with the square of the world size.

GPU tensors: MPI is assumed *not* CUDA-aware and device tensors are staged
through host memory, unless the environment variable ``MPI_GAN_CUDA_AWARE=1``
declares it is (auto-detection is unreliable, as mpi4jax notes); then device
buffers are handed to MPI directly after synchronising the current stream.
"""
from __future__ import annotations

import os
import time
from typing import Sequence

import numpy as np
import torch
from mpi4py import MPI
from mpi4py.util.dtlib import from_numpy_dtype

from ..io.traffic import COLUMNS, Traffic
from .ulfm import ulfm_enabled

_TORCH_TO_MPI = {
    torch.float32: MPI.FLOAT,
    torch.float64: MPI.DOUBLE,
    torch.int64: MPI.INT64_T,
    torch.int32: MPI.INT32_T,
    torch.int16: MPI.INT16_T,
    torch.int8: MPI.INT8_T,
    torch.uint8: MPI.UINT8_T,
    torch.bool: MPI.C_BOOL,
    # no standard MPI type: 16-bit floats travel as their 16-bit patterns
    torch.float16: MPI.UINT16_T,
    torch.bfloat16: MPI.UINT16_T,
}


ANY_SOURCE = MPI.ANY_SOURCE


class TransportError(RuntimeError):
    """A message did not match what the protocol expects."""


def mpi_type(dtype: torch.dtype) -> MPI.Datatype:
    """The MPI datatype that carries tensors of ``dtype``."""
    try:
        return _TORCH_TO_MPI[dtype]
    except KeyError:
        raise TransportError(f"no MPI datatype for {dtype}") from None


def cuda_aware_from_env() -> bool:
    """True if ``MPI_GAN_CUDA_AWARE`` declares the MPI library CUDA-aware."""
    return os.environ.get("MPI_GAN_CUDA_AWARE", "0").lower() in ("1", "true", "yes")


class _Blocked:
    """Seconds this process has spent blocked in MPI calls (waits, blocking sends and
    receives): what the training skeleton subtracts from a step to get its compute time."""

    seconds = 0.0

    def __enter__(self):
        self._tic = time.perf_counter()

    def __exit__(self, *exc):
        _Blocked.seconds += time.perf_counter() - self._tic


def blocked_seconds() -> float:
    """Total seconds this process has spent blocked in MPI calls of the transport."""
    return _Blocked.seconds


# How a rank waits for MPI: it polls without pause for SPIN_SECONDS (a message already on
# its way arrives within that, at full speed), then sleeps between polls, the pause
# doubling up to MAX_PAUSE_SECONDS. A rank that waits long (its turn in a checkpoint,
# rank 0's set-up, a slower peer) so leaves its core to the ranks that compute, which
# decides the speed when ranks outnumber cores (MPICH's blocking calls spin instead).
SPIN_SECONDS = 0.002
MAX_PAUSE_SECONDS = 0.001


def poll(done) -> None:
    """Call ``done()`` until it returns true: at once, then spinning, then with pauses."""
    if done():
        return
    deadline, pause = time.perf_counter() + SPIN_SECONDS, 2e-5
    while not done():
        if time.perf_counter() >= deadline:
            time.sleep(pause)
            pause = min(2 * pause, MAX_PAUSE_SECONDS)


def wait_for(value):
    """Call ``value()`` until it returns something other than None, waiting as ``poll``
    does (counted as blocked); returns that."""
    found = []

    def done() -> bool:
        got = value()
        if got is not None:
            found.append(got)
        return bool(found)
    with _Blocked():
        poll(done)
    return found[0]


def settle(requests: list[MPI.Request], statuses: list[MPI.Status]) -> None:
    """Complete every request (MPI progresses them together), waiting as ``poll`` does."""
    with _Blocked():
        poll(lambda: MPI.Request.Testall(requests, statuses))


class Request:
    """A pending non-blocking operation (one or more MPI requests: a message above the
    chunk limit travels in pieces); keeps its buffers alive until completed."""

    def __init__(self, requests: list[MPI.Request], keep: tuple, finish=None,
                 what: str = "a message"):
        self._requests, self._keep, self._finish = requests, keep, finish
        self.done = False  # completed (its buffer is the caller's again)
        self.what = what  # for errors: "<kind> message from rank <source>"

    def wait(self) -> None:
        wait_all([self])

    def _complete(self, statuses: list[MPI.Status]) -> None:
        if self._finish is not None:
            finish, self._finish = self._finish, None
            finish(statuses)
        self._keep = ()
        self.done = True


def wait_all(requests: Sequence[Request]) -> None:
    """Complete every request (MPI progresses all of them together)."""
    statuses = [[MPI.Status() for _ in r._requests] for r in requests]
    settle([m for r in requests for m in r._requests], [s for ss in statuses for s in ss])
    for r, status in zip(requests, statuses):
        r._complete(status)


class Pending:
    """Requests completed in whatever order MPI finishes them (a server's hand-outs and the
    receives it posts for their answers, before it knows which answer comes first).

    ``add`` a started ``Request`` (then completed here only, never by its own ``wait``);
    ``test()`` completes every one MPI has finished (its ``done`` turns true), without
    waiting; ``wait(ready)`` calls ``test()`` then
    ``ready()`` until that returns something other than None, waiting as ``poll`` does:
    one spin, then pauses, whatever the number of requests (one ``MPI_Testsome`` over all
    of them per poll).
    """

    def __init__(self):
        self._flat: list[MPI.Request] = []  # the MPI requests not yet complete
        self._owner: list[Request] = []  # the Request each belongs to
        self._statuses: list[MPI.Status] = []  # Testsome's output, as long as _flat
        self._got: dict[int, list[MPI.Status]] = {}  # id(Request) -> statuses so far
        self.completed = 0  # requests completed so far (a caller can skip its scan)

    def __len__(self) -> int:
        """Requests not yet complete."""
        return len(self._got)

    def add(self, request: Request) -> Request:
        if request._requests:
            self._flat += request._requests
            self._owner += [request] * len(request._requests)
            self._statuses += [MPI.Status() for _ in request._requests]
            self._got[id(request)] = []
        else:
            request._complete([])
            self.completed += 1
        return request

    def test(self) -> bool:
        """Complete what MPI has finished; true if any request completed."""
        if not self._flat:
            return False
        try:
            indices = MPI.Request.Testsome(self._flat, self._statuses)
        except MPI.Exception as exc:  # a message longer than its receive, as a rule
            receives = sorted({owner.what for owner in self._owner})
            raise TransportError(f"{exc.Get_error_string()}; the messages awaited: "
                                 f"{', '.join(receives)}") from exc
        if not indices:
            return False
        for i, status in zip(indices, self._statuses):
            owner = self._owner[i]
            got = self._got[id(owner)]
            got.append(MPI.Status(status))
            if len(got) == len(owner._requests):
                del self._got[id(owner)]
                owner._complete(got)
                self.completed += 1
        keep = [i for i, r in enumerate(self._flat) if r != MPI.REQUEST_NULL]
        self._flat = [self._flat[i] for i in keep]
        self._owner = [self._owner[i] for i in keep]
        del self._statuses[len(keep):]
        return True

    def wait(self, ready):
        """Progress and complete requests until ``ready()`` returns a value (not None);
        returns it."""
        def value():
            self.test()
            return ready()
        return wait_for(value)


class Persistent:
    """One message that repeats with a fixed buffer, peer and kind (MPI persistent
    requests, set up once with ``Send_init``/``Recv_init``; ``Transport.persistent``).

    ``start()`` begins one transfer of ``tensor`` (a send counts it then); the caller
    completes it with ``wait()`` or ``wait_all``. The caller writes ``tensor`` before a send
    starts and reads it after a receive completes, never in between. Device tensors go
    through a host buffer unless MPI is CUDA-aware. After the transport changes its
    communicator (``shrink``/``exclude``), the requests are set up again on the new one.
    """

    def __init__(self, transport: "Transport", tensor: torch.Tensor, peer: int, kind: str,
                 send: bool):
        self.transport, self.tensor, self.peer, self.kind, self.send = (
            transport, tensor, peer, kind, send)
        staged = tensor.is_cuda and not transport.cuda_aware
        if not tensor.is_contiguous():
            raise TransportError("persistent messages need a contiguous tensor")
        self.host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True) if staged \
            else tensor
        self.nbytes = tensor.numel() * tensor.element_size()
        self._index = transport.kind_index(kind)
        self._keep = ()
        self._requests: list[MPI.Request] = []
        self._status = MPI.Status()  # of a one-request transfer (``wait``)
        self.setup()

    def setup(self) -> None:
        """(Re)create the MPI requests on the transport's current communicator."""
        self.free()
        self._requests = self.transport.persistent_requests(self.host, self.peer, self.kind,
                                                            self.send)

    def start(self) -> "Persistent":
        if self.send:
            if self.host is not self.tensor:
                self.host.copy_(self.tensor)
            self.transport.count_send(self._index, self.peer, self.nbytes)
        if len(self._requests) == 1:
            self._requests[0].Start()
        else:
            MPI.Prequest.Startall(self._requests)
        return self

    def wait(self) -> None:
        """Complete this transfer (``wait_all`` of one, with less Python on the way: a
        message below the chunk limit is one MPI request)."""
        if len(self._requests) != 1:
            return wait_all([self])
        request, status = self._requests[0], self._status
        tic = time.perf_counter()
        if not request.Test(status):
            poll(lambda: request.Test(status))
        _Blocked.seconds += time.perf_counter() - tic
        self._complete((status,))

    def _complete(self, statuses: Sequence[MPI.Status]) -> None:
        if not self.send:
            self.transport.check_received(statuses, self.host, self.kind, self.peer)
            if self.host is not self.tensor:
                self.tensor.copy_(self.host)

    def release(self) -> None:
        """Free the requests and forget this message (when a role plans anew)."""
        self.free()
        self.transport.forget(self)

    def free(self) -> None:
        for request in self._requests:
            try:
                request.Free()
            except MPI.Exception:  # on a communicator revoked after a failure
                pass
        self._requests = []


# Messages of this many bytes or more travel as several MPI messages (same tag, in order:
# MPI does not let them overtake each other), so that no count passes MPI's int limit.
CHUNK_BYTES = 1 << 30


def pieces(nbytes: int, limit: int) -> list[tuple[int, int]]:
    """(offset, length) in bytes of the MPI messages that carry one message of ``nbytes``:
    itself if below ``limit``; else full ``limit``-byte pieces and a last shorter one,
    possibly empty, so that a receiver that does not know the size sees the end."""
    if nbytes < limit:
        return [(0, nbytes)]
    full = nbytes // limit
    return [(i * limit, limit) for i in range(full)] + [(full * limit, nbytes - full * limit)]


class Transport:
    """Point-to-point tensor messaging over a private duplicate of a communicator.

    ``kinds``: the message kinds of the protocol spoken over it.
    Counters: bytes and messages per (kind, destination) this rank sent to and per
    (kind, source) it received from, for the links it used only; ``counted()`` gives
    its sends as a ``Traffic``, ``local_view()`` its sends and receives, ``totals()``
    every rank's sends, gathered on rank 0.
    """

    def __init__(self, kinds: Sequence[str], comm: MPI.Comm | None = None,
                 cuda_aware: bool | None = None, chunk_bytes: int = CHUNK_BYTES):
        if len(set(kinds)) != len(kinds):
            raise TransportError(f"message kinds must be distinct: {tuple(kinds)}")
        self.kinds = tuple(kinds)
        self._index = {kind: i for i, kind in enumerate(self.kinds)}
        self.comm = (comm if comm is not None else MPI.COMM_WORLD).Dup()
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        # peers are named by their rank in the original communicator ("world" rank), which
        # stays theirs when ``shrink`` continues on the survivors of a failure
        self._origin = self.comm.Get_group()
        self._world_of = list(range(self.size))  # current communicator rank -> world rank
        self._peer = {w: w for w in self._world_of}  # world rank -> current rank
        self.cuda_aware = cuda_aware_from_env() if cuda_aware is None else cuda_aware
        if not 0 < chunk_bytes < 1 << 31:
            raise TransportError(f"chunk_bytes must be in [1, 2**31): {chunk_bytes}")
        self.chunk_bytes = chunk_bytes
        self._persistent: list[Persistent] = []  # set up again when the communicator changes
        # this rank's sends, by link: kind index * size + destination -> plain ints (cheap
        # on the hot path); only the links used have an entry
        self._sent_bytes: dict[int, int] = {}
        self._sent_messages: dict[int, int] = {}
        # what this rank received, by kind index * size + source
        self._received_bytes: dict[int, int] = {}
        self._received_messages: dict[int, int] = {}
        # Unix time of the last message received from each rank (NaN: none yet)
        self.heard = [float("nan")] * self.size
        # totals carried over from a checkpoint (added on rank 0 when resuming)
        self._base = Traffic.empty(self.kinds, self.size)
        self._base_sent = self._base_received = 0  # this rank's part of it
        self.control = {"collectives": 0, "bytes": 0}  # control collectives of this rank
        self.blocking_collectives = ulfm_enabled()

    def _rows(self, nbytes: dict[int, int], messages: dict[int, int], sent: bool
              ) -> np.ndarray:
        """int64 (links, 5) rows (``io.traffic.COLUMNS``) of one of this rank's counters:
        its sends (``sent``: keys kind * size + destination) or its receives."""
        keys = np.fromiter(nbytes.keys(), dtype=np.int64, count=len(nbytes))
        rows = np.empty((len(keys), len(COLUMNS)), dtype=np.int64)
        rows[:, 0], peer = np.divmod(keys, self.size)
        rows[:, 1], rows[:, 2] = (self.rank, peer) if sent else (peer, self.rank)
        rows[:, 3] = np.fromiter(nbytes.values(), dtype=np.int64, count=len(keys))
        rows[:, 4] = [messages[k] for k in nbytes]
        return rows

    def counted(self) -> Traffic:
        """What this rank sent (its links), plus any carried-over base."""
        return self._base + Traffic.from_rows(
            self.kinds, self.size, self._rows(self._sent_bytes, self._sent_messages, True))

    def add_base(self, traffic: Traffic) -> None:
        """Carry counters over from a checkpoint (call on one rank only)."""
        self._base = self._base + traffic
        nbytes = traffic.column("bytes")
        self._base_sent += int(nbytes[traffic.column("source") == self.rank].sum())
        self._base_received += int(nbytes[traffic.column("destination") == self.rank].sum())

    def sent_total(self) -> int:
        """Bytes this rank has sent in the run (all kinds and destinations): in this
        process, and before it as far as the base carried over from a checkpoint says."""
        return self._base_sent + sum(self._sent_bytes.values())

    def received_total(self) -> int:
        """Bytes this rank has received in the run, the carried-over base included."""
        return self._base_received + sum(self._received_bytes.values())

    def local_view(self) -> Traffic:
        """The counters as seen by this rank alone: its sends and its receives, plus the
        base. Exact for every link that touches this rank (a star around a server), and
        needs no collective, so it can be taken while peers are busy."""
        received = self._rows(self._received_bytes, self._received_messages, False)
        return self.counted() + Traffic.from_rows(self.kinds, self.size, received)

    # ------------------------------------------------------------ buffers
    @staticmethod
    def _wire(tensor: torch.Tensor):
        """A buffer spec [memory, count, datatype] over ``tensor``'s bytes, no copy.

        The caller keeps ``tensor`` alive until the operation completes. Device
        memory is only handed over when MPI is CUDA-aware (after a stream sync).
        """
        if not tensor.is_contiguous():
            raise TransportError("tensors must be contiguous to travel as raw buffers")
        if tensor.is_cuda:
            torch.cuda.current_stream(tensor.device).synchronize()
        count = tensor.numel()
        if count == 0:
            return [np.empty(0, dtype=np.uint8), 0, MPI.BYTE]
        memory = MPI.buffer.fromaddress(tensor.data_ptr(), count * tensor.element_size())
        return [memory, count, mpi_type(tensor.dtype)]

    def _wires(self, tensor: torch.Tensor) -> list:
        """Buffer specs of the MPI messages that carry ``tensor`` (``pieces``): one typed
        spec below the chunk limit, else byte ranges of its memory, no copy."""
        nbytes = tensor.numel() * tensor.element_size()
        if nbytes < self.chunk_bytes:
            return [self._wire(tensor)]
        self._wire(tensor)  # the same checks (contiguous, stream synchronised)
        base = tensor.data_ptr()
        return [[MPI.buffer.fromaddress(base + offset, length), length, MPI.BYTE] if length
                else [np.empty(0, dtype=np.uint8), 0, MPI.BYTE]
                for offset, length in pieces(nbytes, self.chunk_bytes)]

    def _isends(self, data: torch.Tensor, dest: int, tag: int) -> list[MPI.Request]:
        return [self.comm.Isend(w, dest=self._peer[dest], tag=tag) for w in self._wires(data)]

    def _irecvs(self, buf: torch.Tensor, source: int, tag: int) -> list[MPI.Request]:
        return [self.comm.Irecv(w, source=self._peer[source], tag=tag)
                for w in self._wires(buf)]

    def staged(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` as it goes on the wire: detached, and copied to the host if it is on
        a GPU and MPI is not CUDA-aware. Stage a tensor once when it goes to several
        peers; sending the staged tensor copies nothing more."""
        if tensor.is_cuda and not self.cuda_aware:
            return tensor.detach().cpu()
        return tensor.detach() if tensor.requires_grad else tensor

    def _incoming(self, out: torch.Tensor):
        """(buffer tensor to receive into, function that moves it into ``out``)."""
        if out.is_cuda and not self.cuda_aware:
            host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            return host, lambda: out.copy_(host)
        if not out.is_contiguous():
            raise TransportError("receive buffers must be contiguous")
        return out, None

    def persistent(self, tensor: torch.Tensor, peer: int, kind: str, send: bool
                   ) -> Persistent:
        """A message of ``kind`` to (``send``) or from ``peer`` through ``tensor``, set up once
        and started every iteration (``Persistent``): the cheapest form of a message that
        repeats with the same shape."""
        message = Persistent(self, tensor, peer, kind, send)
        self._persistent.append(message)
        return message

    def kind_index(self, kind: str) -> int:
        """The index of message kind ``kind`` in ``kinds`` (its counters' first axis)."""
        return self.tag_of(kind) - TAG_BASE

    def persistent_requests(self, tensor: torch.Tensor, peer: int, kind: str, send: bool
                            ) -> list[MPI.Prequest]:
        """MPI persistent requests (one per piece, ``pieces``) that send ``tensor`` to
        world rank ``peer`` (``send``) or receive it from there, on the current
        communicator, with the tag of ``kind``; not started."""
        make = self.comm.Send_init if send else self.comm.Recv_init
        return [make(w, self._peer[peer], self.tag_of(kind)) for w in self._wires(tensor)]

    def forget(self, message: Persistent) -> None:
        """Stop setting ``message`` up again when the communicator changes."""
        if message in self._persistent:
            self._persistent.remove(message)

    def count_send(self, index: int, dest: int, nbytes: int) -> None:
        """Count one message of ``nbytes`` bytes of kind number ``index`` to ``dest``."""
        key = index * self.size + dest
        self._sent_bytes[key] = self._sent_bytes.get(key, 0) + nbytes
        self._sent_messages[key] = self._sent_messages.get(key, 0) + 1

    def tag_of(self, kind: str) -> int:
        """The MPI tag of message kind ``kind``."""
        try:
            return TAG_BASE + self._index[kind]
        except KeyError:
            raise TransportError(f"unknown message kind {kind!r}; known: {self.kinds}") from None

    def _count(self, kind: str, dest: int, nbytes: int) -> int:
        tag = self.tag_of(kind)
        self.count_send(tag - TAG_BASE, dest, nbytes)
        return tag

    def check_received(self, statuses: Sequence[MPI.Status], out: torch.Tensor, kind: str,
               source: int) -> None:
        got = statuses[0].Get_count(MPI.BYTE) if len(statuses) == 1 else \
            sum(status.Get_count(MPI.BYTE) for status in statuses)
        want = out.numel() * out.element_size()
        if got != want:
            raise TransportError(f"{kind} message from rank {source}: expected {want} bytes, "
                                 f"received {got}")
        key = self._index[kind] * self.size + source
        self._received_bytes[key] = self._received_bytes.get(key, 0) + got
        self._received_messages[key] = self._received_messages.get(key, 0) + 1
        self.heard[source] = time.time()

    # ------------------------------------------------------------ blocking
    def send_tensor(self, tensor: torch.Tensor, dest: int, kind: str) -> None:
        """Send ``tensor`` to ``dest`` as one message of ``kind``."""
        data = self.staged(tensor)
        tag = self._count(kind, dest, data.numel() * data.element_size())
        requests = self._isends(data, dest, tag)
        settle(requests, [MPI.Status() for _ in requests])

    def recv_into(self, out: torch.Tensor, source: int, kind: str) -> torch.Tensor:
        """Receive one message of ``kind`` from ``source`` into ``out`` (shape and dtype fixed)."""
        buf, finish = self._incoming(out)
        requests = self._irecvs(buf, source, self.tag_of(kind))
        statuses = [MPI.Status() for _ in requests]
        settle(requests, statuses)
        self.check_received(statuses, out, kind, source)
        if finish is not None:
            finish()
        return out

    def sendrecv_into(self, tensor: torch.Tensor, dest: int, out: torch.Tensor, source: int,
                 kind: str) -> torch.Tensor:
        """Send ``tensor`` to ``dest`` while receiving ``out`` from ``source``; cannot deadlock
        in any permutation pattern."""
        data = self.staged(tensor)
        tag = self._count(kind, dest, data.numel() * data.element_size())
        buf, finish = self._incoming(out)
        receives = self._irecvs(buf, source, tag)
        sends = self._isends(data, dest, tag)
        statuses = [MPI.Status() for _ in receives + sends]
        settle(receives + sends, statuses)
        self.check_received(statuses[:len(receives)], out, kind, source)
        if finish is not None:
            finish()
        return out

    def recv_any_size(self, source: int, kind: str) -> tuple[torch.Tensor, int]:
        """Receive one message of ``kind`` whose size is not known in advance.

        ``source`` may be ``ANY_SOURCE``. Matched probe (Mprobe/Mrecv), so no other
        receive can steal the message; a message that came in pieces (a first piece of
        exactly the chunk limit) is completed from the same source and joined.
        Returns (uint8 CPU tensor, source rank).
        """
        return wait_for(lambda: self.try_recv_any_size(source, kind))

    def try_recv_any_size(self, source: int, kind: str) -> tuple[torch.Tensor, int] | None:
        """``recv_any_size`` if a message of ``kind`` from ``source`` has begun to arrive
        (a matched probe finds it), else None at once."""
        tag = self.tag_of(kind)
        parts, statuses = [], []
        while True:
            status = MPI.Status()
            message = self.comm.Improbe(source=self._peer.get(source, source), tag=tag,
                                        status=status)
            if message is None:
                if not parts:
                    return None
                # the rest of a message that came in pieces (its caller counts the wait)
                poll(lambda: self.comm.Iprobe(source=self._peer[source], tag=tag))
                continue
            part = torch.empty(status.Get_count(MPI.BYTE), dtype=torch.uint8)
            message.Recv(self._wire(part))
            parts.append(part)
            statuses.append(status)
            source = self._world_of[status.Get_source()]
            if part.numel() != self.chunk_bytes:
                break
        buf = parts[0] if len(parts) == 1 else torch.cat(parts)
        self.check_received(statuses, buf, kind, source)
        return buf, source

    # -------------------------------------------------------- non-blocking
    def isend_tensor(self, tensor: torch.Tensor, dest: int, kind: str) -> Request:
        """Start sending ``tensor``; it must not change until the request is waited on."""
        data = self.staged(tensor)
        tag = self._count(kind, dest, data.numel() * data.element_size())
        return Request(self._isends(data, dest, tag), (data,))

    def irecv_into(self, out: torch.Tensor, source: int, kind: str) -> Request:
        """Start receiving into ``out``; its content is valid once the request is waited on."""
        buf, finish = self._incoming(out)

        def complete(statuses: list[MPI.Status]) -> None:
            self.check_received(statuses, out, kind, source)
            if finish is not None:
                finish()
        return Request(self._irecvs(buf, source, self.tag_of(kind)), (buf, out), complete,
                       what=f"{kind} message from rank {source} "
                            f"({out.numel() * out.element_size()} bytes expected)")

    # ------------------------------------------------------------ counters
    def totals(self, root: int = 0) -> Traffic | None:
        """Every member's sends gathered on ``root`` (a rank of the current communicator),
        with the base: the run's counters there, None elsewhere. Two control collectives
        (``control``): the row counts, then the rows of the links each rank used."""
        rows = self._rows(self._sent_bytes, self._sent_messages, True)
        counts = self.gather(np.array([rows.size], dtype=np.int64), root)
        here = self.comm.Get_rank() == root
        if here:
            counts = counts.reshape(-1)
            offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
            out = np.empty(int(counts.sum()), dtype=np.int64)
            recv = [out, (counts, offsets), MPI.INT64_T]
        else:
            recv = None
        self._collective(rows.nbytes, lambda: self.comm.Igatherv(
            [rows, MPI.INT64_T], recv, root=root), lambda: self.comm.Gatherv(
            [rows, MPI.INT64_T], recv, root=root))
        if not here:
            return None
        return self._base + Traffic.from_rows(self.kinds, self.size, out)

    # ------------------------------------------------------------ control
    # Control collectives (the stop agreement, the start and end of a run, the counters'
    # totals) go through the transport too: waited for as every message is (``poll``:
    # a rank that arrives first leaves its core to those still computing, where MPICH's
    # blocking collectives would spin), and counted apart from the per-kind traffic of
    # the protocol (``control``: collectives and payload bytes this rank took part in).
    # With ULFM they stay blocking: a dead peer's error then surfaces as it always has.

    def agree_max(self, value: int) -> int:
        """Collective: the largest ``value`` over the transport's ranks (a stop signal)."""
        flag = np.array([value], dtype=np.int64)
        self._collective(flag.nbytes, lambda: self.comm.Iallreduce(
            MPI.IN_PLACE, [flag, MPI.INT64_T], op=MPI.MAX), lambda: self.comm.Allreduce(
            MPI.IN_PLACE, [flag, MPI.INT64_T], op=MPI.MAX))
        return int(flag[0])

    def lowest_failing(self, failed: bool) -> int | None:
        """Collective: the lowest world rank among the members that passed ``failed=True``,
        None if none did (one ``agree_max``)."""
        top = self.agree_max(self.size - self.rank if failed else 0)
        return self.size - top if top else None

    def broadcast(self, array: np.ndarray, root: int = 0) -> np.ndarray:
        """Collective: ``root``'s ``array`` (a contiguous numpy array) on every rank, in
        place; returns it."""
        spec = [array, from_numpy_dtype(array.dtype)]
        self._collective(array.nbytes, lambda: self.comm.Ibcast(spec, root=root),
                         lambda: self.comm.Bcast(spec, root=root))
        return array

    def gather(self, array: np.ndarray, root: int = 0) -> np.ndarray | None:
        """Collective over the current members: each one's ``array`` (a contiguous numpy
        array, the same shape and dtype on each) stacked in their order on ``root`` (a
        rank of the current communicator), shape (members, *array.shape); None elsewhere.
        Before any ``shrink`` or ``exclude`` the members are the world, in rank order."""
        out = np.empty((self.comm.Get_size(), *array.shape), dtype=array.dtype) \
            if self.comm.Get_rank() == root else None
        dtype = from_numpy_dtype(array.dtype)
        recv = [out, dtype] if out is not None else None
        self._collective(array.nbytes, lambda: self.comm.Igather(
            [array, dtype], recv, root=root), lambda: self.comm.Gather(
            [array, dtype], recv, root=root))
        return out

    def _collective(self, nbytes: int, start, blocking) -> None:
        self.control["collectives"] += 1
        self.control["bytes"] += nbytes
        with _Blocked():
            if self.blocking_collectives:
                blocking()
            else:
                request = start()
                poll(request.Test)

    # ------------------------------------------------------------ survivors
    @property
    def alive(self) -> list[int]:
        """World ranks of the communicator's members (all of them until ``shrink``)."""
        return list(self._world_of)

    def shrink(self) -> list[int]:
        """After a peer failure (ULFM, ``comm/ulfm.py``): revoke the communicator, so that
        every survivor's pending operation on it fails too, and go on with a communicator
        of the survivors (collective over them). Peers keep their world ranks; the counters
        keep their shape. Returns the world ranks lost since the last call."""
        old = self.comm
        old.Revoke()
        new = old.Shrink()
        new.Set_errhandler(MPI.ERRORS_RETURN)
        return self._continue_on(new)

    def exclude(self, ranks: Sequence[int]) -> bool:
        """Go on without the world ranks ``ranks`` (workers lost before the checkpoint a
        run resumes from); collective over every member. Returns False on an excluded
        rank, whose transport is then unusable."""
        old = self.comm
        new = old.Split(MPI.UNDEFINED if self.rank in ranks else 0, self.rank)
        old.Free()
        if new == MPI.COMM_NULL:
            self.comm = None
            return False
        self._continue_on(new)
        return True

    def _continue_on(self, new: MPI.Comm) -> list[int]:
        """Use ``new`` (a sub-communicator of the members) from now on; returns the world
        ranks no longer members."""
        members = MPI.Group.Translate_ranks(new.Get_group(), list(range(new.Get_size())),
                                            self._origin)
        gone = [w for w in self._world_of if w not in members]
        self.comm, self._world_of = new, list(members)
        self._peer = {w: i for i, w in enumerate(members)}
        self._persistent = [p for p in self._persistent if p.peer in self._peer]
        for message in self._persistent:
            message.setup()
        return gone

    def free(self) -> None:
        for message in self._persistent:
            message.free()
        self.comm.Free()


TAG_BASE = 100
