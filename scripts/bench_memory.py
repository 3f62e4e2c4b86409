"""Rank 0's peak memory in MD-GAN and ASGD at several worker counts, against the floor of a
rank that only imports torch and mpi4py, measured in the same run.

Usage: ``python scripts/bench_memory.py [--workers 4 16] [--iterations 20]``

Each case is a real ``mpiexec -n N+1`` run on full MNIST (the defaults: MLP models) with
no evaluation; every rank logs its peak resident set size at the end
(``peak resident memory X MB``, from getrusage) and this script reads rank 0's. The floor is
``mpiexec -n 1 python -c 'import torch; from mpi4py import MPI'``'s own peak. Prints a table,
then one ``name=value`` line per figure: rank 0's peak in MB per algorithm and N, and
``<algorithm>_growth_ratio``: rank 0's memory above the floor at the largest N over that at
the smallest (1.0: it does not grow with N).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

BIN = os.path.dirname(sys.executable)
MPIEXEC = os.path.join(BIN, "mpiexec")
FLOOR = ("import resource, torch; from mpi4py import MPI; "
         "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6)")
# no scoring during the run (ASGD evaluates its classifier once, at the end)
ARGS = {"mdgan": lambda iterations: ["--eval-every", "0", "--checkpoint-every", "0"],
        "asgd": lambda iterations: ["--eval-every", str(iterations), "--checkpoint-every", "0"]}


def floor_mb() -> float:
    out = subprocess.run([MPIEXEC, "-n", "1", sys.executable, "-c", FLOOR], check=True,
                         capture_output=True, text=True, timeout=600).stdout
    return float(out.split()[-1])


def rank0_peak_mb(algorithm: str, workers: int, iterations: int, cache: str) -> float:
    with tempfile.TemporaryDirectory() as out:
        run = subprocess.run([MPIEXEC, "-n", str(workers + 1), sys.executable, "-m",
                              f"mpi_gan.{algorithm}", "--out", out, "--iterations",
                              str(iterations), "--cache-dir", cache,
                              *ARGS[algorithm](iterations)],
                             capture_output=True, text=True, timeout=1800)
        if run.returncode != 0:
            sys.exit(f"{algorithm} with {workers} workers failed:\n{run.stdout}{run.stderr}")
        log = open(os.path.join(out, "logs", "rank0.log")).read()
    return float(re.findall(r"peak resident memory ([\d.]+) MB", log)[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 16],
                        help="worker counts N (ranks N+1)")
    parser.add_argument("--iterations", type=int, default=20, help="iterations of each run")
    parser.add_argument("--algorithms", nargs="+", default=list(ARGS), choices=list(ARGS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        floor = floor_mb()
        for a in args.algorithms:  # fills the dataset cache: its one-off conversion not counted
            rank0_peak_mb(a, 1, 1, cache)
        peaks = {(a, n): rank0_peak_mb(a, n, args.iterations, cache)
                 for a in args.algorithms for n in args.workers}
    print(f"floor (import torch + mpi4py): {floor:.1f} MB")
    print(f"{'algorithm':10} {'N':>4} {'rank 0 peak MB':>15} {'above floor MB':>15}")
    for (a, n), peak in peaks.items():
        print(f"{a:10} {n:>4} {peak:>15.1f} {peak - floor:>15.1f}")
    lo, hi = min(args.workers), max(args.workers)
    for (a, n), peak in peaks.items():
        print(f"{a}_rank0_peak_mb_n{n}={peak:.1f}")
    for a in args.algorithms:
        print(f"{a}_growth_ratio={(peaks[a, hi] - floor) / (peaks[a, lo] - floor):.2f}")


if __name__ == "__main__":
    main()
