"""Top-k sparsification: the k largest magnitudes of each tensor, zeros elsewhere."""
from .base import Compressor, is_fraction, is_positive_int, one_of
from .payload import F16, F32, Q8, make_payload
import torch

from .sparsify import on_kernel, selection_count, topk_select

VALUE_CODES = {"fp32": F32, "fp16": F16, "int8": Q8}


class TopK(Compressor):
    name = "topk"
    PARAMS = {
        "ratio": (None, is_fraction, "fraction of each tensor to send, in (0, 1]"),
        "count": (None, is_positive_int, "number of values to send per tensor"),
        "values": ("fp32", one_of(*VALUE_CODES), "value precision: fp32, fp16 or int8 (one float32 scale per tensor)"),
    }

    def validate(self):
        if (self.params["ratio"] is None) == (self.params["count"] is None):
            raise ValueError(f"compressor {self.name!r}: give exactly one of ratio or count")

    def select(self, flat, name):
        """(sorted int64 indices, their values, or None if the caller gathers them)."""
        k = selection_count(flat.numel(), self.params["ratio"], self.params["count"])
        return topk_select(flat, k)

    def compress(self, tensor, name=""):
        flat = tensor.detach().reshape(-1)
        idx, values = self.select(flat, name)
        if values is None and on_kernel(flat) and flat.is_contiguous():  # numpy's gather
            values = torch.from_numpy(flat.numpy()[idx.numpy()])
        elif values is None:
            values = flat[idx]
        return make_payload(tensor, idx, values, VALUE_CODES[self.params["values"]])
