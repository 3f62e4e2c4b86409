"""How the training set is cut into worker shards, and which real batch a worker draws.

``--split``:
  iid            equal shards of total // N samples from one seed-derived permutation
                 (the paper's setting; the remainder is unused)
  labels:C       worker w (0-based) holds the C classes (w*C + j) mod K, j < C; each
                 class is divided in near-equal parts among the workers that hold it
  dirichlet:A    per class, proportions p ~ Dirichlet(A * 1_N) (Hsu et al. 2019):
                 small A gives skewed label mixes, large A approaches i.i.d.
Every split is a pure function of (labels, N, split, seed): each rank computes
all shards from the labels alone and reads only its own images.
"""
from __future__ import annotations

import numpy as np
import torch

from ..seeding import derive_seed, generator

SPLIT_FORMS = "iid, labels:C (C classes per worker) or dirichlet:ALPHA (ALPHA > 0)"


def parse_split(text: str) -> tuple[str, float]:
    """("iid", 0) | ("labels", C) | ("dirichlet", alpha); ValueError on anything else."""
    kind, sep, arg = text.partition(":")
    try:
        if kind == "iid" and not sep:
            return "iid", 0
        if kind == "labels" and int(arg) >= 1:
            return "labels", int(arg)
        if kind == "dirichlet" and 0 < float(arg) < float("inf"):
            return "dirichlet", float(arg)
    except ValueError:
        pass
    raise ValueError(f"--split {text!r}: use {SPLIT_FORMS}")


def split_indices(labels: np.ndarray, classes: int, workers: int, split: str, seed: int
                  ) -> list[np.ndarray]:
    """Sorted int64 index arrays into the training set, one per worker (worker n at n - 1).

    labels: (total,) integer class of every training sample (ignored by iid).
    Raises ValueError for a split the data cannot satisfy (labels:C with C > classes).
    """
    kind, arg = parse_split(split)
    total = len(labels)
    if kind == "iid":
        perm = torch.randperm(total, generator=generator(seed, "shards", total, workers)).numpy()
        size = total // workers
        return [np.sort(perm[w * size:(w + 1) * size]).astype(np.int64) for w in range(workers)]
    if classes == 0:
        raise ValueError(f"--split {split}: this dataset has no labels; use --split iid")
    parts: list[list[np.ndarray]] = [[] for _ in range(workers)]
    if kind == "labels":
        per_worker = int(arg)
        if per_worker > classes:
            raise ValueError(f"--split {split}: the dataset has only {classes} classes")
        holders = {c: [w for w in range(workers)
                       if c in {(w * per_worker + j) % classes for j in range(per_worker)}]
                   for c in range(classes)}
    for c in range(classes):
        members = np.flatnonzero(labels == c)
        members = members[torch.randperm(len(members),
                                         generator=generator(seed, "split", c)).numpy()]
        if kind == "labels":
            for w, chunk in zip(holders[c], np.array_split(members, len(holders[c]) or 1)):
                parts[w].append(chunk)
        else:
            rng = np.random.default_rng(derive_seed(seed, "dirichlet", c))
            p = rng.dirichlet(np.full(workers, float(arg)))
            cuts = np.floor(np.cumsum(p)[:-1] * len(members)).astype(np.int64)
            for w, chunk in enumerate(np.split(members, cuts)):
                parts[w].append(chunk)
    return [np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64)
            for p in parts]


def label_histogram(labels: np.ndarray, shards: list[np.ndarray], classes: int) -> np.ndarray:
    """int64 (N, classes): how many samples of each class every worker holds."""
    return np.stack([np.bincount(labels[idx], minlength=classes)[:classes] if classes else
                     np.zeros(0, np.int64) for idx in shards]).astype(np.int64)


def epoch_iterations(epochs: int, shard_size: int, batch: int) -> int:
    """Iterations of ``epochs`` local epochs over a shard: epochs * (m // b) (0: never)."""
    return epochs * (shard_size // batch)


def real_batch_indices(seed: int, worker: int, shard_size: int, batch: int,
                       iteration: int) -> torch.Tensor:
    """Positions in the shard of the real batch used at ``iteration`` (0-based).

    A local epoch is ``shard_size // batch`` iterations; each epoch walks a
    fresh seed-derived permutation, so the batch is a pure function of the
    iteration (resuming needs no sampler state).
    """
    per_epoch = shard_size // batch
    epoch, step = divmod(iteration, per_epoch)
    perm = torch.randperm(shard_size, generator=generator(seed, "real", worker, epoch))
    return perm[step * batch: (step + 1) * batch]
