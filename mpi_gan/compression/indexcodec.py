"""Encodings of sorted, unique flat indices into bytes; the smallest is chosen per payload.

All functions are pure and work on numpy arrays. Indices are int64, strictly
increasing, in [0, numel). Decoders validate everything they read and raise
``PayloadError`` instead of reading out of bounds.

codes: DENSE (no indices: every element is sent), INT32 (4 bytes each),
BLOCK16 (per 65536-element block a uint32 count, then a uint16 offset per index),
VARINT (LEB128 of the gaps between consecutive indices), BITMAP (one bit per element).
"""
from __future__ import annotations

import numpy as np

DENSE, INT32, BLOCK16, VARINT, BITMAP = 0, 1, 2, 3, 4
NAMES = {DENSE: "dense", INT32: "int32", BLOCK16: "block16", VARINT: "varint", BITMAP: "bitmap"}
BLOCK = 1 << 16
MAX_VARINT_BYTES = 5  # gaps < 2**35


class PayloadError(ValueError):
    """A payload is malformed or truncated."""


def _gaps(idx: np.ndarray) -> np.ndarray:
    return np.diff(idx, prepend=-1) - 1


def _varint_lengths(gaps: np.ndarray) -> np.ndarray:
    lengths = np.ones(len(gaps), dtype=np.int64)
    for j in range(1, MAX_VARINT_BYTES):
        lengths += gaps >= (1 << (7 * j))
    return lengths


def encoded_sizes(idx: np.ndarray, numel: int) -> dict[int, int]:
    """Bytes each sparse encoding would take for ``idx`` (int64, sorted) in ``numel`` elements."""
    count = len(idx)
    sizes = {BLOCK16: 4 * (-(-numel // BLOCK)) + 2 * count, BITMAP: -(-numel // 8),
             VARINT: int(_varint_lengths(_gaps(idx)).sum())}
    if numel < (1 << 31):
        sizes[INT32] = 4 * count
    return sizes


def choose(idx: np.ndarray, numel: int) -> int:
    """The code of the smallest encoding (ties: the lowest code)."""
    sizes = encoded_sizes(idx, numel)
    return min(sorted(sizes), key=lambda code: sizes[code])


def encode(code: int, idx: np.ndarray, numel: int) -> np.ndarray:
    """Encode ``idx`` with ``code``; returns uint8 bytes."""
    idx = np.asarray(idx, dtype=np.int64)
    if code == INT32:
        return idx.astype("<i4").view(np.uint8)
    if code == BLOCK16:
        counts = np.bincount(idx >> 16, minlength=-(-numel // BLOCK)).astype("<u4")
        return np.concatenate([counts.view(np.uint8), (idx & 0xFFFF).astype("<u2").view(np.uint8)])
    if code == VARINT:
        gaps = _gaps(idx)
        lengths = _varint_lengths(gaps)
        starts = np.cumsum(lengths) - lengths
        out = np.empty(int(lengths.sum()), dtype=np.uint8)
        for j in range(MAX_VARINT_BYTES):
            sel = lengths > j
            byte = (gaps[sel] >> (7 * j)) & 0x7F
            more = (lengths[sel] > j + 1).astype(np.int64) << 7
            out[starts[sel] + j] = (byte | more).astype(np.uint8)
        return out
    if code == BITMAP:
        bits = np.zeros(numel, dtype=bool)
        bits[idx] = True
        return np.packbits(bits, bitorder="little")
    if code == DENSE:
        return np.zeros(0, dtype=np.uint8)
    raise PayloadError(f"unknown index encoding {code}")


def decode(code: int, data: np.ndarray, count: int, numel: int) -> np.ndarray:
    """Decode ``count`` indices in [0, numel) from uint8 ``data``; PayloadError if malformed."""
    n = len(data)
    if code == DENSE:
        if n or count != numel:
            raise PayloadError("dense payload with index bytes or a partial count")
        return np.arange(numel, dtype=np.int64)
    if code == INT32:
        if n != 4 * count:
            raise PayloadError(f"int32 indices: {n} bytes for {count} indices")
        idx = data.view("<i4").astype(np.int64)
    elif code == BLOCK16:
        blocks = -(-numel // BLOCK)
        if n != 4 * blocks + 2 * count:
            raise PayloadError(f"block16 indices: {n} bytes for {count} indices in {blocks} blocks")
        counts = data[:4 * blocks].view("<u4").astype(np.int64)
        if counts.sum() != count:
            raise PayloadError("block16 indices: block counts do not add up")
        offsets = data[4 * blocks:].view("<u2").astype(np.int64)
        idx = np.repeat(np.arange(blocks, dtype=np.int64) << 16, counts) + offsets
    elif code == VARINT:
        ends = (data & 0x80) == 0
        if int(ends.sum()) != count or (n and not ends[-1]):
            raise PayloadError("varint indices: truncated or wrong count")
        if count == 0:
            return np.zeros(0, dtype=np.int64)
        starts = np.flatnonzero(np.concatenate([[True], ends[:-1]]))
        lengths = np.diff(np.append(starts, n))
        if lengths.max() > MAX_VARINT_BYTES:
            raise PayloadError("varint indices: overlong encoding")
        position = np.arange(n) - np.repeat(starts, lengths)
        parts = (data & 0x7F).astype(np.int64) << (7 * position)
        gaps = np.add.reduceat(parts, starts)
        idx = np.cumsum(gaps + 1) - 1
    elif code == BITMAP:
        if n != -(-numel // 8):
            raise PayloadError(f"bitmap: {n} bytes for {numel} elements")
        idx = np.flatnonzero(np.unpackbits(data, count=numel, bitorder="little")).astype(np.int64)
        if len(idx) != count:
            raise PayloadError("bitmap: number of set bits differs from the count")
    else:
        raise PayloadError(f"unknown index encoding {code}")
    if count and (idx[0] < 0 or idx[-1] >= numel or np.any(np.diff(idx) <= 0)):
        raise PayloadError("indices out of range or not strictly increasing")
    return idx
