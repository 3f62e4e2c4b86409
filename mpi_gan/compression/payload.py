"""The wire form of one compressed tensor: a tiny header and two flat byte sections.

Layout (little endian), ``HEADER_BASE + 4 * ndim`` bytes of header:
  magic b"CP" | version u8 | dtype u8 | ndim u8 | index code u8 | value code u8 | pad u8
  shape: ndim x u32 | count u32 (values sent) | scale f32 | index bytes u32 | value bytes u32
then the index section (``indexcodec``) and the value section:
  RAW   count values in the tensor's own dtype       F32  count float32
  F16   count float16                                SIGN count sign bits (1 = negative),
                                                          value = +-scale
  Q8    count int8 q in [-127, 127], value = q * scale (scale = max |value| / 127,
        rounded to nearest: at most scale / 2 off)
Everything the receiving rank needs (shape, dtype, count, encodings) is in the
header; ``nbytes`` is exactly what goes on the wire. ``Payload.from_bytes``
validates every field before touching the sections.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np
import torch

from . import indexcodec
from .indexcodec import PayloadError
from .lazy import kernels

MAGIC, VERSION = b"CP", 1
MAX_NUMEL = 1 << 31  # int32 indices address every element
_FIXED = struct.Struct("<2sBBBBBB")
_TAIL = struct.Struct("<IfII")
HEADER_BASE = _FIXED.size + _TAIL.size  # 24 bytes + 4 per dimension
RAW, F32, F16, SIGN, Q8 = 0, 1, 2, 3, 4
VALUE_NAMES = {RAW: "raw", F32: "float32", F16: "float16", SIGN: "sign+scale", Q8: "int8+scale"}
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
DTYPE_CODE = {dt: i for i, dt in enumerate(DTYPES)}
_RAW_NUMPY = {torch.float32: "<f4", torch.float64: "<f8", torch.float16: "<f2",
              torch.bfloat16: "<i2"}


@dataclass
class Payload:
    """One compressed tensor: header fields plus ``indices`` and ``values`` (uint8 arrays)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    count: int
    index_code: int
    value_code: int
    scale: float
    indices: np.ndarray
    values: np.ndarray
    # the whole wire form, where a compressor wrote the sections in place after room for
    # the header (``in_wire``): ``to_bytes`` then fills the header and copies nothing
    wire: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def header(self) -> bytes:
        return (_FIXED.pack(MAGIC, VERSION, DTYPE_CODE[self.dtype], len(self.shape),
                            self.index_code, self.value_code, 0)
                + struct.pack(f"<{len(self.shape)}I", *self.shape)
                + _TAIL.pack(self.count, self.scale, len(self.indices), len(self.values)))

    @property
    def nbytes(self) -> int:
        """Bytes on the wire: header + index section + value section."""
        return HEADER_BASE + 4 * len(self.shape) + len(self.indices) + len(self.values)

    def to_bytes(self) -> np.ndarray:
        """The whole payload as one uint8 array (what is sent)."""
        head = np.frombuffer(self.header(), dtype=np.uint8)
        if self._sections_in_wire(len(head)):
            self.wire[:len(head)] = head
            return self.wire
        return np.concatenate([head, self.indices, self.values])

    def _sections_in_wire(self, header: int) -> bool:
        """Whether ``wire`` is the header's room followed by ``indices`` and ``values``
        themselves (not so after ``dataclasses.replace`` of a section, say)."""
        if self.wire is None or len(self.wire) != header + len(self.indices) + len(self.values):
            return False
        at = self.wire.ctypes.data + header
        return (self.indices.ctypes.data == at and self.values.ctypes.data == at + len(self.indices)
                and self.indices.flags.c_contiguous and self.values.flags.c_contiguous)

    @classmethod
    def from_bytes(cls, data, offset: int = 0) -> tuple["Payload", int]:
        """Parse one payload starting at ``offset`` of uint8 ``data``; returns (payload, end)."""
        data = np.asarray(data, dtype=np.uint8)
        if len(data) - offset < _FIXED.size:
            raise PayloadError("payload truncated: no room for its header")
        magic, version, dtype, ndim, icode, vcode, _ = _FIXED.unpack_from(data, offset)
        if magic != MAGIC or version != VERSION:
            raise PayloadError(f"not a compressed payload (magic {magic!r}, version {version})")
        if dtype >= len(DTYPES) or icode not in indexcodec.NAMES or vcode not in VALUE_NAMES:
            raise PayloadError(f"payload header: bad dtype/encoding codes {dtype}/{icode}/{vcode}")
        pos = offset + _FIXED.size
        if len(data) - pos < 4 * ndim + _TAIL.size:
            raise PayloadError("payload truncated inside its header")
        shape = struct.unpack_from(f"<{ndim}I", data, pos)
        count, scale, ilen, vlen = _TAIL.unpack_from(data, pos + 4 * ndim)
        pos += 4 * ndim + _TAIL.size
        if len(data) - pos < ilen + vlen:
            raise PayloadError(f"payload truncated: header promises {ilen + vlen} section bytes, "
                               f"{len(data) - pos} remain")
        if math.prod(shape) > MAX_NUMEL:
            raise PayloadError(f"payload declares shape {shape}, more than {MAX_NUMEL} elements")
        payload = cls(tuple(shape), DTYPES[dtype], count, icode, vcode, scale,
                      data[pos:pos + ilen], data[pos + ilen:pos + ilen + vlen])
        if count > payload.numel:
            raise PayloadError(f"payload sends {count} values of a {payload.numel}-element tensor")
        if vlen != value_bytes(vcode, count, payload.dtype):
            raise PayloadError(f"payload value section: {vlen} bytes for {count} values")
        return payload, pos + ilen + vlen


def value_bytes(code: int, count: int, dtype: torch.dtype) -> int:
    """Size of a value section."""
    if code == RAW:
        return count * torch.empty(0, dtype=dtype).element_size()
    if code == F32:
        return 4 * count
    if code == F16:
        return 2 * count
    if code == Q8:
        return count
    return -(-count // 8)  # SIGN


def _to_numpy(values: torch.Tensor) -> np.ndarray:
    values = values.detach().cpu()  # a device tensor is copied to the host once, here
    if values.dtype == torch.bfloat16:
        return values.view(torch.int16).numpy()
    return values.numpy()


def q8_scale(values: torch.Tensor) -> float:
    """The float32 step of the Q8 code: max |values| / 127 (0 for no or zero values)."""
    if not values.numel():
        return 0.0
    return float(np.float32(float(values.detach().abs().max()) / 127))


def encode_values(code: int, values: torch.Tensor, scale: float = 0.0) -> np.ndarray:
    """Value section for a 1-D tensor of the values sent (``scale``: Q8's step)."""
    values = values.detach().reshape(-1).cpu()
    if code == RAW:
        return np.ascontiguousarray(_to_numpy(values)).view(np.uint8)
    if code == F32:
        return values.to(torch.float32).numpy().view(np.uint8)
    if code == F16:
        return values.to(torch.float16).numpy().view(np.uint8)
    if code == SIGN:
        return np.packbits((values < 0).numpy(), bitorder="little")
    if code == Q8:
        if scale == 0.0:
            return np.zeros(len(values), dtype=np.uint8)
        q = torch.round(values.to(torch.float32) / np.float32(scale)).clamp_(-127, 127)
        return q.to(torch.int8).numpy().view(np.uint8)
    raise PayloadError(f"unknown value encoding {code}")


def decode_values(payload: Payload) -> torch.Tensor:
    """The sent values as a 1-D tensor of the payload's dtype."""
    v, n = payload.values, payload.count
    if payload.value_code == RAW:
        raw = torch.from_numpy(v.view(_RAW_NUMPY[payload.dtype]).copy())
        return raw.view(torch.bfloat16) if payload.dtype == torch.bfloat16 else raw
    if payload.value_code == F32:
        out = torch.from_numpy(v.view("<f4").copy())
    elif payload.value_code == F16:
        out = torch.from_numpy(v.view("<f2").copy())
    elif payload.value_code == Q8:
        out = torch.from_numpy(v.view(np.int8).astype(np.float32)) * np.float32(payload.scale)
    else:
        sign_values = kernels("payload").sign_values
        out = torch.from_numpy(sign_values(v, n, payload.scale))
    return out.to(payload.dtype)


def _check_compressible(tensor: torch.Tensor) -> None:
    if tensor.numel() > MAX_NUMEL:
        raise ValueError(f"cannot compress a tensor of {tensor.numel()} > {MAX_NUMEL} elements")
    if tensor.dtype not in DTYPE_CODE:
        raise ValueError(f"cannot compress tensors of dtype {tensor.dtype}; "
                         f"supported: {[str(d) for d in DTYPES]}")


def make_payload(tensor: torch.Tensor, indices: torch.Tensor | None, values: torch.Tensor,
                 value_code: int, scale: float = 0.0) -> Payload:
    """Build the payload sending ``values`` at sorted flat ``indices`` (None: all, dense)."""
    _check_compressible(tensor)
    numel = tensor.numel()
    if value_code == Q8:
        scale = q8_scale(values)
    if indices is None:
        icode, ibytes, count = indexcodec.DENSE, np.zeros(0, dtype=np.uint8), numel
    else:
        idx = np.ascontiguousarray(indices.detach().cpu().numpy(), dtype=np.int64)
        (icode, ibytes), count = indexcodec.choose_and_encode(idx, numel), len(idx)
    return Payload(tuple(tensor.shape), tensor.dtype, count, icode, value_code, float(scale),
                   ibytes, encode_values(value_code, values, scale))


def header_size(shape) -> int:
    """Bytes of the header of a payload of a tensor of ``shape``."""
    return HEADER_BASE + 4 * len(shape)


def in_wire(tensor: torch.Tensor, wire: np.ndarray, index_code: int, index_bytes: int,
            count: int, value_code: int, scale: float = 0.0) -> Payload:
    """The payload whose index section (``index_bytes``) and value section (``count``
    values) a compressor wrote into ``wire`` after ``header_size(tensor.shape)`` bytes."""
    _check_compressible(tensor)
    head = header_size(tensor.shape)
    end = head + index_bytes + value_bytes(value_code, count, tensor.dtype)
    return Payload(tuple(tensor.shape), tensor.dtype, count, index_code, value_code,
                   float(scale), wire[head:head + index_bytes], wire[head + index_bytes:end],
                   wire[:end])


def sent_entries(payload: Payload, offset: int = 0) -> tuple[slice | torch.Tensor, torch.Tensor]:
    """Where a payload's values go in a flat tensor that holds its tensor from ``offset``
    on, and the values (in the payload's dtype, ``decode_values``): a slice over every
    entry for a dense payload, int64 flat indices (count,) for a sparse one.
    ``flat[where] op= values`` applies what was sent without building the dense tensor."""
    if payload.index_code == indexcodec.DENSE:
        return slice(offset, offset + payload.numel), decode_values(payload)
    idx = torch.from_numpy(indexcodec.decode(payload.index_code, payload.indices,
                                             payload.count, payload.numel))
    return idx + offset if offset else idx, decode_values(payload)


def decode_payload(payload: Payload, out: torch.Tensor | None = None) -> torch.Tensor:
    """The dense tensor a payload stands for (zeros where nothing was sent).

    ``out``: a CPU tensor of the payload's shape and dtype to write it into (a receive
    buffer reused every iteration; a new tensor is allocated otherwise); returns it.
    """
    numel = payload.numel
    if out is not None and (tuple(out.shape) != payload.shape or out.dtype != payload.dtype
                            or not out.is_contiguous() or out.device.type != "cpu"):
        raise ValueError(f"decode into {tuple(out.shape)} {out.dtype} on {out.device}: the "
                         f"payload holds {payload.shape} {payload.dtype}")
    if payload.index_code == indexcodec.BITMAP and payload.dtype in (torch.float32,
                                                                     torch.float64):
        return _bitmap_payload(payload, out)
    idx = indexcodec.decode(payload.index_code, payload.indices, payload.count, numel)
    values = decode_values(payload)
    if payload.index_code == indexcodec.DENSE:
        if out is None:
            return values.reshape(payload.shape)
        return out.copy_(values.reshape(payload.shape))
    if out is None:
        out = torch.empty(payload.shape, dtype=payload.dtype)
    if payload.dtype in (torch.float32, torch.float64):
        scatter = kernels("payload").scatter
        scatter(out.view(-1).numpy(), idx, values.numpy())
    else:
        out.zero_()
        out.view(-1)[torch.from_numpy(idx)] = values
    return out


def _bitmap_payload(payload: Payload, out: torch.Tensor | None) -> torch.Tensor:
    """``decode_payload`` of a float32/float64 bitmap payload: one pass from the bitmap and
    the values into the dense tensor, no index array (float32 values of a float32 tensor
    are read where they lie in the received bytes: ``payload_kernels.bitmap_expand``)."""
    compiled = kernels("payload")
    bitmap_expand, bitmap_scatter = compiled.bitmap_expand, compiled.bitmap_scatter
    dense = torch.empty(payload.shape, dtype=payload.dtype) if out is None else out
    bitmap = np.ascontiguousarray(payload.indices)
    if payload.dtype == torch.float32 and payload.value_code in (RAW, F32):
        ok = bitmap_expand(bitmap, np.ascontiguousarray(payload.values), payload.count,
                           dense.view(-1).numpy())
    else:
        ok = bitmap_scatter(bitmap, decode_values(payload).numpy(), dense.view(-1).numpy())
    if not ok:
        raise PayloadError(f"bitmap: {len(payload.indices)} bytes whose set bits differ from "
                           f"the count {payload.count} or lie past {payload.numel} elements")
    return dense
