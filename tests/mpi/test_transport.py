"""MPI tests of the transport on ring neighbours, at any world size (mpi4py test style)."""
import numpy as np
import pytest
import torch

from mpi_gan.comm.transport import Transport, TransportError, wait_all

# a protocol of the test's own: the transport knows no algorithm's kinds
KINDS = ("swap", "feedback", "losses", "labels", "push")

pytestmark = pytest.mark.mpi(min_size=2)

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
          torch.int16, torch.int8, torch.uint8, torch.bool]
SHAPES = [(0,), (1,), (7, 3), (2, 1, 28, 28)]


def payload(dtype, shape, rank):
    x = torch.arange(int(np.prod(shape)), dtype=torch.float64).reshape(shape) + 3 * rank
    return (x % 2 == 0) if dtype == torch.bool else x.to(dtype)


@pytest.fixture
def transport():
    t = Transport(KINDS)
    yield t
    t.free()


def test_ring_round_trip_every_dtype_and_shape(transport):
    rank, size = transport.rank, transport.size
    right, left = (rank + 1) % size, (rank - 1) % size
    for dtype in DTYPES:
        for shape in SHAPES:
            out = torch.empty(shape, dtype=dtype)
            recv = transport.irecv_into(out, left, "swap")
            send = transport.isend_tensor(payload(dtype, shape, rank), right, "swap")
            wait_all([recv, send])
            assert torch.equal(out, payload(dtype, shape, left)), (dtype, shape)
            got = transport.sendrecv_into(payload(dtype, shape, rank), right,
                                     torch.empty(shape, dtype=dtype), left, "feedback")
            assert torch.equal(got, payload(dtype, shape, left)), (dtype, shape)


def test_counters_and_totals(transport):
    rank, size = transport.rank, transport.size
    right, left = (rank + 1) % size, (rank - 1) % size
    for _ in range(3):
        transport.sendrecv_into(torch.zeros(10), right, torch.empty(10), left, "losses")
    totals = transport.totals(root=0)
    kind = KINDS.index("losses")
    if rank == 0:
        nbytes, messages = totals.dense()
        expected = np.zeros((size, size), dtype=np.int64)
        for r in range(size):
            expected[r, (r + 1) % size] += 3 * 40
        assert np.array_equal(nbytes[kind], expected)
        assert np.array_equal(messages[kind], (expected > 0) * 3)
        assert nbytes.sum() == expected.sum()
    else:
        assert totals is None
    assert transport.sent_total() == 120 and transport.received_total() == 120


def test_size_mismatch_is_an_error_not_a_silent_short_read(transport):
    rank, size = transport.rank, transport.size
    right, left = (rank + 1) % size, (rank - 1) % size
    req = transport.isend_tensor(torch.zeros(3), right, "labels")
    with pytest.raises(TransportError, match="expected 20 bytes, received 12"):
        transport.recv_into(torch.empty(5), left, "labels")
    req.wait()


def test_tags_and_unknown_kind(transport):
    assert len({transport.tag_of(k) for k in KINDS}) == len(KINDS)
    with pytest.raises(TransportError, match="distinct"):
        Transport(("a", "a"))
    with pytest.raises(TransportError, match="unknown message kind"):
        transport.isend_tensor(torch.zeros(1), 0, "nope")
    with pytest.raises(TransportError, match="contiguous"):
        transport.isend_tensor(torch.zeros(4, 4).t(), 0, "swap")


def test_link_counters_equal_the_dense_form_on_the_same_traffic(transport):
    """Random messages (seeded: kinds, peers, sizes) between random pairs: the links
    ``totals()`` gathers, expanded, equal the dense (kinds, P, P) counters of the old form,
    summed here with a plain MPI Reduce of each rank's own ledger; only used links are
    kept, and a carried-over base adds to them."""
    from mpi4py import MPI
    from mpi_gan.io.traffic import Traffic
    rank, size = transport.rank, transport.size
    ledger = np.zeros((2, len(KINDS), size, size), dtype=np.int64)  # this test's own count
    rng = np.random.default_rng(7)
    for _ in range(20):  # every rank draws the same plan: who sends what to whom
        src, dst = rng.choice(size, 2, replace=size < 2)
        kind, n = KINDS[int(rng.integers(len(KINDS)))], int(rng.integers(0, 50))
        if src == dst:
            continue
        if rank == src:
            transport.send_tensor(torch.zeros(n, dtype=torch.uint8), int(dst), kind)
            ledger[:, KINDS.index(kind), src, dst] += (n, 1)
        elif rank == dst:
            transport.recv_into(torch.empty(n, dtype=torch.uint8), int(src), kind)
    dense = np.zeros_like(ledger) if rank == 0 else None
    transport.comm.Reduce([ledger, MPI.INT64_T], [dense, MPI.INT64_T] if rank == 0 else None,
                          op=MPI.SUM, root=0)
    base = Traffic.from_rows(KINDS, size, [[0, 0, size - 1, 5, 1]]) if rank == 0 else None
    if rank == 0:
        transport.add_base(base)
    totals = transport.totals(root=0)
    if rank != 0:
        assert totals is None
        return
    nbytes, messages = totals.dense()
    dense[:, 0, 0, size - 1] += (5, 1)
    assert np.array_equal(nbytes, dense[0]) and np.array_equal(messages, dense[1])
    assert len(totals.rows) == np.count_nonzero(dense[1])  # one row per used link
    assert totals.per_kind().tolist() == dense[0].sum(axis=(1, 2)).tolist()


def test_any_size_from_any_source_and_local_view(transport):
    from mpi_gan.comm.transport import ANY_SOURCE
    rank, size = transport.rank, transport.size
    if rank == 0:
        seen = {}
        for _ in range(size - 1):
            buf, source = transport.recv_any_size(ANY_SOURCE, "push")
            seen[source] = buf
        assert sorted(seen) == list(range(1, size))
        for source, buf in seen.items():
            assert torch.equal(buf, torch.full((source * 3,), source, dtype=torch.uint8))
        nbytes, messages = transport.local_view().dense()
        push = KINDS.index("push")
        assert nbytes[push, :, 0].tolist() == [3 * r for r in range(size)]
        assert messages[push, 1:, 0].tolist() == [1] * (size - 1)
    else:
        transport.send_tensor(torch.full((rank * 3,), rank, dtype=torch.uint8), 0, "push")


def test_cost_meter_counts_compute_apart_from_waiting_on_the_network(transport):
    """Rank 1's step waits at least 0.5 s for rank 0's message (rank 0 starts its 0.5 s
    only once rank 1 says it is waiting): its compute seconds exclude that wait (blocked
    time, as the skeleton's CostMeter subtracts it), its wall time does not."""
    import time
    from mpi_gan.train.cost import CostMeter
    rank = transport.rank
    meter = CostMeter()

    def step():
        if rank == 0:
            transport.recv_into(torch.empty(1), 1, "labels")  # rank 1 is in its step
            time.sleep(0.5)  # compute of rank 0, from rank 1's view a wait
            transport.send_tensor(torch.ones(4), 1, "losses")
        elif rank == 1:
            incoming = transport.irecv_into(torch.empty(4), 0, "losses")
            transport.send_tensor(torch.ones(1), 0, "labels")
            wait_all([incoming])
    meter.measure(lambda: None)  # the first step is counted in FLOPs, not timed
    tic = time.perf_counter()
    meter.measure(step)
    wall = time.perf_counter() - tic
    ok = rank != 1 or (wall >= 0.5 and meter.compute_seconds < 0.4 and meter.steps == 1)
    results = transport.comm.allgather((ok, wall, meter.compute_seconds))
    assert all(r[0] for r in results), results


@pytest.fixture
def chunked():
    """A transport whose messages of 64 bytes or more travel in 64-byte pieces (as those
    of 1 GiB or more do by default): the large-message path, at test sizes."""
    t = Transport(KINDS, chunk_bytes=64)
    yield t
    t.free()


CHUNK_SHAPES = [(0,), (1,), (15,), (16,), (17,), (32,), (100,), (7, 3)]  # float32: 64 B = 16


def test_messages_above_the_chunk_limit_arrive_whole(chunked):
    rank, size = chunked.rank, chunked.size
    right, left = (rank + 1) % size, (rank - 1) % size
    sent = 0
    for dtype in (torch.float32, torch.float64, torch.uint8, torch.float16):
        for shape in CHUNK_SHAPES:
            out = torch.empty(shape, dtype=dtype)
            recv = chunked.irecv_into(out, left, "swap")
            send = chunked.isend_tensor(payload(dtype, shape, rank), right, "swap")
            wait_all([recv, send])
            assert torch.equal(out, payload(dtype, shape, left)), (dtype, shape)
            got = chunked.sendrecv_into(payload(dtype, shape, rank), right,
                                        torch.empty(shape, dtype=dtype), left, "feedback")
            assert torch.equal(got, payload(dtype, shape, left)), (dtype, shape)
            sent += 2 * int(np.prod(shape)) * torch.empty(0, dtype=dtype).element_size()
    # counted once per message, in its own bytes, however many pieces it took
    assert chunked.sent_total() == sent and chunked.received_total() == sent
    nbytes, messages = chunked.local_view().dense()
    assert messages[KINDS.index("swap"), rank, right] == 4 * len(CHUNK_SHAPES)


def test_any_size_messages_in_pieces_from_any_source(chunked):
    from mpi_gan.comm.transport import ANY_SOURCE
    rank, size = chunked.rank, chunked.size
    sizes = [0, 63, 64, 65, 128, 300]  # below, at and above the limit, and multiples of it
    if rank == 0:
        got = {r: [] for r in range(1, size)}
        for _ in range((size - 1) * len(sizes)):
            buf, source = chunked.recv_any_size(ANY_SOURCE, "push")
            got[source].append(buf)
        for source, bufs in got.items():
            assert [len(b) for b in bufs] == sizes
            for n, buf in zip(sizes, bufs):
                assert torch.equal(buf, (torch.arange(n) + source).to(torch.uint8))
        nbytes, messages = chunked.local_view().dense()
        push = KINDS.index("push")
        assert nbytes[push, 1:, 0].tolist() == [sum(sizes)] * (size - 1)
        assert messages[push, 1:, 0].tolist() == [len(sizes)] * (size - 1)
    else:
        for n in sizes:
            chunked.send_tensor((torch.arange(n) + rank).to(torch.uint8), 0, "push")


@pytest.mark.parametrize("chunk_bytes", [1 << 30, 64])
def test_persistent_messages_repeat_with_fresh_contents(chunk_bytes):
    t = Transport(KINDS, chunk_bytes=chunk_bytes)
    rank, size = t.rank, t.size
    right, left = (rank + 1) % size, (rank - 1) % size
    out_x, in_x = torch.empty(100), torch.empty(100)  # 400 B: in pieces at a 64 B limit
    out_l, in_l = torch.empty(2, dtype=torch.int64), torch.empty(2, dtype=torch.int64)
    sends = [t.persistent(out_x, right, "feedback", send=True),
             t.persistent(out_l, right, "losses", send=True)]
    receives = [t.persistent(in_x, left, "feedback", send=False),
                t.persistent(in_l, left, "losses", send=False)]
    for iteration in range(5):
        out_x.copy_(torch.arange(100.0) * iteration + rank)
        out_l.copy_(torch.tensor([iteration, rank]))
        started = [m.start() for m in receives + sends]
        if iteration % 2:  # one by one (a single request's own wait) or all together
            for message in started:
                message.wait()
        else:
            wait_all(started)
        assert torch.equal(in_x, torch.arange(100.0) * iteration + left)
        assert in_l.tolist() == [iteration, left]
    nbytes, messages = t.local_view().dense()
    assert messages[KINDS.index("feedback"), rank, right] == 5
    assert nbytes[KINDS.index("feedback"), rank, right] == 5 * 400
    assert nbytes[KINDS.index("losses"), left, rank] == 5 * 16
    # a size mismatch is an error, as for any receive
    wide = t.persistent(torch.empty(5), left, "labels", send=False).start()
    send = t.isend_tensor(torch.zeros(3), right, "labels")
    with pytest.raises(TransportError, match="expected 20 bytes, received 12"):
        wide.wait()
    send.wait()
    t.free()


@pytest.mark.parametrize("chunk_bytes", [1 << 30, 64])
def test_pending_completes_sends_and_receives_in_whatever_order_they_finish(chunk_bytes):
    """Rank 0 starts a message to every worker and posts a receive for each one's answer,
    then takes the answers as they complete (``Pending.wait``): a worker answers only once
    it has rank 0's message, so rank 0's sends (1 MB: a rendezvous, unless in 64-byte
    pieces) must progress while it waits. A probe for a kind nobody sends finds nothing."""
    from mpi_gan.comm.transport import ANY_SOURCE, Pending
    t = Transport(KINDS, chunk_bytes=chunk_bytes)
    rank, size = t.rank, t.size
    n = 1 << 18 if chunk_bytes > 64 else 100
    for round_ in range(3):
        if rank == 0:
            pending, answers, taken = Pending(), {}, []
            assert t.try_recv_any_size(ANY_SOURCE, "labels") is None
            for worker in range(1, size):
                pending.add(t.isend_tensor(torch.full((n,), float(worker + round_)), worker,
                                           "swap"))
                buf = torch.empty(100)
                answers[worker] = (buf, pending.add(t.irecv_into(buf, worker, "feedback")))

            def ready():
                for worker, (_, request) in answers.items():
                    if request.done and worker not in taken:
                        return worker
                return None
            while len(taken) < size - 1:
                taken.append(pending.wait(ready))
            pending.wait(lambda: True if not len(pending) else None)
            assert sorted(taken) == list(range(1, size))
            assert pending.completed == 2 * (size - 1)
            for worker, (buf, _) in answers.items():
                assert torch.equal(buf, torch.arange(100.0) * worker + round_)
        else:
            got = t.recv_into(torch.empty(n), 0, "swap")
            assert torch.equal(got, torch.full((n,), float(rank + round_)))
            t.send_tensor(torch.arange(100.0) * rank + round_, 0, "feedback")
    nbytes, messages = t.local_view().dense()
    if rank == 0:
        assert messages[KINDS.index("feedback"), 1:, 0].tolist() == [3] * (size - 1)
        assert nbytes[KINDS.index("swap"), 0, 1:].tolist() == [3 * 4 * n] * (size - 1)
        # a message longer than its receive is an error naming what was awaited
        pending = Pending()
        pending.add(t.irecv_into(torch.empty(100), 1, "feedback"))
        with pytest.raises(TransportError, match="feedback message from rank 1 "
                                                 r"\(400 bytes expected\)"):
            pending.wait(lambda: None)
    elif rank == 1:
        t.send_tensor(torch.zeros(101), 0, "feedback")
    t.free()
