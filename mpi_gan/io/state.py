"""Model + optimizer + RNG state as named tensors, and their packing into one raw buffer.

A role's state is an ordered list of (name, tensor):
  ``model/<state_dict key>``            parameters and buffers of the module
  ``adam/<param index>/{step,exp_avg,exp_avg_sq}``  Adam's state (zeros and step 0
                                       before the first step, which Adam treats
                                       exactly like an empty state)
  ``rng/torch``                         the rank's global torch CPU RNG state (uint8)
Names map one-to-one to HDF5 dataset paths in checkpoint shards, and a ``Layout``
packs the same list into a single uint8 buffer for one MPI message (a swap, a shard's
report), so no header or pickle is needed: both sides build the layout from identical
modules; the training loop also uses one to check a restored state's names, shapes and
types.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

ADAM_KEYS = ("step", "exp_avg", "exp_avg_sq")


def module_state(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Parameters and buffers, in ``state_dict`` order, as ``model/<key>``."""
    return [(f"model/{k}", v) for k, v in module.state_dict(keep_vars=False).items()]


def adam_state(module: nn.Module, optimizer) -> list[tuple[str, torch.Tensor]]:
    """Adam's per-parameter state, materialised as zeros/step 0 where not yet created."""
    entries = []
    for i, p in enumerate(module.parameters()):
        st = optimizer.state.get(p, {})
        defaults = {"step": torch.zeros((), dtype=torch.float32),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.contiguous_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.contiguous_format)}
        for key in ADAM_KEYS:
            entries.append((f"adam/{i}/{key}", st.get(key, defaults[key]).detach()))
    return entries


def average_state(average: nn.Module | None) -> list[tuple[str, torch.Tensor]]:
    """The moving average of G (``--g-ema``) as ``g_ema/model/<key>``; [] without one."""
    return [] if average is None else with_prefix(module_state(average), "g_ema/")


def load_average_state(average: nn.Module | None, values: dict[str, torch.Tensor]) -> None:
    """Copy the ``g_ema/`` entries into ``average`` (nothing without one)."""
    if average is not None:
        load_module_state(average, under(values, "g_ema/"))


def rng_state() -> list[tuple[str, torch.Tensor]]:
    """This process's global torch CPU RNG state."""
    return [("rng/torch", torch.get_rng_state())]


def load_module_state(module: nn.Module, values: dict[str, torch.Tensor]) -> None:
    """Copy ``model/*`` entries into ``module`` (in place, keeping devices)."""
    with torch.no_grad():
        for k, v in module.state_dict(keep_vars=True).items():
            v.copy_(values[f"model/{k}"])


def load_adam_state(module: nn.Module, optimizer, values: dict[str, torch.Tensor]) -> None:
    """Replace Adam's state (``gan.adam.Adam``) by the ``adam/*`` entries."""
    optimizer.state.clear()
    for i, p in enumerate(module.parameters()):
        optimizer.state[p] = {
            "step": values[f"adam/{i}/step"].to(torch.float32).reshape(()).clone(),
            "exp_avg": values[f"adam/{i}/exp_avg"].to(p.device, p.dtype).clone(),
            "exp_avg_sq": values[f"adam/{i}/exp_avg_sq"].to(p.device, p.dtype).clone()}


def with_prefix(entries: list[tuple[str, torch.Tensor]], prefix: str
                ) -> list[tuple[str, torch.Tensor]]:
    """The same entries named ``<prefix><name>`` (one role holding several models)."""
    return [(prefix + name, t) for name, t in entries]


def under(values: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries whose name starts with ``prefix``, named without it."""
    return {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}


def load_rng_state(values: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(values["rng/torch"].to(torch.uint8).cpu())


@dataclass(frozen=True)
class Field:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    offset: int
    nbytes: int


class Layout:
    """Byte layout of a list of named tensors packed back to back into one uint8 buffer."""

    def __init__(self, entries: list[tuple[str, torch.Tensor]]):
        fields, offset = [], 0
        for name, t in entries:
            nbytes = t.numel() * t.element_size()
            fields.append(Field(name, tuple(t.shape), t.dtype, offset, nbytes))
            offset += nbytes
        self.fields: list[Field] = fields
        self.nbytes = offset

    def empty(self) -> torch.Tensor:
        """A receive buffer of the right size (uint8, CPU)."""
        return torch.empty(self.nbytes, dtype=torch.uint8)

    def pack(self, entries: list[tuple[str, torch.Tensor]]) -> torch.Tensor:
        """One contiguous uint8 CPU tensor holding every entry's bytes."""
        buf = self.empty()
        for f, (name, t) in zip(self.fields, entries, strict=True):
            if name != f.name or tuple(t.shape) != f.shape or t.dtype != f.dtype:
                raise ValueError(f"entry {name} {tuple(t.shape)} {t.dtype} does not match "
                                 f"layout field {f.name} {f.shape} {f.dtype}")
            flat = t.detach().reshape(-1).contiguous().cpu()
            buf[f.offset:f.offset + f.nbytes] = flat.view(torch.uint8) if f.nbytes else buf[:0]
        return buf

    def unpack(self, buf: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named tensors (copies) read back from a packed buffer."""
        if buf.numel() != self.nbytes:
            raise ValueError(f"packed state has {buf.numel()} bytes, layout expects {self.nbytes}")
        return {f.name: buf[f.offset:f.offset + f.nbytes].clone().view(f.dtype).reshape(f.shape)
                for f in self.fields}
