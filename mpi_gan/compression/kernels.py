"""Compiled (numba) kernels of the sparse compressors: one pass over memory where torch
would make several. Pure functions on 1-D numpy arrays; nothing here keeps state.

Imported lazily (``sparsify.kernels()``) so that a run without compression never loads
numba. Compiled on first use and cached next to this file (``cache=True``), so later
processes load the machine code in milliseconds.

Conventions: indices are int64, sorted, distinct, in [0, n); magnitudes are ``abs``;
ties at a selection boundary go to the lowest indices (so results are deterministic).
"""
from __future__ import annotations

import sys

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.extending import intrinsic

from .lanes import bits_float, compress16, expand16, float_bits, load_float, store_float

if sys.byteorder != "little":  # the bit writers store 64-bit words and send their bytes
    raise ImportError("mpi_gan's compression kernels need a little-endian machine")

_JIT = dict(cache=True, nogil=True)


def _bit_count_intrinsic(name: str, build):
    """A numba intrinsic uint64 -> int64 emitting LLVM's ``name`` (one instruction where
    the CPU has it: tzcnt, lzcnt, popcnt), built by ``build(builder, value)``."""
    def typer(typingctx, word):
        def codegen(context, builder, signature, args):
            return build(builder, args[0])
        return types.int64(types.uint64), codegen
    typer.__name__ = name
    return intrinsic(typer)


_FALSE = ir.Constant(ir.IntType(1), 0)  # defined for 0: 64
_trailing_zeros = _bit_count_intrinsic("_trailing_zeros", lambda b, v: b.cttz(v, _FALSE))
_leading_zeros = _bit_count_intrinsic("_leading_zeros", lambda b, v: b.ctlz(v, _FALSE))
_popcount = _bit_count_intrinsic("_popcount", lambda b, v: b.ctpop(v))


@njit(**_JIT)
def _lowest_bit(word):
    """Position of the lowest set bit of a uint64 (0 for a zero word, so that a caller
    writing without a branch stays at its group's first element)."""
    return _trailing_zeros(word) & 63


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
_LOW16 = np.uint64(0xFFFF)


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


# ---- index codecs (see indexcodec) ----------------------------------------------------

@njit(**_JIT)
def varint_encode(idx, size):
    out = np.empty(size, np.uint8)
    pos = 0
    prev = -1
    for j in range(idx.shape[0]):
        gap = idx[j] - prev - 1
        prev = idx[j]
        while gap >= 128:
            out[pos] = (gap & 0x7F) | 0x80
            gap >>= 7
            pos += 1
        out[pos] = gap
        pos += 1
    return out


@njit(**_JIT)
def varint_decode(data, count, max_bytes):
    """(indices, ok); ok is False on a truncated, overlong or miscounted stream."""
    out = np.empty(count, np.int64)
    pos = 0
    n = data.shape[0]
    prev = -1
    for j in range(count):
        gap = 0
        shift = 0
        while True:
            if pos >= n or shift >= 7 * max_bytes:
                return out, False
            byte = np.int64(data[pos])
            pos += 1
            gap |= (byte & 0x7F) << shift
            shift += 7
            if byte < 128:
                break
        prev = prev + gap + 1
        out[j] = prev
    return out, pos == n


@njit(**_JIT)
def gap_code_sizes(idx):
    """(varint bytes, best Rice parameter r, Rice bits with r) of the gaps
    idx[j] - idx[j-1] - 1, in one pass: r is the best of three around
    log2(0.69 x mean gap). Rice bits per gap: (gap >> r) + 1 + r."""
    count = idx.shape[0]
    if count == 0:
        return 0, 0, 0
    mean = (idx[count - 1] + 1) / count
    guess = 0
    while guess < 31 and (1 << (guess + 1)) <= mean * 0.69:
        guess += 1
    lo = max(0, min(guess - 1, 29))
    size = 0
    b0 = b1 = b2 = 0
    prev = -1
    for j in range(count):
        gap = idx[j] - prev - 1
        prev = idx[j]
        b0 += gap >> lo
        b1 += gap >> (lo + 1)
        b2 += gap >> (lo + 2)
        size += 1
        while gap >= 128:
            gap >>= 7
            size += 1
    best, best_bits = lo, b0 + count * (1 + lo)
    if b1 + count * (2 + lo) < best_bits:
        best, best_bits = lo + 1, b1 + count * (2 + lo)
    if b2 + count * (3 + lo) < best_bits:
        best, best_bits = lo + 2, b2 + count * (3 + lo)
    return size, best, best_bits


@njit(**_JIT)
def _lowest_zero(acc):
    """Position of the lowest zero bit of ``acc`` (64 if it has none)."""
    return _trailing_zeros(~acc)


@njit(**_JIT)
def _put(acc, fill, value, bits):
    """Append the ``bits`` low bits of ``value`` (value < 2**bits, 1 <= bits <= 64) to a
    bit stream (each word's least significant bit first) whose current word ``acc`` holds
    ``fill`` (< 64) bits. Returns (word, full, acc, fill): the caller stores ``word`` as
    the current word and moves to the next one when ``full`` (1); ``acc`` and ``fill``
    are then what spilled over. Scalars only: a kernel that passed its arrays to a helper
    in its inner loop would pay two atomic reference counts per call."""
    v = np.uint64(value)
    word = acc | (v << np.uint64(fill))
    fill += bits
    if fill < 64:
        return word, 0, word, fill
    fill -= 64
    return word, 1, (v >> np.uint64(1)) >> np.uint64(bits - fill - 1), fill


@njit(**_JIT)
def _stream(nbits):
    """Zeroed uint64 words for a bit stream of ``nbits`` bits (and one spare)."""
    return np.zeros((nbits + 63) // 64 + 1, np.uint64)


@njit(**_JIT)
def _stream_bytes(words, w, acc, nbits):
    """The first (nbits + 7) // 8 bytes of the stream once its pending bits are stored,
    little-endian: byte 0 holds the stream's first 8 bits (least significant first)."""
    words[w] = acc
    return words.view(np.uint8)[:(nbits + 7) // 8]


@njit(**_JIT)
def _padded_words(data):
    """uint8 ``data`` copied into uint64 words, followed by at least two zero words: a
    64-bit ``_window`` at any bit position up to 64 bits past the end stays in bounds."""
    words = np.zeros(data.shape[0] // 8 + 3, np.uint64)
    words.view(np.uint8)[:data.shape[0]] = data
    return words


@njit(**_JIT)
def _window(lo, hi, offset):
    """The 64 stream bits starting at bit ``offset`` (0..63) of word ``lo``; ``hi`` is the
    next word. Read as ``_window(words[p >> 6], words[(p >> 6) + 1], p & 63)`` at bit p."""
    return (lo >> np.uint64(offset)) | ((hi << np.uint64(1)) << np.uint64(63 - offset))


@njit(**_JIT)
def rice_encode(idx, r, nbits):
    """Bit stream of ``nbits`` bits, least significant bit of each byte first: per gap
    (idx[j] - idx[j-1] - 1), gap >> r one bits, a zero bit, then the r low bits
    (r <= 31: written together once the unary part is below 32 bits)."""
    words = _stream(nbits)
    acc, fill, w = np.uint64(0), 0, 0
    low_mask = (1 << r) - 1
    prev = -1
    for j in range(idx.shape[0]):
        gap = idx[j] - prev - 1
        prev = idx[j]
        q = gap >> r
        while q >= 32:
            word, full, acc, fill = _put(acc, fill, 0xFFFFFFFF, 32)
            words[w] = word
            w += full
            q -= 32
        # q ones, a zero, the r low bits
        word, full, acc, fill = _put(acc, fill, ((1 << q) - 1) | ((gap & low_mask) << (q + 1)),
                                     q + 1 + r)
        words[w] = word
        w += full
    return _stream_bytes(words, w, acc, nbits)


@njit(**_JIT)
def rice_decode(data, count, r, numel):
    """(indices, ok); ok is False if the stream ends early, an index reaches ``numel``, or
    more than the last byte's padding is left over.

    The stream is read through 64-bit windows, and every code that lies whole in a window
    is decoded from it without touching memory (a code's unary part is counted with the
    lowest zero bit's position); a code longer than what is left of the window starts a
    new window at that code, and one longer than 64 bits is read a window at a time."""
    out = np.empty(count, np.int64)
    words = _padded_words(data)
    end = 8 * data.shape[0]
    p = 0
    prev = -1
    ur = np.uint64(r)
    low_mask = np.uint64((1 << r) - 1)
    one = np.uint64(1)
    j = 0
    while j < count:
        if p > end:
            return out, False
        win = _window(words[p >> 6], words[(p >> 6) + 1], p & 63)
        left = 64
        while j < count:
            ones = _lowest_zero(win)
            size = ones + 1 + r
            if size > left:
                break
            shifted = (win >> np.uint64(ones)) >> one
            prev += (ones << r | np.int64(shifted & low_mask)) + 1
            if prev >= numel:
                return out, False
            out[j] = prev
            j += 1
            win = shifted >> ur
            left -= size
            p += size
        if j < count and left == 64:  # a code of more than 64 bits: a long unary part
            q = 0
            while True:
                ones = _lowest_zero(_window(words[p >> 6], words[(p >> 6) + 1], p & 63))
                q += ones
                p += ones
                if p >= end or q > numel:
                    return out, False
                if ones < 64:
                    break
            p += 1  # the zero
            low = np.int64(_window(words[p >> 6], words[(p >> 6) + 1], p & 63) & low_mask)
            p += r
            prev += ((q << r) | low) + 1
            if prev >= numel:
                return out, False
            out[j] = prev
            j += 1
    return out, p <= end and (p + 7) // 8 == data.shape[0]


@njit(**_JIT)
def _bit_length(v):
    """floor(log2 v) for 1 <= v < 2**63."""
    return 63 - _leading_zeros(np.uint64(v))


@njit(**_JIT)
def expg_bits(idx, k):
    """Bits of the exponential-Golomb code of order k of the gaps: per gap, with
    v = (gap >> k) + 1 and L = floor(log2 v): L one bits, a zero bit, the L low bits of
    v, then the k low bits of the gap (2 L + 1 + k bits)."""
    total = 0
    prev = -1
    for j in range(idx.shape[0]):
        gap = idx[j] - prev - 1
        prev = idx[j]
        total += 2 * _bit_length((gap >> k) + 1)
    return total + idx.shape[0] * (1 + k)


_SMALL_GAPS = 256


@njit(**_JIT)
def _gap_class(gap):
    """(m, c) of ``gap``: m its bit length, c that of 2**m - 1 - gap ((0, 0) for 0)."""
    if gap == 0:
        return 0, 0
    one = np.uint64(1)
    m = _bit_length(gap) + 1
    rest = np.uint64((one << np.uint64(m)) - one) - np.uint64(gap)
    return m, (_bit_length(rest) + 1 if rest else 0)


@njit(**_JIT)
def expg_all_bits(idx):
    """``expg_bits`` for every order k = 0..31 in one pass over the gaps (int64 (32,)).

    With m = bit length of a gap g (0 for g = 0): L_k(g) = 0 for k >= m, and for k < m
    L_k(g) = m - 1 - k, plus 1 when g + 2**k reaches 2**m, that is when
    c = bit length of (2**m - 1 - g) is at most k. So a histogram of (m, c) over the gaps
    gives every order's total without a pass per order."""
    hist = np.zeros((65, 65), np.int64)
    small = np.zeros(_SMALL_GAPS, np.int64)  # gaps below this are counted by value first
    prev = -1
    for j in range(idx.shape[0]):
        gap = idx[j] - prev - 1
        prev = idx[j]
        if gap < _SMALL_GAPS:
            small[gap] += 1
        else:
            m, c = _gap_class(gap)
            hist[m, c] += 1
    for gap in range(_SMALL_GAPS):
        m, c = _gap_class(gap)
        hist[m, c] += small[gap]
    count = idx.shape[0]
    out = np.zeros(32, np.int64)
    for k in range(32):
        total = count * (1 + k)
        for m in range(k + 1, 65):
            for c in range(m + 1):
                if hist[m, c]:
                    total += 2 * hist[m, c] * (m - 1 - k + (c <= k))
        out[k] = total
    return out


@njit(**_JIT)
def expg_encode(idx, k, nbits):
    """The bit stream of ``expg_bits``' code of order k (``nbits`` bits, least
    significant bit of each byte first)."""
    words = _stream(nbits)
    acc, fill, w = np.uint64(0), 0, 0
    low_mask = (1 << k) - 1
    prev = -1
    for j in range(idx.shape[0]):
        gap = idx[j] - prev - 1
        prev = idx[j]
        v = (gap >> k) + 1
        length = _bit_length(v)
        # L ones, a zero and the L low bits of v (2 L + 1 <= 63 bits: gaps < 2**31)
        word, full, acc, fill = _put(acc, fill, ((1 << length) - 1)
                                     | ((v & ((1 << length) - 1)) << (length + 1)),
                                     2 * length + 1)
        words[w] = word
        w += full
        if k:  # then the k low bits of the gap
            word, full, acc, fill = _put(acc, fill, gap & low_mask, k)
            words[w] = word
            w += full
    return _stream_bytes(words, w, acc, nbits)


@njit(**_JIT)
def expg_decode(data, count, k, numel):
    """(indices, ok) of ``expg_encode``'s stream; ok is False if it ends early, an index
    reaches ``numel``, a length is impossible (over 31), or more than the padding is left
    over. Read through 64-bit windows, as ``rice_decode``."""
    out = np.empty(count, np.int64)
    words = _padded_words(data)
    end = 8 * data.shape[0]
    p = 0
    prev = -1
    low_mask = np.uint64((1 << k) - 1)
    for j in range(count):
        length = _lowest_zero(_window(words[p >> 6], words[(p >> 6) + 1], p & 63))
        if length > 31:
            return out, False
        p += length + 1
        high = np.int64(_window(words[p >> 6], words[(p >> 6) + 1], p & 63)
                        & np.uint64((1 << length) - 1))
        p += length
        low = np.int64(_window(words[p >> 6], words[(p >> 6) + 1], p & 63) & low_mask)
        p += k
        prev = prev + ((((1 << length) | high) - 1) << k | low) + 1
        if p > end or prev >= numel:
            return out, False
        out[j] = prev
    return out, (p + 7) // 8 == data.shape[0]


@njit(**_JIT)
def bitmap_encode(idx, n):
    out = np.zeros((n + 7) // 8, np.uint8)
    for j in range(idx.shape[0]):
        i = idx[j]
        out[i >> 3] |= np.uint8(1 << (i & 7))
    return out


@njit(**_JIT)
def bitmap_decode(data, count):
    """(indices of the set bits, ok) of a little-endian bitmap, ``count`` expected; ok is
    False if the bitmap has another number of set bits. The bitmap is the densest
    encoding's choice, so every bit of a non-zero byte is written without a branch (the
    index always, the count advanced by the bit)."""
    out = np.empty(count + 8, np.int64)
    r = 0
    for j in range(data.shape[0]):
        byte = data[j]
        if byte == 0:
            continue
        if r > count:
            return out[:count], False
        for b in range(8):
            out[r] = 8 * j + b
            r += (byte >> b) & 1
    return out[:count], r == count


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
