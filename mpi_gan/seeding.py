"""Stateless seed derivation: every random stream is a pure function of the run seed.

A stream is named by a tuple of tags, e.g. ``("noise", iteration)``; the same
tags give the same stream on every rank, in the reference implementation and
after a resume, so no random state has to be carried between iterations.
"""
from __future__ import annotations

import torch

# The one implementation lives with the compressors, which import nothing from the
# training code; every training stream is derived with the same function.
from .compression._seed import derive_seed

__all__ = ["derive_seed", "generator"]


def generator(seed: int, *tags: object) -> torch.Generator:
    """A fresh CPU ``torch.Generator`` seeded with ``derive_seed(seed, *tags)``."""
    g = torch.Generator(device="cpu")
    g.manual_seed(derive_seed(seed, *tags))
    return g
