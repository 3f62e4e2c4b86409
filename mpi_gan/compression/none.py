"""No compression: the tensor's raw bytes (baseline)."""
from .base import Compressor
from .payload import RAW, make_payload


class NoCompression(Compressor):
    name = "none"

    def compress(self, tensor, name=""):
        return make_payload(tensor, None, tensor.reshape(-1), RAW)
