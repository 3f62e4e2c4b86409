"""Seed derivation for the random compressors, self-contained (the package imports
nothing from the training code)."""
from __future__ import annotations

import hashlib


def derive_seed(seed: int, *tags: object) -> int:
    """A 63-bit seed for the stream named by ``tags`` under ``seed`` (BLAKE2b of the
    text form: stable across processes and Python versions, unlike ``hash()``)."""
    text = "/".join([str(int(seed))] + [str(t) for t in tags])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)
