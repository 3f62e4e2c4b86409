"""Compile every kernel once: ``python -m mpi_gan.compression.kernels`` (``make setup`` runs
it) loads each kernel module (``sparsify_kernels``, ``indexcodec_kernels``,
``payload_kernels``) and calls every kernel on tiny inputs, so that ranks starting together
find numba's cache filled instead of compiling at the same time."""
from __future__ import annotations

import numpy as np

from .indexcodec_kernels import (bitmap_decode, bitmap_encode, expg_all_bits, expg_decode,
                                 expg_encode, gap_code_sizes, rice_decode, rice_encode,
                                 varint_decode, varint_encode)
from .payload_kernels import bitmap_expand, bitmap_scatter, scatter, sign_values
from .sparsify_kernels import (bins_bitmap_select, bins_select, bins_send, keep_best,
                               random_indices, strided_sample, values_at_least)


def warm_up() -> None:
    """Compile (or load from the cache) every kernel, on tiny inputs: ``make setup`` runs
    it once, so that ranks starting together find the cache filled instead of compiling
    at the same time."""
    for dtype in (np.float32, np.float64):
        x = np.linspace(-1, 1, 2000).astype(dtype)
        idx = np.empty(64, np.int64)
        values_at_least(x, dtype(0.99), idx, np.empty(64, dtype))
        keep_best(np.arange(10), x[:10], dtype(0.5), 3)
        strided_sample(x, 100)
        residual = np.zeros_like(x)
        out = np.empty(len(x), np.int64)
        count = bins_select(x, residual, 64, out)[0]
        bins_send(residual, out[:count], True, 0.5)
        scatter(np.empty_like(x), out[:count], x[:count])
        bitmap_scatter(bitmap_encode(out[:count], len(x)), x[:count], np.empty_like(x))
    x = np.linspace(-1, 1, 2000).astype(np.float32)
    wire = np.empty(4 * len(x) + 64, np.uint8)
    words = np.empty(-(-len(x) // 64), np.uint64)
    count = bins_bitmap_select(x, np.zeros_like(x), 128, words, wire, 0)[0]
    bitmap_expand(words.view(np.uint8)[:250], wire[:4 * count], count, np.empty_like(x))
    idx = random_indices(2000, 50, 1)
    _, r, rice_bits = gap_code_sizes(idx)
    rice_decode(rice_encode(idx, r, rice_bits), 50, r, 2000)
    sizes = expg_all_bits(idx)
    expg_decode(expg_encode(idx, 3, sizes[3]), 50, 3, 2000)
    varint_decode(varint_encode(idx, gap_code_sizes(idx)[0]), 50, 5)
    bitmap_decode(bitmap_encode(idx, 2000), 50)
    sign_values(np.zeros(2, np.uint8), 9, 0.5)


if __name__ == "__main__":
    warm_up()
