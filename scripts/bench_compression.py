"""Encode and decode throughput of every compressor against a plain memory copy, and of
the peers' top-k selections (GRACE, DGC) on the same tensor.

Usage: ``python scripts/bench_compression.py [--elements 10000000]``

One process, single-threaded, one float32 gradient of ``--elements`` values (normal
noise). The reference is ``torch.Tensor.copy_`` of the same tensor into a preallocated
one, measured in the same run. Encode = compress + serialise to wire bytes; decode =
parse + decompress into a reused dense buffer (as a receiving rank does every
iteration); "decode new" allocates the dense tensor each time instead (fresh pages from
the kernel: slower, printed for completeness). Throughput is gradient bytes / median
time. The peers produce (values, indices) tensors and stop there (no wire bytes), so
our encode is compared against less work than it does.

Last lines, one per floor of issue 9: ``<compressor>_encode_vs_memcpy``,
``<compressor>_decode_vs_memcpy`` for topk, randomk, adacomp (1%) and adacomp_bins,
then ``topk_vs_grace`` and ``topk_vs_dgc`` (our top-k encode speed over theirs).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch

from mpi_gan import compression
from mpi_gan.compression.payload import Payload

SPECS = ["none", "fp16", "topk:ratio=0.01", "randomk:ratio=0.01", "adacomp:ratio=0.01",
         "adacomp:ratio=0.01,values=fp16", "adacomp:ratio=0.01,values=int8",
         "adacomp_bins:bin_size=64", "adacomp_bins:bin_size=64,values=sign"]
FLOORS = {"topk": "topk:ratio=0.01", "randomk": "randomk:ratio=0.01",
          "adacomp": "adacomp:ratio=0.01", "adacomp_bins": "adacomp_bins:bin_size=64"}


def timed(fn, trials: int) -> float:
    fn()  # warm-up: compiles the kernels, maps the buffers
    times = []
    for _ in range(trials):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def grace_topk(tensor: torch.Tensor, ratio: float):
    """GRACE's TopKCompressor.compress (grace_dl/torch/compressor/topk.py): a full
    ``torch.topk`` of the magnitudes, then a gather."""
    tensor = tensor.flatten()
    k = max(1, int(tensor.numel() * ratio))
    _, indices = torch.topk(tensor.abs(), k, sorted=False)
    return torch.gather(tensor, 0, indices), indices


def dgc_sparsify(tensor: torch.Tensor, ratio: float, sample_ratio: float = 0.01,
                 upper: float = 1.3, lower: float = 0.8, adaptation_iters: int = 10):
    """DGC's sparsify (dgc/compression.py of Lin et al.'s code): the threshold is the
    top-k of a strided sample, adapted up or down until the selection is within
    [lower, upper] x k, then (if above k) an exact top-k among the selected."""
    importance = tensor.abs()
    numel = tensor.numel()
    num_samples = int(math.ceil(numel * sample_ratio))
    stride = numel // num_samples
    samples = importance[0::stride]
    num_selects = int(math.ceil(numel * ratio))
    k_samples = int(math.ceil(num_samples * ratio))
    threshold = torch.min(torch.topk(samples, k_samples, 0, largest=True, sorted=False)[0])
    for _ in range(adaptation_iters):
        mask = importance >= threshold
        selected = int(mask.sum())
        if selected > upper * num_selects:
            threshold = threshold * upper
        elif selected < lower * num_selects:
            threshold = threshold * lower
        else:
            break
    indices = torch.nonzero(mask).view(-1)
    if indices.numel() > num_selects:
        best = torch.topk(importance[indices], num_selects, 0, largest=True, sorted=False)[1]
        indices = indices[best]
    return tensor[indices], indices


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--elements", type=int, default=10_000_000, help="gradient size")
    parser.add_argument("--trials", type=int, default=9, help="timed repetitions (median)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    grad = torch.randn(args.elements, generator=torch.Generator().manual_seed(0))
    nbytes = grad.numel() * 4
    dest = torch.empty_like(grad)
    memcpy = nbytes / timed(lambda: dest.copy_(grad), args.trials * 4) / 1e9
    print(f"gradient: {args.elements} float32 ({nbytes / 1e6:.0f} MB), 1 thread; "
          f"memcpy {memcpy:.2f} GB/s")
    print(f"{'compressor':<36} {'encode GB/s':>11} {'decode GB/s':>11} {'decode new':>10} "
          f"{'wire MB':>8} {'ratio':>7}")
    encode, decode = {}, {}
    for spec in SPECS:
        c = compression.parse_spec(spec)
        wire = c.compress(grad, "g").to_bytes()
        enc = timed(lambda: c.compress(grad, "g").to_bytes(), args.trials)
        dec = timed(lambda: c.decompress(Payload.from_bytes(wire)[0], out=dest), args.trials)
        new = timed(lambda: c.decompress(Payload.from_bytes(wire)[0]), args.trials)
        encode[spec], decode[spec] = nbytes / enc / 1e9, nbytes / dec / 1e9
        print(f"{spec:<36} {encode[spec]:>11.3f} {decode[spec]:>11.3f} "
              f"{nbytes / new / 1e9:>10.3f} {len(wire) / 1e6:>8.3f} {nbytes / len(wire):>6.1f}x")
    peers = {"GRACE topk (full torch.topk)": lambda: grace_topk(grad, 0.01),
             "DGC sampled threshold": lambda: dgc_sparsify(grad, 0.01)}
    peer_speed = {}
    for label, fn in peers.items():
        peer_speed[label] = nbytes / timed(fn, args.trials) / 1e9
        print(f"{label:<36} {peer_speed[label]:>11.3f}  (selection + values, no wire bytes)")
    for short, spec in FLOORS.items():
        print(f"{short}_encode_vs_memcpy={encode[spec] / memcpy:.4f}")
        print(f"{short}_decode_vs_memcpy={decode[spec] / memcpy:.4f}")
    ours = encode[FLOORS["topk"]]
    print(f"topk_vs_grace={ours / peer_speed['GRACE topk (full torch.topk)']:.2f}")
    print(f"topk_vs_dgc={ours / peer_speed['DGC sampled threshold']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
