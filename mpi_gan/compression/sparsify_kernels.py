"""Compiled (numba) kernels of the selections (``sparsify.py``): values at least a threshold, a
strided sample of magnitudes, the best k of a candidate set, k distinct seeded indices, and
the binned AdaComp selection with its residual update (one pass, optionally writing the
bitmap wire form). Pure functions on 1-D numpy arrays; loaded by ``lazy.kernels``."""
from __future__ import annotations

import numpy as np
from numba import njit

from .jit import _JIT, _LOW16, _lowest_bit, _popcount
from .lanes import bits_float, compress16, float_bits, store_float


_UNROLLED = 4  # candidates written without a branch per 64-element group


@njit(cache=True, nogil=True, fastmath=True)
def values_at_least(x, threshold, out_idx, out_val):
    """Write the i with |x_i| >= threshold into ``out_idx`` (in order) and x_i into
    ``out_val``; return how many there are (may exceed the buffers' length: then only
    the first ones are written). NaNs may or may not be taken (fastmath).

    Per group of 64 elements the comparison gives a 64-bit mask and a count in one
    vectorised loop (no byte mask in memory); the first ``_UNROLLED`` set bits are then
    written without a branch (a sparse selection rarely has more in a group; slots past
    the count are overwritten by the next group) and only the rare rest in a loop.
    """
    n = x.shape[0]
    cap = out_idx.shape[0]
    m = 0
    one = np.uint64(1)
    for group in range(n // 64):  # (a stepped range or a skip of empty groups is slower)
        base = 64 * group
        bits = np.uint64(0)
        count = 0
        for j in range(64):
            hit = abs(x[base + j]) >= threshold
            bits |= np.uint64(hit) << np.uint64(j)
            count += hit
        if m + _UNROLLED <= cap:
            for r in range(_UNROLLED):
                i = base + _lowest_bit(bits)
                out_idx[m + r] = i
                out_val[m + r] = x[i]
                bits &= bits - one
        if count > _UNROLLED or m + _UNROLLED > cap:
            for r in range(0 if m + _UNROLLED > cap else _UNROLLED, count):
                i = base + _lowest_bit(bits)
                if m + r < cap:
                    out_idx[m + r] = i
                    out_val[m + r] = x[i]
                bits &= bits - one
        m += count
    for i in range(n - n % 64, n):
        if abs(x[i]) >= threshold:
            if m < cap:
                out_idx[m] = i
                out_val[m] = x[i]
            m += 1
    return m


@njit(**_JIT)
def strided_sample(x, stride):
    """|x| at the starts of every ``stride``-th run of 16 consecutive elements (one cache
    line each: a sample of about 16 n / stride values for n / stride cache misses)."""
    n = x.shape[0]
    runs = max(1, n // stride)
    out = np.empty(16 * runs, x.dtype)
    m = 0
    for r in range(runs):
        start = r * stride
        for j in range(start, min(n, start + 16)):
            out[m] = abs(x[j])
            m += 1
    return out[:m]


@njit(**_JIT)
def keep_best(idx, vals, kth, k):
    """(indices, values): the entries of ``idx`` and ``vals`` (kept in order) whose |vals|
    exceed ``kth``, then the earliest of those equal to it, k in all (``kth``: the k-th
    largest of |vals|)."""
    greater = 0
    for j in range(idx.shape[0]):
        greater += abs(vals[j]) > kth
    ties = k - greater
    out = np.empty(k + 1, np.int64)
    out_val = np.empty(k + 1, vals.dtype)
    r = 0
    for j in range(idx.shape[0]):
        v = abs(vals[j])
        take = (v > kth) | ((v == kth) & (ties > 0))
        ties -= take & (v == kth)
        out[r] = idx[j]
        out_val[r] = vals[j]
        r += take
        if r == k:
            break
    return out[:r], out_val[:r]


@njit(**_JIT)
def _splitmix64(state):
    """(next state, 64 random bits) of SplitMix64 (Steele et al. 2014)."""
    state = state + np.uint64(0x9E3779B97F4A7C15)
    z = state
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return state, z ^ (z >> np.uint64(31))


@njit(**_JIT)
def random_indices(n, k, seed):
    """k distinct indices of [0, n) drawn uniformly by SplitMix64 from ``seed``, sorted.

    Draws (32 random bits x n) >> 32 into a bitmap until k are set (n < 2**32); for
    k > n / 2 it draws the n - k left out instead. O(k + n / 64) time, n / 8 bytes.
    """
    k = min(max(k, 0), n)
    invert = 2 * k > n
    want = n - k if invert else k
    words = np.zeros((n + 63) // 64, np.uint64)
    state = np.uint64(seed)
    have = 0
    one = np.uint64(1)
    while have < want:
        state, bits = _splitmix64(state)
        i = np.int64(((bits >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32))
        w, b = i >> 6, np.uint64(i & 63)
        if not (words[w] >> b) & one:
            words[w] |= one << b
            have += 1
    out = np.empty(k, np.int64)
    r = 0
    for w in range(words.shape[0]):
        word = ~words[w] if invert else words[w]
        base = w * 64
        while word and r < k:
            pos = _lowest_bit(word)
            if base + pos >= n:
                break
            out[r] = base + pos
            r += 1
            word &= word - one
    return out


@njit(cache=True, nogil=True, fastmath=True)
def bins_select(g, residual, bin_size, out):
    """AdaComp of Chen et al.: residual <- G = residual + g in place; in each bin of
    ``bin_size`` elements send i iff |G_i + g_i| >= max |G| over the bin (> 0).

    Writes the sent indices into ``out`` (int64, len >= len(g)) and returns
    (count, sum of the bins' max |G| in bin order, number of bins). Each bin is
    accumulated, compared and compacted while it is in the L1 cache.
    """
    n = g.shape[0]
    mask = np.empty(bin_size, np.uint8)
    m = 0
    total = 0.0
    bins = (n + bin_size - 1) // bin_size
    for b in range(bins):
        lo = b * bin_size
        size = min(bin_size, n - lo)
        gmax = residual[lo] * 0
        for j in range(size):
            value = residual[lo + j] + g[lo + j]
            residual[lo + j] = value
            gmax = max(gmax, abs(value))
        total += gmax
        if gmax > 0:
            for j in range(size):
                mask[j] = abs(residual[lo + j] + g[lo + j]) >= gmax
            for j in range(size):  # branch-free: a fifth of the entries or so pass
                out[m] = lo + j
                m += mask[j]
    return m, total, bins


@njit(**_JIT)
def bins_send(residual, idx, sign, scale):
    """The values sent at ``idx`` and the residual update R_i -= sent_i, in one pass:
    G_i itself (R_i becomes 0), or +-scale by the sign of G_i when ``sign``."""
    out = np.empty(idx.shape[0], residual.dtype)
    for j in range(idx.shape[0]):
        i = idx[j]
        value = residual[i]
        if sign:
            value = -scale if value < 0 else scale
        out[j] = value
        residual[i] -= value
    return out


_MAGNITUDE = np.int32(0x7FFFFFFF)  # float32 bits without the sign




@njit(cache=True, nogil=True, fastmath=True)
def bins_bitmap_select(g, residual, bin_size, words, wire, start):
    """AdaComp of Chen et al., exact values, for float32 and ``bin_size`` a multiple of 64:
    ``bins_select`` and ``bins_send`` in one pass that writes the wire form directly.

    residual <- G = residual + g; in each bin send i iff |G_i + g_i| >= max |G| over the
    bin (> 0); the sent G_i go, packed and in order, to the float32s from byte ``start``
    of the uint8 ``wire`` (len >= start + 4 len(g) + 64: the packing writes 16 lanes), and
    their residual becomes 0. Bit i of ``words`` (uint64, len >= ceil(len(g) / 64)) is
    set iff i is sent. Returns (count, sum of the bins' max |G| in bin order, bins).

    Each 64-element group is accumulated (max by the magnitudes' integer bit patterns,
    which vectorises), compared into a mask and packed 16 lanes at a time while in L1.
    Indices are unsigned: numba wraps negative indices, and a signed index the compiler
    cannot prove positive keeps these loops from vectorising (5x slower)."""
    n = np.uint64(g.shape[0])  # every index and offset below is uint64 (numba gives
    four = np.uint64(4)        # float64 for int64 mixed with uint64)
    start = np.uint64(start)
    size = np.uint64(bin_size)
    groups = size >> np.uint64(6)
    full = n // size
    sent = np.uint64(0)
    total = 0.0
    zero = residual.dtype.type(0)
    for b in range(full):
        lo = b * size
        top = np.int32(0)
        for c in range(groups):
            base = lo + (c << np.uint64(6))
            for j in range(64):
                k = base + np.uint64(j)
                value = residual[k] + g[k]
                residual[k] = value
                top = max(top, float_bits(value) & _MAGNITUDE)
        gmax = bits_float(top)
        total += gmax
        for c in range(groups):
            base = lo + (c << np.uint64(6))
            bits = np.uint64(0)
            for j in range(64):
                k = base + np.uint64(j)
                hit = abs(residual[k] + g[k]) >= gmax
                bits |= np.uint64(hit) << np.uint64(j)
            if top == 0:
                bits = np.uint64(0)
            words[base >> np.uint64(6)] = bits
            for q in range(4):
                part = bits >> np.uint64(16 * q)
                compress16(wire, start + four * sent, residual,
                           four * (base + np.uint64(16 * q)), part)
                sent += np.uint64(_popcount(part & _LOW16))
            for j in range(64):
                k = base + np.uint64(j)
                keep = ((bits >> np.uint64(j)) & np.uint64(1)) == 0
                residual[k] = residual[k] if keep else zero
    lo = full * size  # the last, shorter bin: element by element
    if lo < n:
        gmax = zero
        for k in range(lo, n):
            residual[k] += g[k]
            gmax = max(gmax, abs(residual[k]))
        total += gmax
        for w in range(lo >> np.uint64(6), (n + np.uint64(63)) >> np.uint64(6)):
            words[w] = np.uint64(0)
        for k in range(lo, n):
            if gmax > 0 and abs(residual[k] + g[k]) >= gmax:
                words[k >> np.uint64(6)] |= np.uint64(1) << (k & np.uint64(63))
                store_float(wire, start + four * sent, residual[k])
                residual[k] = zero
                sent += np.uint64(1)
    return int(sent), total, int(full) + (1 if lo < n else 0)
