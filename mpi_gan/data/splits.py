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

``holdout_indices`` first sets aside a validation set (``--validation`` of
mpi_gan.asgd), a seeded, class-stratified choice of training samples; the
shards are then split from the remaining samples only.
"""
from __future__ import annotations

import numpy as np

from ..seeding import derive_seed, permutation, real_batch_indices  # noqa: F401 - re-exported

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


def holdout_indices(labels: np.ndarray, count: int, seed: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, validation_idx): sorted int64 indices into ``labels`` of the samples
    kept for training and of ``count`` samples held out for validation; disjoint, their
    union is every index. A pure function of (labels, count, seed).

    Stratified: class c gets floor(count * n_c / total) samples, the remaining ones go
    one each to the classes with the largest fractional parts (ties: lower class first),
    so every class is represented in proportion (unlabelled data: one class). The
    samples of a class are drawn by a seed-derived permutation of its members.
    ValueError unless 0 <= count < len(labels).
    """
    labels = np.asarray(labels)
    total = len(labels)
    if not 0 <= count < total:
        raise ValueError(f"--validation {count}: must be >= 0 and smaller than the "
                         f"{total} training samples")
    if count == 0:
        return np.arange(total, dtype=np.int64), np.zeros(0, np.int64)
    classes, inverse = np.unique(labels, return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(classes)).astype(np.int64)
    exact = sizes * count  # quota * total, kept integral: no float rounding
    quota = exact // total
    extra = count - int(quota.sum())
    # the classes with the largest remainders (stable: lower class first on a tie)
    quota[np.argsort(-(exact % total), kind="stable")[:extra]] += 1
    held = []
    for c, (value, take) in enumerate(zip(classes.tolist(), quota.tolist())):
        members = np.flatnonzero(inverse == c)
        order = permutation(len(members), seed, "holdout", int(value))
        held.append(members[order[:take]])
    validation = np.sort(np.concatenate(held)).astype(np.int64)
    keep = np.ones(total, dtype=bool)
    keep[validation] = False
    return np.flatnonzero(keep).astype(np.int64), validation


def split_indices(labels: np.ndarray, classes: int, workers: int, split: str, seed: int
                  ) -> list[np.ndarray]:
    """Sorted int64 index arrays into the training set, one per worker (worker n at n - 1).

    labels: (total,) integer class of every training sample (ignored by iid).
    Raises ValueError for a split the data cannot satisfy (labels:C with C > classes).
    """
    kind, arg = parse_split(split)
    total = len(labels)
    if kind == "iid":
        perm = permutation(total, seed, "shards", total, workers)
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
        members = members[permutation(len(members), seed, "split", c)]
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
