"""Encode and decode throughput of every compressor against a plain memory copy.

Usage: ``python scripts/bench_compression.py [--elements 10000000]``

One process, one float32 gradient of ``--elements`` values (normal noise). The
reference is ``torch.Tensor.copy_`` of the same tensor, measured in the same
run. Encode = compress + serialise to wire bytes; decode = parse + decompress.
Throughput is gradient bytes / median time. Last line:
``adacomp_encode_vs_memcpy=<x>`` (AdaComp encode GB/s over memcpy GB/s).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from mpi_gan import compression
from mpi_gan.compression.payload import Payload

SPECS = ["none", "fp16", "topk:ratio=0.01", "randomk:ratio=0.01", "adacomp:ratio=0.01",
         "adacomp:ratio=0.01,values=fp16", "adacomp_bins:bin_size=64",
         "adacomp_bins:bin_size=64,values=sign"]


def timed(fn, trials: int) -> float:
    times = []
    for _ in range(trials):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--elements", type=int, default=10_000_000, help="gradient size")
    parser.add_argument("--trials", type=int, default=5, help="timed repetitions (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    grad = torch.randn(args.elements, generator=torch.Generator().manual_seed(0))
    nbytes = grad.numel() * 4
    dest = torch.empty_like(grad)
    memcpy = nbytes / timed(lambda: dest.copy_(grad), args.trials * 4) / 1e9
    print(f"gradient: {args.elements} float32 ({nbytes / 1e6:.0f} MB); memcpy {memcpy:.2f} GB/s")
    print(f"{'compressor':<38} {'encode GB/s':>11} {'decode GB/s':>11} {'wire MB':>9} {'ratio':>8}")
    results = {}
    for spec in SPECS:
        c = compression.parse_spec(spec)
        wire = c.compress(grad, "g").to_bytes()
        enc = timed(lambda: c.compress(grad, "g").to_bytes(), args.trials)
        dec = timed(lambda: c.decompress(Payload.from_bytes(wire)[0]), args.trials)
        results[spec] = nbytes / enc / 1e9
        print(f"{spec:<38} {nbytes / enc / 1e9:>11.3f} {nbytes / dec / 1e9:>11.3f} "
              f"{len(wire) / 1e6:>9.3f} {nbytes / len(wire):>7.1f}x")
    print(f"adacomp_encode_vs_memcpy={results['adacomp:ratio=0.01'] / memcpy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
