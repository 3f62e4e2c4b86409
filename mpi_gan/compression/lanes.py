"""numba intrinsics for the compiled kernels (``*_kernels.py``): 16 float32 lanes compressed or expanded
by a bit mask, float32 bit casts, and float32 loads and stores at any byte offset.

Where the CPU that numba compiles for has AVX-512 (``NATIVE_LANES``), compress and expand
are ``vcompressps`` / ``vexpandps`` between registers, with one plain 64-byte load and
store around them (the memory forms of those instructions are microcoded on AMD Zen 4
and 5: the compressing store measured 1.5x slower in the bins kernel). Elsewhere they are
LLVM's target-independent ``llvm.masked.compressstore`` / ``llvm.masked.expandload``,
which every backend lowers (to lane-by-lane code where it has no such instruction).
Callers allow for the difference: the native compress writes all 16 lanes (slots past the
kept ones hold garbage, to be overwritten), so its destination needs 16 floats of room.

Imported by the kernel modules only (numba is loaded lazily with them, ``lazy.py``).
numba's cache of a kernel is checked against its own source file only: after editing this
one, delete ``mpi_gan/compression/__pycache__/*_kernels.*`` (or touch the kernel modules).
"""
from __future__ import annotations

from llvmlite import ir
from numba import config, types
from numba.core import cgutils
from numba.core.extending import intrinsic

_F32 = ir.FloatType()
_LANES = ir.VectorType(_F32, 16)
_MASK = ir.VectorType(ir.IntType(1), 16)
_I16 = ir.IntType(16)


def _compiles_for_avx512() -> bool:
    """Whether numba emits code for this host's CPU and that CPU has AVX-512F (a cache
    built for a named CPU, NUMBA_CPU_NAME, gets the portable form)."""
    if config.CPU_NAME not in (None, "host"):
        return False
    try:
        from llvmlite import binding
        return bool(binding.get_host_cpu_features().get("avx512f", False))
    except Exception:  # noqa: BLE001 - no feature query: the portable form is correct anywhere
        return False


NATIVE_LANES = _compiles_for_avx512()


def _byte_pointer(context, builder, array_type, array, byte_offset):
    """float* to the byte ``byte_offset`` of ``array``'s data (any alignment)."""
    data = context.make_array(array_type)(context, builder, array).data
    raw = builder.bitcast(data, ir.IntType(8).as_pointer())
    return builder.bitcast(builder.gep(raw, [byte_offset]), _F32.as_pointer())


def _mask16(builder, mask):
    return builder.trunc(mask, _I16)


def _compress16(native: bool):
    def typer(typingctx, dst, dst_byte, src, src_byte, mask):
        def codegen(context, builder, signature, args):
            dst_ptr = _byte_pointer(context, builder, signature.args[0], args[0], args[1])
            src_ptr = _byte_pointer(context, builder, signature.args[2], args[2], args[3])
            lanes = builder.load(builder.bitcast(src_ptr, _LANES.as_pointer()), align=1)
            bits = _mask16(builder, args[4])
            if native:
                fn = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(_LANES, [_LANES, _LANES, _I16]),
                    "llvm.x86.avx512.mask.compress.ps.512")
                packed = builder.call(fn, [lanes, ir.Constant(_LANES, None), bits])
                builder.store(packed, builder.bitcast(dst_ptr, _LANES.as_pointer()), align=1)
            else:
                fn = cgutils.get_or_insert_function(
                    builder.module,
                    ir.FunctionType(ir.VoidType(), [_LANES, _F32.as_pointer(), _MASK]),
                    "llvm.masked.compressstore.v16f32")
                builder.call(fn, [lanes, dst_ptr, builder.bitcast(bits, _MASK)])
            return context.get_dummy_value()
        return types.void(dst, dst_byte, src, src_byte, mask), codegen
    typer.__name__ = "compress16" + ("_native" if native else "_portable")
    return intrinsic(typer)


def _expand16(native: bool):
    def typer(typingctx, dst, dst_byte, src, src_byte, mask):
        def codegen(context, builder, signature, args):
            dst_ptr = _byte_pointer(context, builder, signature.args[0], args[0], args[1])
            src_ptr = _byte_pointer(context, builder, signature.args[2], args[2], args[3])
            bits = _mask16(builder, args[4])
            zero = ir.Constant(_LANES, None)
            if native:
                lanes = builder.load(builder.bitcast(src_ptr, _LANES.as_pointer()), align=1)
                fn = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(_LANES, [_LANES, _LANES, _I16]),
                    "llvm.x86.avx512.mask.expand.ps.512")
                spread = builder.call(fn, [lanes, zero, bits])
            else:
                fn = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(_LANES, [_F32.as_pointer(), _MASK, _LANES]),
                    "llvm.masked.expandload.v16f32")
                spread = builder.call(fn, [src_ptr, builder.bitcast(bits, _MASK), zero])
            builder.store(spread, builder.bitcast(dst_ptr, _LANES.as_pointer()), align=1)
            return context.get_dummy_value()
        return types.void(dst, dst_byte, src, src_byte, mask), codegen
    typer.__name__ = "expand16" + ("_native" if native else "_portable")
    return intrinsic(typer)


# compress16(dst, dst_byte, src, src_byte, mask): the floats src[j] (16 of them from byte
# src_byte) whose bit j of mask (low 16 bits) is set, packed from byte dst_byte of dst.
# Reads 16 floats; writes popcount(mask & 0xffff) of them, and in the native form up to
# 16 (room needed).
compress16 = _compress16(NATIVE_LANES)
compress16_portable = _compress16(False)
# expand16(dst, dst_byte, src, src_byte, mask): 16 floats written from byte dst_byte of
# dst: lane j is the next float of src (from byte src_byte) where bit j of mask is set,
# 0 elsewhere. Reads popcount(mask & 0xffff) floats, and in the native form 16 (room
# needed).
expand16 = _expand16(NATIVE_LANES)
expand16_portable = _expand16(False)


@intrinsic
def float_bits(typingctx, value):
    """The int32 bit pattern of a float32 (for integer max of magnitudes: for floats
    >= 0 the bit patterns order as the values do)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.int32(types.float32), codegen


@intrinsic
def bits_float(typingctx, value):
    """The float32 of an int32 bit pattern."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], _F32)
    return types.float32(types.int32), codegen


@intrinsic
def store_float(typingctx, dst, dst_byte, value):
    """dst's bytes dst_byte..dst_byte+3 = float32 ``value`` (any alignment)."""
    def codegen(context, builder, signature, args):
        ptr = _byte_pointer(context, builder, signature.args[0], args[0], args[1])
        builder.store(context.cast(builder, args[2], signature.args[2], types.float32), ptr,
                      align=1)
        return context.get_dummy_value()
    return types.void(dst, dst_byte, value), codegen


@intrinsic
def load_float(typingctx, src, src_byte):
    """The float32 at byte ``src_byte`` of ``src`` (any alignment)."""
    def codegen(context, builder, signature, args):
        ptr = _byte_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load(ptr, align=1)
    return types.float32(src, src_byte), codegen
