"""AdaComp of Chen et al. (IBM, AAAI 2018): residual compression in fixed-size bins.

Per tensor (name): G = R + g, H = G + g; in each bin of ``bin_size`` elements,
send i iff |H_i| >= max |G| of the bin. ``values=exact`` sends G_i;
``values=sign`` sends sign(G_i) * scale with one scale per tensor (the mean of
the bins' max |G|), 1 bit per value. The residual R becomes G minus what was
sent. The residual is part of the algorithm, so this compressor keeps its own
(``owns_residual``).
"""
import torch

from .base import Compressor, is_positive_int, one_of
from .payload import F32, SIGN, make_payload
from .sparsify import bin_selection


class AdaCompBins(Compressor):
    name = "adacomp_bins"
    owns_residual = True
    PARAMS = {
        "bin_size": (64, is_positive_int, "bin length L_T, a positive integer"),
        "values": ("exact", one_of("exact", "sign"), "exact values or sign + scale"),
    }

    def __init__(self, **params):
        super().__init__(**params)
        self.residuals: dict[str, torch.Tensor] = {}

    def state(self, name, numel):
        residual = self.residuals.get(name)
        return {"residual": torch.zeros(numel) if residual is None else residual}

    def load_state(self, name, values):
        self.residuals[name] = values["residual"].clone()

    def compress(self, tensor, name=""):
        g = tensor.detach().reshape(-1)
        residual = self.residuals.get(name)
        if residual is not None and residual.device != g.device:  # restored onto the host
            residual = residual.to(g.device)
        accumulated = g.clone() if residual is None else residual + g
        idx, gmax = bin_selection(accumulated, accumulated + g, self.params["bin_size"])
        if self.params["values"] == "exact":
            sent, scale, code = accumulated[idx], 0.0, F32
        else:
            scale = float(gmax.mean()) if gmax.numel() else 0.0
            sent = torch.where(accumulated[idx] < 0, -scale, scale).to(g.dtype)
            code = SIGN
        residual = accumulated.clone()
        residual[idx] -= sent
        self.residuals[name] = residual
        return make_payload(tensor, idx, sent, code, scale)
