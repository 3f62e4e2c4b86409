"""Stateless seed derivation: every random stream is a pure function of the run seed.

A stream is named by a tuple of tags, e.g. ``("noise", iteration)``; the same
tags give the same stream on every rank, in the reference implementation and
after a resume, so no random state has to be carried between iterations.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

# the one implementation, standard library only, at the bottom of the package
from .streams import derive_seed

__all__ = ["derive_seed", "generator", "permutation", "real_batch_indices", "seed_device"]

if TYPE_CHECKING:  # each function imports torch: a command line is checked without it
    import torch  # (mpi_gan/preflight.py)


def generator(seed: int, *tags: object) -> torch.Generator:
    """A fresh CPU ``torch.Generator`` seeded with ``derive_seed(seed, *tags)``."""
    import torch
    g = torch.Generator(device="cpu")
    g.manual_seed(derive_seed(seed, *tags))
    return g


def permutation(n: int, seed: int, *tags: object) -> np.ndarray:
    """A permutation of 0..n-1 (int64 (n,)) drawn from the stream ``(seed, *tags)``."""
    import torch
    return torch.randperm(n, generator=generator(seed, *tags)).numpy()


def seed_device(device: torch.device, seed: int) -> None:
    """Make a CUDA device reproducible: seed its generators (no algorithm draws from them,
    every stream is drawn on the CPU, but a user's model might) and let torch pick
    deterministic kernels (cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` for that; an op
    without a deterministic kernel warns instead of failing). Nothing to do on the CPU."""
    if device.type != "cuda":
        return
    import torch
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def real_batch_indices(seed: int, worker: int, shard_size: int, batch: int,
                       iteration: int) -> torch.Tensor:
    """Positions in the shard of the real batch used at ``iteration`` (0-based).

    A local epoch is ``shard_size // batch`` iterations; each epoch walks a
    fresh seed-derived permutation, so the batch is a pure function of the
    iteration (resuming needs no sampler state).
    """
    import torch
    per_epoch = shard_size // batch
    epoch, step = divmod(iteration, per_epoch)
    perm = torch.randperm(shard_size, generator=generator(seed, "real", worker, epoch))
    return perm[step * batch: (step + 1) * batch]
