"""What the compiled kernels share: numba's settings (cached machine code next to each
kernel module, no GIL held) and three bit-count intrinsics (one CPU instruction each where
the CPU has it: tzcnt, lzcnt, popcnt). Imported by the kernel modules only, which
``lazy.kernels`` loads on first use: a run without compression never imports numba.

Conventions of every kernel: indices are int64, sorted, distinct, in [0, n); magnitudes are
``abs``; ties at a selection boundary go to the lowest indices (so results are
deterministic).
"""
from __future__ import annotations

import sys

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.extending import intrinsic

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
_LOW16 = np.uint64(0xFFFF)  # the low 16 bits of a word


@njit(**_JIT)
def _lowest_bit(word):
    """Position of the lowest set bit of a uint64 (0 for a zero word, so that a caller
    writing without a branch stays at its group's first element)."""
    return _trailing_zeros(word) & 63
