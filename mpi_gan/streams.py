"""Seed derivation, standard library only, at the bottom of the package: every random
stream of a run (training noise, shards, compressors' random draws, evaluation latents) is
named by tags and seeded by ``derive_seed(seed, *tags)``, on every rank and after a resume
alike. ``mpi_gan.seeding`` builds torch generators on it."""
from __future__ import annotations

import hashlib


def derive_seed(seed: int, *tags: object) -> int:
    """A 63-bit seed for the stream named by ``tags`` under ``seed`` (BLAKE2b of the
    text form: stable across processes and Python versions, unlike ``hash()``)."""
    text = "/".join([str(int(seed))] + [str(t) for t in tags])
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)
