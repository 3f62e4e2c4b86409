"""Gradient compression behind one interface (GRACE-style).

``compression.get(name, **params)`` returns a compressor with
``compress(tensor, name) -> Payload`` and ``decompress(payload, out=None) -> tensor``;
``Payload.nbytes`` is exactly what travels. ``parse_spec("topk:ratio=0.01")``
reads the command-line form. ``Channel`` chains residual memory and compressor.
Registered: none, fp16, topk, randomk, adacomp, adacomp_bins.
"""
from __future__ import annotations

import numpy as np
import torch

from .adacomp import AdaComp
from .adacomp_bins import AdaCompBins
from .base import Compressor
from .fp16 import FP16
from .indexcodec import PayloadError
from .memory import ResidualMemory
from .none import NoCompression
from .payload import Payload, sent_entries
from .randomk import RandomK
from .topk import TopK

REGISTRY: dict[str, type[Compressor]] = {
    cls.name: cls for cls in (NoCompression, FP16, TopK, RandomK, AdaComp, AdaCompBins)}


def get(name: str, **params) -> Compressor:
    """A new compressor; ValueError naming the valid names or parameters if wrong."""
    if name not in REGISTRY:
        raise ValueError(f"unknown compressor {name!r}; valid: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**params)


def _parse_value(text: str):
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def parse_spec(spec: str) -> Compressor:
    """``NAME[:key=value,...]`` -> compressor, e.g. ``adacomp:ratio=0.005,values=fp16``."""
    name, _, rest = spec.strip().partition(":")
    params = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"bad compressor parameter {item!r} in {spec!r}: use key=value")
        params[key.strip()] = _parse_value(value.strip())
    return get(name, **params)


class Channel:
    """compensate -> compress -> update, per named tensor (memory optional)."""

    def __init__(self, compressor: Compressor, memory: ResidualMemory | None = None):
        self.compressor = compressor
        self.memory = None if compressor.owns_residual else memory

    def state(self, name: str, shape, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
        """Named tensors of everything kept about tensor ``name`` (compressor state and
        residual), with fixed shapes, for checkpoints: ``<prefix>compressor/<key>`` and
        ``<prefix>memory/<key>``."""
        numel = int(np.prod(shape)) if len(shape) else 1
        parts = [("compressor/", self.compressor.state(name, numel))]
        if self.memory is not None:
            parts.append(("memory/", self.memory.state(name, numel)))
        return [(f"{prefix}{part}{k}", v) for part, entries in parts for k, v in entries.items()]

    def load_state(self, name: str, shape, values: dict[str, torch.Tensor],
                   prefix: str = "") -> None:
        """Restore what ``state`` returned; ``values`` may hold other keys too."""
        self.compressor.load_state(name, _under(values, prefix + "compressor/"))
        if self.memory is not None:
            self.memory.load_state(name, _under(values, prefix + "memory/"), shape)

    def encode(self, tensor: torch.Tensor, name: str) -> Payload:
        if self.memory is None:
            return self.compressor.compress(tensor, name)
        compensated = self.memory.compensate(tensor, name)
        payload = self.compressor.compress(compensated, name)
        self.memory.update(compensated, name, payload)
        return payload


def _under(values: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries whose key starts with ``prefix``, keyed by the rest."""
    return {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}


def pack(payloads: list[Payload]) -> np.ndarray:
    """Several payloads back to back in one uint8 buffer (each is self-delimiting)."""
    if not payloads:
        return np.zeros(0, dtype=np.uint8)
    return np.concatenate([p.to_bytes() for p in payloads])


def unpack(data, count: int) -> list[Payload]:
    """Exactly ``count`` payloads from ``data``; PayloadError on any mismatch."""
    data = np.asarray(data, dtype=np.uint8)
    payloads, offset = [], 0
    for _ in range(count):
        payload, offset = Payload.from_bytes(data, offset)
        payloads.append(payload)
    if offset != len(data):
        raise PayloadError(f"{len(data) - offset} trailing bytes after {count} payloads")
    return payloads


__all__ = ["Channel", "Compressor", "Payload", "PayloadError", "REGISTRY", "ResidualMemory",
           "get", "pack", "parse_spec", "sent_entries", "unpack"]
