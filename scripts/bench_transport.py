"""Transport bandwidth against raw mpi4py Send/Recv, measured in the same run.

Usage: ``mpiexec -n 2 python scripts/bench_transport.py [--trials 7]``

Ping-pong between ranks 0 and 1 on the same float32 buffers (the torch tensor
shares the numpy array's memory), alternating raw and project trials so both
see the same machine state. Bandwidth = 2 * message bytes / round-trip time,
median over trials. Prints a table and, last, ``ratio_min_ge_1MB=<x>``: the
worst project/raw bandwidth ratio over sizes >= 1 MB.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from mpi4py import MPI

from mpi_gan.comm.transport import Transport

SIZES = [4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20]


def round_trips(comm, rank, send, recv, reps):
    comm.Barrier()
    tic = time.perf_counter()
    for _ in range(reps):
        if rank == 0:
            send(1)
            recv(1)
        else:
            recv(0)
            send(0)
    return (time.perf_counter() - tic) / reps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--trials", type=int, default=7, help="timed trials per size and method")
    parser.add_argument("--seconds", type=float, default=0.15,
                        help="target duration of one trial (sets repetitions)")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD.Dup()
    rank = comm.Get_rank()
    if comm.Get_size() != 2:
        if rank == 0:
            print("bench_transport: run with exactly 2 ranks: mpiexec -n 2 python "
                  "scripts/bench_transport.py", file=sys.stderr)
        return 2
    transport = Transport(("batch_g",), MPI.COMM_WORLD)
    rows = []
    for size in SIZES:
        array = np.ones(size // 4, dtype=np.float32)
        tensor = torch.from_numpy(array)
        raw_send = lambda peer: comm.Send([array, MPI.FLOAT], dest=peer, tag=7)  # noqa: E731
        raw_recv = lambda peer: comm.Recv([array, MPI.FLOAT], source=peer, tag=7)  # noqa: E731
        our_send = lambda peer: transport.send_tensor(tensor, peer, "batch_g")  # noqa: E731
        our_recv = lambda peer: transport.recv_into(tensor, peer, "batch_g")  # noqa: E731
        probe = round_trips(comm, rank, raw_send, raw_recv, 3)
        reps = np.array([max(3, int(args.seconds / max(probe, 1e-7)))], dtype=np.int64)
        comm.Bcast(reps, root=0)
        raw, ours = [], []
        for _ in range(args.trials):
            raw.append(round_trips(comm, rank, raw_send, raw_recv, int(reps[0])))
            ours.append(round_trips(comm, rank, our_send, our_recv, int(reps[0])))
        raw_bw = 2 * size / statistics.median(raw) / 1e9
        our_bw = 2 * size / statistics.median(ours) / 1e9
        rows.append((size, raw_bw, our_bw))
    if rank == 0:
        print(f"{'size':>8} {'raw GB/s':>10} {'mpi_gan GB/s':>13} {'ratio':>7}")
        for size, raw_bw, our_bw in rows:
            label = f"{size >> 20} MB" if size >= 1 << 20 else f"{size >> 10} KB"
            print(f"{label:>8} {raw_bw:10.2f} {our_bw:13.2f} {our_bw / raw_bw:7.3f}")
        worst = min(o / r for s, r, o in rows if s >= 1 << 20)
        print(f"ratio_min_ge_1MB={worst:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
