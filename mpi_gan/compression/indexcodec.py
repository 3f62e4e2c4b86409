"""Encodings of sorted, unique flat indices into bytes; the smallest is chosen per payload
(except where ``adacomp_bins`` packs a dense selection in place: see its module).

All functions are pure and work on numpy arrays. Indices are int64, strictly
increasing, in [0, numel). Decoders validate everything they read and raise
``PayloadError`` instead of reading out of bounds. The gap codes and the bitmap run
in the compiled kernels (``indexcodec_kernels``).

codes: DENSE (no indices: every element is sent), INT32 (4 bytes each),
BLOCK16 (per 65536-element block a uint32 count, then a uint16 offset per index),
VARINT (LEB128 of the gaps between consecutive indices), BITMAP (one bit per element),
RICE (Golomb-Rice code of the gaps: one byte holding the parameter r, then per gap
gap >> r one bits, a zero bit and the r low bits, least significant bit first; about
log2(mean gap) + 1.5 bits per index, the entropy of geometric gaps within a few %),
EXPG (exponential-Golomb code of order k of the gaps: a byte holding k, then per gap, with
v = (gap >> k) + 1 and L = floor(log2 v), L one bits, a zero bit, the L low bits of v and
the k low bits of the gap; its cost grows with log2 of long gaps instead of linearly, so
it wins where the indices cluster, as the top entries of real gradients do: 35% fewer
bytes than Rice on the AdaComp CNN's top 1%).
"""
from __future__ import annotations

import numpy as np

from .lazy import kernels

DENSE, INT32, BLOCK16, VARINT, BITMAP, RICE, EXPG = 0, 1, 2, 3, 4, 5, 6
NAMES = {DENSE: "dense", INT32: "int32", BLOCK16: "block16", VARINT: "varint", BITMAP: "bitmap",
         RICE: "rice", EXPG: "expgolomb"}
BLOCK = 1 << 16
MAX_VARINT_BYTES = 5  # gaps < 2**35


class PayloadError(ValueError):
    """A payload is malformed or truncated."""


def _kernels():
    return kernels("indexcodec")


def gap_parameters(idx: np.ndarray) -> tuple[int, int, int, int, int]:
    """(varint bytes, Rice parameter r, Rice bits, exp-Golomb order k, exp-Golomb bits) of
    the gaps of ``idx`` (int64, sorted): what ``encoded_sizes`` and ``encode`` need, for
    callers that use both to compute once."""
    varint, rice_r, rice_bits = _kernels().gap_code_sizes(idx)
    expg_k, expg_bits = _expg_best(idx)
    return int(varint), int(rice_r), int(rice_bits), expg_k, expg_bits


def encoded_sizes(idx: np.ndarray, numel: int, gaps: tuple | None = None) -> dict[int, int]:
    """Bytes each sparse encoding would take for ``idx`` (int64, sorted) in ``numel``
    elements (``gaps``: ``gap_parameters(idx)`` if already known)."""
    count = len(idx)
    varint, _, rice_bits, _, expg_bits = gaps or gap_parameters(idx)
    sizes = {BLOCK16: 4 * (-(-numel // BLOCK)) + 2 * count, BITMAP: -(-numel // 8),
             VARINT: varint, RICE: 1 + -(-rice_bits // 8), EXPG: 1 + -(-expg_bits // 8)}
    if numel < (1 << 31):
        sizes[INT32] = 4 * count
    return sizes


def _expg_best(idx: np.ndarray) -> tuple[int, int]:
    """(order k, bits) of the cheapest exponential-Golomb code over k = 0..31 (ties: the
    lowest k), every order's size from one pass (``indexcodec_kernels.expg_all_bits``)."""
    sizes = _kernels().expg_all_bits(idx)
    k = int(np.argmin(sizes))
    return k, int(sizes[k])


def choose(idx: np.ndarray, numel: int, gaps: tuple | None = None) -> int:
    """The code of the smallest encoding (ties: the lowest code)."""
    sizes = encoded_sizes(idx, numel, gaps)
    return min(sorted(sizes), key=lambda code: sizes[code])


def choose_and_encode(idx: np.ndarray, numel: int) -> tuple[int, np.ndarray]:
    """(code, bytes) of the smallest encoding of ``idx``, the gaps analysed once."""
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    gaps = gap_parameters(idx)
    code = choose(idx, numel, gaps)
    return code, encode(code, idx, numel, gaps)


def encode(code: int, idx: np.ndarray, numel: int, gaps: tuple | None = None) -> np.ndarray:
    """Encode ``idx`` with ``code``; returns uint8 bytes (``gaps``: ``gap_parameters(idx)``
    if already known)."""
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    if code == INT32:
        return idx.astype("<i4").view(np.uint8)
    if code == BLOCK16:
        counts = np.bincount(idx >> 16, minlength=-(-numel // BLOCK)).astype("<u4")
        return np.concatenate([counts.view(np.uint8), (idx & 0xFFFF).astype("<u2").view(np.uint8)])
    if code == BITMAP:
        return _kernels().bitmap_encode(idx, numel)
    if code == DENSE:
        return np.zeros(0, dtype=np.uint8)
    if code not in (VARINT, RICE, EXPG):
        raise PayloadError(f"unknown index encoding {code}")
    varint, r, rice_bits, k, expg_bits = gaps or gap_parameters(idx)
    if code == VARINT:
        return _kernels().varint_encode(idx, varint)
    if code == RICE:
        return np.concatenate([np.array([r], dtype=np.uint8),
                               _kernels().rice_encode(idx, r, rice_bits)])
    return np.concatenate([np.array([k], dtype=np.uint8),
                           _kernels().expg_encode(idx, k, expg_bits)])


def _checked_order(idx: np.ndarray, count: int, numel: int) -> np.ndarray:
    """``idx`` if strictly increasing and in [0, numel) (codes that store indices as they
    are; the gap codes and the bitmap are increasing and in range by construction)."""
    if count and (idx[0] < 0 or idx[-1] >= numel or np.any(np.diff(idx) <= 0)):
        raise PayloadError("indices out of range or not strictly increasing")
    return idx


def _decode_dense(data, count, numel):
    if len(data) or count != numel:
        raise PayloadError("dense payload with index bytes or a partial count")
    return np.arange(numel, dtype=np.int64)


def _decode_int32(data, count, numel):
    if len(data) != 4 * count:
        raise PayloadError(f"int32 indices: {len(data)} bytes for {count} indices")
    return _checked_order(data.view("<i4").astype(np.int64), count, numel)


def _decode_block16(data, count, numel):
    blocks = -(-numel // BLOCK)
    if len(data) != 4 * blocks + 2 * count:
        raise PayloadError(f"block16 indices: {len(data)} bytes for {count} indices in "
                           f"{blocks} blocks")
    counts = data[:4 * blocks].view("<u4").astype(np.int64)
    if counts.sum() != count:
        raise PayloadError("block16 indices: block counts do not add up")
    offsets = data[4 * blocks:].view("<u2").astype(np.int64)
    idx = np.repeat(np.arange(blocks, dtype=np.int64) << 16, counts) + offsets
    return _checked_order(idx, count, numel)


def _decode_varint(data, count, numel):
    if len(data) > MAX_VARINT_BYTES * count:
        raise PayloadError("varint indices: longer than the count allows")
    idx, ok = _kernels().varint_decode(data, count, MAX_VARINT_BYTES)
    if not ok:
        raise PayloadError("varint indices: truncated, overlong or wrong count")
    return idx


def _decode_bitmap(data, count, numel):
    if len(data) != -(-numel // 8):
        raise PayloadError(f"bitmap: {len(data)} bytes for {numel} elements")
    idx, ok = _kernels().bitmap_decode(data, count)
    if not ok or (count and idx[-1] >= numel):
        raise PayloadError("bitmap: set bits differ from the count or lie past the end")
    return idx


def _bit_stream_decoder(name: str, what: str, kernel: str):
    """The decoder of a bit-stream code whose first byte is its parameter (0..31)."""
    def decode_stream(data, count, numel):
        if len(data) < 1 or data[0] > 31:
            raise PayloadError(f"{name} indices: missing or bad {what} byte")
        idx, ok = getattr(_kernels(), kernel)(data[1:], count, int(data[0]), numel)
        if not ok:
            raise PayloadError(f"{name} indices: truncated, out of range or trailing bits")
        return idx
    return decode_stream


_DECODERS = {DENSE: _decode_dense, INT32: _decode_int32, BLOCK16: _decode_block16,
             VARINT: _decode_varint, BITMAP: _decode_bitmap,
             RICE: _bit_stream_decoder("rice", "parameter", "rice_decode"),
             EXPG: _bit_stream_decoder("expgolomb", "order", "expg_decode")}


def decode(code: int, data: np.ndarray, count: int, numel: int) -> np.ndarray:
    """Decode ``count`` indices in [0, numel) from uint8 ``data``; PayloadError if malformed
    (every decoder checks what it reads: lengths, counts, order, range)."""
    decoder = _DECODERS.get(code)
    if decoder is None:
        raise PayloadError(f"unknown index encoding {code}")
    return decoder(np.ascontiguousarray(data, dtype=np.uint8), count, numel)
