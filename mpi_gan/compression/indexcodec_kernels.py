"""Compiled (numba) kernels of the index codecs (``indexcodec.py``): varint gaps, Rice and
exp-Golomb bit streams, bitmaps; each decoder validates what it reads (a malformed
payload returns ok=False, never reads out of bounds). Loaded by ``lazy.kernels``."""
from __future__ import annotations

import numpy as np
from numba import njit

from .jit import _JIT, _leading_zeros, _trailing_zeros


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
