"""The one lazy loader of the compiled kernels: each codec's kernels live beside it
(``<codec>_kernels.py``) and are imported by its first call that needs them, so that a run
without compression never loads numba."""
from __future__ import annotations

import importlib


def kernels(codec: str):
    """The compiled kernels of ``codec`` ("sparsify", "indexcodec", "payload"): the module
    ``<codec>_kernels``, imported on first use."""
    return importlib.import_module(f".{codec}_kernels", __package__)
