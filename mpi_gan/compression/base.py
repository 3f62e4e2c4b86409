"""The compressor interface (in the spirit of GRACE) and its parameter checking."""
from __future__ import annotations

import torch

from .payload import Payload, decode_payload


class Compressor:
    """compress(tensor, name) -> Payload; decompress(payload) -> tensor (same shape, dtype).

    Subclasses declare ``PARAMS = {name: (default, check, description)}``; ``check``
    returns True for a valid value. ``owns_residual``: the algorithm keeps its own
    residual (an external ResidualMemory must not be applied on top).
    """

    name = ""
    PARAMS: dict[str, tuple] = {}
    owns_residual = False

    def __init__(self, **params):
        unknown = sorted(set(params) - set(self.PARAMS))
        if unknown:
            raise ValueError(f"compressor {self.name!r} has no parameter(s) {unknown}; "
                             f"valid: {self.describe_params()}")
        self.params = {}
        for key, (default, check, description) in self.PARAMS.items():
            value = params.get(key, default)
            if value is not None and not check(value):
                raise ValueError(f"compressor {self.name!r}: bad {key}={value!r} ({description})")
            self.params[key] = value
        self.validate()

    def validate(self) -> None:
        """Cross-parameter checks (raise ValueError)."""

    @classmethod
    def describe_params(cls) -> str:
        return ", ".join(f"{k} ({d}; default {v!r})" for k, (v, _, d) in cls.PARAMS.items()) \
            or "none"

    def compress(self, tensor: torch.Tensor, name: str = "") -> Payload:
        raise NotImplementedError

    def decompress(self, payload: Payload, out: torch.Tensor | None = None) -> torch.Tensor:
        """The dense tensor; written into ``out`` (a reused CPU buffer) when given."""
        return decode_payload(payload, out)

    def state(self, name: str, numel: int) -> dict[str, torch.Tensor]:
        """What this compressor remembers about tensor ``name`` (for checkpoints);
        fixed shapes, defaults materialised. Stateless compressors return {}."""
        return {}

    def load_state(self, name: str, values: dict[str, torch.Tensor]) -> None:
        """Restore what ``state`` returned."""

    def spec(self) -> str:
        """Text form ``name:key=value,...`` that ``compression.parse_spec`` reads back."""
        items = ",".join(f"{k}={v}" for k, v in self.params.items() if v is not None)
        return f"{self.name}:{items}" if items else self.name


def is_fraction(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= 1


def is_positive_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


def one_of(*choices):
    return lambda x: x in choices
