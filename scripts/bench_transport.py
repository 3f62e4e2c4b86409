"""Transport speed against raw mpi4py Send/Recv, measured in the same run, and against the
transports of the public MD-GAN and FedML codes (torch.distributed with gloo; pickled
mpi4py send/recv).

Usage: ``mpiexec -n 2 python scripts/bench_transport.py [--trials 7]``

Ping-pong between ranks 0 and 1 on the same float32 buffers (the torch tensor
shares the numpy array's memory), the methods alternating trial by trial so that all
see the same machine state. Bandwidth = 2 * message bytes / round-trip time, median over
trials. Then the message pattern of one MD-GAN iteration between the server and one
worker (b = 10 MNIST images): X_g and X_d out (31,360 B each), the error feedback back
(31,360 B) and the two losses (8 B), in iterations per second.

"persistent" is the transport's ``persistent`` messages (MPI persistent requests set up
once, started every time), the form for messages that repeat with one shape. Last lines,
one per floor of issue 9: ``ratio_4KB``, ``ratio_64KB``, ``ratio_min_ge_1MB`` (our best
form over raw bandwidth), ``mdgan_iteration_vs_raw``, then
``ours_vs_gloo_<size>`` and ``ours_vs_pickle_<size>`` (our speed over theirs) at
64 KB and 16 MB and for the MD-GAN iteration.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time

import numpy as np
import torch
from mpi4py import MPI

from mpi_gan.comm.transport import Transport, wait_all

SIZES = [4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20]
IMAGE_FLOATS = 10 * 784  # one MD-GAN batch of b = 10 MNIST images


def label(size: int) -> str:
    return f"{size >> 20}MB" if size >= 1 << 20 else f"{size >> 10}KB"


def timed(comm, fn, reps: int) -> float:
    comm.Barrier()
    tic = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - tic) / reps


def gloo_group(comm):
    """torch.distributed over gloo between the two ranks (TCP on the loopback)."""
    import torch.distributed as dist
    port = np.zeros(1, dtype=np.int64)
    if comm.Get_rank() == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port[0] = s.getsockname()[1]
    comm.Bcast(port, root=0)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{int(port[0])}",
                            rank=comm.Get_rank(), world_size=2)
    return dist


def ping_pongs(comm, transport, dist, array):
    """{method: one round trip of ``array`` between ranks 0 and 1}."""
    rank, tensor = comm.Get_rank(), torch.from_numpy(array)
    other = 1 - rank

    def trip(send, recv):
        def go():
            if rank == 0:
                send()
                recv()
            else:
                recv()
                send()
        return go

    def pickled_recv():
        array[:] = comm.recv(source=other, tag=9)

    out = transport.persistent(tensor, other, "data", send=True)
    back = transport.persistent(tensor, other, "data", send=False)
    return {
        "raw": trip(lambda: comm.Send([array, MPI.FLOAT], dest=other, tag=7),
                    lambda: comm.Recv([array, MPI.FLOAT], source=other, tag=7)),
        "mpi_gan": trip(lambda: transport.send_tensor(tensor, other, "data"),
                        lambda: transport.recv_into(tensor, other, "data")),
        "persistent": trip(lambda: out.start().wait(), lambda: back.start().wait()),
        "pickle": trip(lambda: comm.send(array, dest=other, tag=9), pickled_recv),
        "gloo": trip(lambda: dist.send(tensor, other), lambda: dist.recv(tensor, other)),
    }


def mdgan_iterations(comm, transport, dist):
    """{method: one MD-GAN iteration's messages between the server (0) and a worker (1)}."""
    rank = comm.Get_rank()
    x_g, x_d, feedback = (np.ones(IMAGE_FLOATS, dtype=np.float32) for _ in range(3))
    losses = np.ones(2, dtype=np.float32)
    tensors = [torch.from_numpy(a) for a in (x_g, x_d, feedback, losses)]

    def pattern(send, recv):
        def go():
            if rank == 0:
                send(0, 1)
                send(1, 1)
                recv(2, 1)
                recv(3, 1)
            else:
                recv(0, 0)
                recv(1, 0)
                send(2, 0)
                send(3, 0)
        return go
    arrays = (x_g, x_d, feedback, losses)
    kinds = ("batch_g", "batch_d", "feedback", "losses")

    def pickled_recv(i, peer):
        arrays[i][:] = comm.recv(source=peer, tag=20 + i)

    # the server sends 0, 1 and receives 2, 3; the worker the other way round
    sending = (0, 1) if rank == 0 else (2, 3)
    held = [transport.persistent(tensors[i], 1 - rank, kinds[i], send=i in sending)
            for i in range(4)]

    def persistent_iteration():  # the worker computes between its receives and sends
        if rank == 0:
            wait_all([m.start() for m in held])
        else:
            wait_all([m.start() for m in held[:2]])
            wait_all([m.start() for m in held[2:]])

    return {
        "raw": pattern(lambda i, p: comm.Send([arrays[i], MPI.FLOAT], dest=p, tag=10 + i),
                       lambda i, p: comm.Recv([arrays[i], MPI.FLOAT], source=p, tag=10 + i)),
        "mpi_gan": pattern(lambda i, p: transport.send_tensor(tensors[i], p, kinds[i]),
                           lambda i, p: transport.recv_into(tensors[i], p, kinds[i])),
        "persistent": persistent_iteration,
        "pickle": pattern(lambda i, p: comm.send(arrays[i], dest=p, tag=20 + i), pickled_recv),
        "gloo": pattern(lambda i, p: dist.send(tensors[i], p),
                        lambda i, p: dist.recv(tensors[i], p)),
    }


def measure(comm, methods: dict, trials: int, seconds: float) -> dict[str, float]:
    """Median seconds per call of each method, alternating methods within each trial."""
    probe = timed(comm, methods["raw"], 3)
    reps = np.array([max(3, int(seconds / max(probe, 1e-7)))], dtype=np.int64)
    comm.Bcast(reps, root=0)
    times = {name: [] for name in methods}
    for _ in range(trials):
        for name, fn in methods.items():
            times[name].append(timed(comm, fn, int(reps[0])))
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--trials", type=int, default=7, help="timed trials per size and method")
    parser.add_argument("--seconds", type=float, default=0.1,
                        help="target duration of one trial (sets repetitions)")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD.Dup()
    rank = comm.Get_rank()
    if comm.Get_size() != 2:
        if rank == 0:
            print("bench_transport: run with exactly 2 ranks: mpiexec -n 2 python "
                  "scripts/bench_transport.py", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    transport = Transport(("data", "batch_g", "batch_d", "feedback", "losses"), MPI.COMM_WORLD)
    dist = gloo_group(comm)
    bandwidth = {}
    for size in SIZES:
        seconds = measure(comm, ping_pongs(comm, transport, dist, np.ones(size // 4, np.float32)),
                          args.trials, args.seconds)
        bandwidth[size] = {name: 2 * size / t / 1e9 for name, t in seconds.items()}
    iteration = {name: 1 / t for name, t in
                 measure(comm, mdgan_iterations(comm, transport, dist), args.trials,
                         args.seconds).items()}
    dist.destroy_process_group()
    if rank != 0:
        return 0
    names = ("raw", "mpi_gan", "persistent", "pickle", "gloo")
    print("ping-pong bandwidth, GB/s (ratio: our best, plain or persistent, over raw)")
    print(f"{'size':>6} " + " ".join(f"{n:>10}" for n in names) + f" {'ratio':>7}")
    best = {size: max(bw["mpi_gan"], bw["persistent"]) for size, bw in bandwidth.items()}
    for size, bw in bandwidth.items():
        print(f"{label(size):>6} " + " ".join(f"{bw[n]:10.3f}" for n in names)
              + f" {best[size] / bw['raw']:7.3f}")
    print("MD-GAN iteration (server <-> 1 worker, b = 10), iterations/s")
    ours_iteration = max(iteration["mpi_gan"], iteration["persistent"])
    print("       " + " ".join(f"{iteration[n]:10.0f}" for n in names)
          + f" {ours_iteration / iteration['raw']:7.3f}")
    ratio = {size: best[size] / bw["raw"] for size, bw in bandwidth.items()}
    print(f"ratio_4KB={ratio[4 << 10]:.3f}")
    print(f"ratio_64KB={ratio[64 << 10]:.3f}")
    print(f"ratio_min_ge_1MB={min(r for s, r in ratio.items() if s >= 1 << 20):.3f}")
    print(f"mdgan_iteration_vs_raw={ours_iteration / iteration['raw']:.3f}")
    for peer in ("gloo", "pickle"):
        for size in (64 << 10, 16 << 20):
            print(f"ours_vs_{peer}_{label(size)}={best[size] / bandwidth[size][peer]:.2f}")
        print(f"ours_vs_{peer}_mdgan_iteration={ours_iteration / iteration[peer]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
