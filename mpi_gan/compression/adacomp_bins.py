"""AdaComp of Chen et al. (IBM, AAAI 2018): residual compression in fixed-size bins.

Per tensor (name): G = R + g, H = G + g; in each bin of ``bin_size`` elements,
send i iff |H_i| >= max |G| of the bin. ``values=exact`` sends G_i;
``values=sign`` sends sign(G_i) * scale with one scale per tensor (the mean of
the bins' max |G|), 1 bit per value. The residual R becomes G minus what was
sent. The residual is part of the algorithm, so this compressor keeps its own
(``owns_residual``), in a ``ResidualMemory`` as every residual is kept (its compiled pass
accumulates into that buffer in place). On the CPU the accumulation and selection are one compiled pass
that updates R in place (``sparsify.accumulate_and_select``); for exact float32 values
in bins of a multiple of 64, that pass also sends: it packs the sent values into the
wire buffer and leaves the selection as a bitmap (``sparsify.accumulate_select_pack``).
Such a payload's indices travel as that bitmap whenever it is at most a quarter of the
value bytes (at least one element in 8 sent): the index section is then at most a fifth
of the payload, so no index code could save more than that (the gap codes would save
0-3.4% of the payload on the benchmark's noise), and no pass over the indices is made.
Sparser selections choose the smallest index code, as every payload does.
"""
import numpy as np
import torch

from .base import Compressor, is_positive_int, one_of
from .indexcodec import BITMAP
from .memory import ResidualMemory
from .payload import F32, SIGN, header_size, in_wire, make_payload
from .sparsify import (accumulate_and_select, accumulate_select_pack, bin_selection,
                       bitmap_indices, on_kernel, packs_in_wire, send_from_residual)


class AdaCompBins(Compressor):
    name = "adacomp_bins"
    owns_residual = True
    PARAMS = {
        "bin_size": (64, is_positive_int, "bin length L_T, a positive integer"),
        "values": ("exact", one_of("exact", "sign"), "exact values or sign + scale"),
    }

    def __init__(self, **params):
        super().__init__(**params)
        self.memory = ResidualMemory()  # R per tensor name, flat
        self._scratch = torch.empty(0, dtype=torch.int64)  # selected indices, reused

    def state(self, name, numel):
        return self.memory.state(name, numel)

    def load_state(self, name, values):
        self.memory.load_state(name, values, (-1,))

    def _accumulate(self, g: torch.Tensor, residual: torch.Tensor | None):
        """(G = R + g, selected indices, scale) with G the new residual buffer."""
        bin_size = self.params["bin_size"]
        if on_kernel(g) and (residual is None or residual.dtype == g.dtype):
            accumulated = torch.zeros_like(g) if residual is None else residual
            if self._scratch.numel() < g.numel():
                self._scratch = torch.empty(g.numel(), dtype=torch.int64)
            idx, scale = accumulate_and_select(accumulated, g.contiguous(), bin_size,
                                               self._scratch)
            return accumulated, idx, scale
        accumulated = g.clone() if residual is None else residual + g
        idx, gmax = bin_selection(accumulated, accumulated + g, bin_size)
        return accumulated, idx, float(gmax.mean()) if gmax.numel() else 0.0

    def _compress_packed(self, tensor: torch.Tensor, g: torch.Tensor,
                         residual: torch.Tensor | None, name: str):
        """``compress`` where the kernel packs the values into the wire buffer itself."""
        accumulated = torch.zeros_like(g) if residual is None else residual
        head, numel = header_size(tensor.shape), g.numel()
        words, wire, count, _ = accumulate_select_pack(accumulated, g.contiguous(),
                                                       self.params["bin_size"], head)
        self.memory.keep(name, accumulated)
        bitmap = (numel + 7) // 8
        if 0 < bitmap <= count:  # at most a quarter of the 4 * count value bytes
            wire[head:head + bitmap] = words.view(np.uint8)[:bitmap]
            return in_wire(tensor, wire, BITMAP, bitmap, count, F32)
        start = head + bitmap
        values = wire[start:start + 4 * count].view("<f4").copy()  # (any alignment)
        return make_payload(tensor, bitmap_indices(words, numel, count),
                            torch.from_numpy(values), F32)

    def compress(self, tensor, name=""):
        g = tensor.detach().reshape(-1)
        sign = self.params["values"] == "sign"
        residual = self.memory.buffer(name, g)
        if not sign and packs_in_wire(g, residual, self.params["bin_size"]):
            return self._compress_packed(tensor, g, residual, name)
        accumulated, idx, scale = self._accumulate(g, residual)
        if on_kernel(accumulated):
            sent = send_from_residual(accumulated, idx, sign, scale)
        else:
            sent = (torch.where(accumulated[idx] < 0, -scale, scale).to(g.dtype) if sign
                    else accumulated[idx])
            accumulated[idx] -= sent
        self.memory.keep(name, accumulated)
        return make_payload(tensor, idx, sent, SIGN if sign else F32, scale if sign else 0.0)
