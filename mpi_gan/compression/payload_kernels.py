"""Compiled (numba) kernels of the payload decoder (``payload.py``): sign values, and the
scatter of received values into a dense tensor, from an index list or straight from a
bitmap payload's bytes. Loaded by ``lazy.kernels``."""
from __future__ import annotations

import numpy as np
from numba import njit

from .jit import _JIT, _LOW16, _popcount
from .lanes import expand16, load_float


@njit(**_JIT)
def sign_values(bits, count, scale):
    """float32 (count,): -scale where bit j of the little-endian ``bits`` is set, else
    +scale (the SIGN value section decoded; ``bits`` holds at least count bits)."""
    out = np.empty(count, np.float32)
    positive = np.float32(scale)
    for j in range(count):
        negative = (bits[j >> 3] >> (j & 7)) & 1
        out[j] = -positive if negative else positive
    return out


@njit(**_JIT)
def _bitmap_holds(data, n, count):
    """Whether the little-endian bitmap ``data`` has (n + 7) // 8 bytes whose set bits
    number ``count``, none at n or past it."""
    if data.shape[0] != (n + 7) // 8:
        return False
    whole = n // 64
    words = data[:8 * whole].view(np.uint64)
    set_bits = 0
    for w in range(whole):
        set_bits += _popcount(words[w])
    for i in range(64 * whole, 8 * data.shape[0]):
        bit = (data[i >> 3] >> (i & 7)) & 1
        if bit and i >= n:
            return False
        set_bits += bit
    return set_bits == count


@njit(**_JIT)
def bitmap_scatter(data, values, out):
    """out[i] = the next of ``values`` where bit i of the little-endian bitmap ``data`` is
    set, 0 elsewhere: a bitmap payload decoded straight into the dense buffer, with no
    index array between (for a dense selection that array is larger than the tensor).

    Returns ok, checked before ``out`` is touched: ``data`` has (len(out) + 7) // 8 bytes
    whose set bits number len(values), none past len(out). Branch-free per bit (the
    value is read and selected either way)."""
    n = out.shape[0]
    count = values.shape[0]
    if not _bitmap_holds(data, n, count):
        return False
    r = 0
    zero = out.dtype.type(0)
    for j in range(data.shape[0]):
        byte = data[j]
        base = 8 * j
        if r + 8 <= count and base + 8 <= n:
            for b in range(8):
                hit = (byte >> b) & 1
                value = values[r]  # r < count here: read it either way, then select
                out[base + b] = value if hit else zero
                r += hit
        else:
            for b in range(min(8, n - base)):
                if (byte >> b) & 1:
                    out[base + b] = values[r]
                    r += 1
                else:
                    out[base + b] = zero
    return True


@njit(**_JIT)
def bitmap_expand(data, values, count, out):
    """``bitmap_scatter`` of float32 values read from the uint8 ``values`` (4 count bytes,
    any alignment: the value section of a received payload, used in place) into float32
    ``out``: 16 lanes at a time (``lanes.expand16``), element by element only where fewer
    than 64 values are left. Returns ok, checked before ``out`` is touched."""
    n = out.shape[0]
    if values.shape[0] != 4 * count or not _bitmap_holds(data, n, count):
        return False
    whole = n // 64
    words = data[:8 * whole].view(np.uint64)
    r = 0
    zero = np.float32(0)
    one = np.uint64(1)
    for w in range(whole):
        bits = words[w]
        base = 64 * w
        if r + 64 <= count:  # the native expand reads 16 values whatever the mask
            for q in range(4):
                part = bits >> np.uint64(16 * q)
                expand16(out, 4 * (base + 16 * q), values, 4 * r, part)
                r += _popcount(part & _LOW16)
        else:
            for j in range(64):
                if (bits >> np.uint64(j)) & one:
                    out[base + j] = load_float(values, 4 * r)
                    r += 1
                else:
                    out[base + j] = zero
    for i in range(64 * whole, n):
        if (data[i >> 3] >> (i & 7)) & 1:
            out[i] = load_float(values, 4 * r)
            r += 1
        else:
            out[i] = zero
    return True


@njit(**_JIT)
def scatter(out, idx, values):
    """out[:] = 0; out[idx] = values (one pass to clear, one over the sent entries)."""
    out[:] = 0
    for j in range(idx.shape[0]):
        out[idx[j]] = values[j]
