"""Stateless seed derivation: every random stream is a pure function of the run seed.

A stream is named by a tuple of tags, e.g. ``("noise", iteration)``; the same
tags give the same stream on every rank, in the reference implementation and
after a resume, so no random state has to be carried between iterations.
"""
from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *tags: object) -> int:
    """A 63-bit seed for the stream named by ``tags`` under the run ``seed``.

    Uses BLAKE2b of the textual tags: stable across processes and Python
    versions (unlike ``hash()``).
    """
    text = "/".join([str(int(seed))] + [str(t) for t in tags])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator(seed: int, *tags: object) -> torch.Generator:
    """A fresh CPU ``torch.Generator`` seeded with ``derive_seed(seed, *tags)``."""
    g = torch.Generator(device="cpu")
    g.manual_seed(derive_seed(seed, *tags))
    return g
