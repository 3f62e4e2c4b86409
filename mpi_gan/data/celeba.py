"""CelebA from the aligned JPEG folder (``img_align_celeba/``), decoded with Pillow.

Each 178x218 aligned face is center-cropped to a square of its shorter side
and resized (bicubic, antialiased) to ``size`` x ``size``: uint8 (n, 3, size,
size). CelebA has no class labels here (labels are zeros; ACGAN is off).
Train/test: ``list_eval_partition.txt`` beside or above the folder when present
(partition 0 train, 2 test, 1 unused), otherwise the files in name order with
the last tenth as test.
"""
from __future__ import annotations

import os

import numpy as np

from .spec import DataError, DatasetKind, DatasetSpec, Source, need_dir

FOLDER = "img_align_celeba"
PARTITION = "list_eval_partition.txt"
EXTENSIONS = (".jpg", ".jpeg", ".png")


def find_image_dir(data_dir: str) -> str:
    if not os.path.isdir(data_dir):
        raise DataError(f"--data-dir {data_dir!r} does not exist or is not a directory")
    for candidate in (os.path.join(data_dir, FOLDER), data_dir):
        if os.path.isdir(candidate) and any(n.lower().endswith(EXTENSIONS)
                                            for n in os.listdir(candidate)):
            return candidate
    raise DataError(f"--data-dir {data_dir!r} has no CelebA images (looked for *.jpg in "
                    f"{FOLDER}/ and in the folder itself)")


def image_files(data_dir: str) -> list[str]:
    folder = find_image_dir(data_dir)
    return [os.path.join(folder, n) for n in sorted(os.listdir(folder))
            if n.lower().endswith(EXTENSIONS)]


def _partition(data_dir: str, names: list[str]) -> tuple[list[int], list[int]]:
    """Indices (into ``names``) of the train and test images."""
    for candidate in (os.path.join(data_dir, PARTITION),
                      os.path.join(os.path.dirname(find_image_dir(data_dir)), PARTITION)):
        if os.path.isfile(candidate):
            part = {}
            with open(candidate) as f:
                for line in f:
                    fields = line.split()
                    if len(fields) == 2 and fields[1] in ("0", "1", "2"):
                        part[fields[0]] = int(fields[1])
            train = [i for i, n in enumerate(names) if part.get(n) == 0]
            test = [i for i, n in enumerate(names) if part.get(n) == 2]
            return train, test
    cut = len(names) - len(names) // 10
    return list(range(cut)), list(range(cut, len(names)))


def decode(path: str, size: int) -> np.ndarray:
    """One image: center square crop, resized to (3, size, size) uint8."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            im = im.crop((left, top, left + side, top + side)).resize(
                (size, size), Image.Resampling.BICUBIC, reducing_gap=None)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot decode CelebA image {path}: {exc}") from exc


def load_celeba(data_dir: str, size: int, progress=None) -> dict[str, np.ndarray]:
    """The four arrays; ``progress(done, total)`` is called every 5,000 images."""
    files = image_files(data_dir)
    names = [os.path.basename(p) for p in files]
    train, test = _partition(data_dir, names)
    if not train:
        raise DataError(f"--data-dir {data_dir!r}: no CelebA training images")
    out = {}
    for split, indices in (("train", train), ("test", test)):
        images = np.empty((len(indices), 3, size, size), dtype=np.uint8)
        for j, i in enumerate(indices):
            images[j] = decode(files[i], size)
            if progress is not None and (j + 1) % 5000 == 0:
                progress(j + 1, len(indices))
        out[f"{split}_images"] = images
        out[f"{split}_labels"] = np.zeros(len(indices), dtype=np.uint8)
    return out


SIZES = (32, 64)


def spec(image_size: int, synthetic_size: int) -> DatasetSpec:
    """CelebA at 64x64 (``--image-size`` 0 or 64) or 32x32; unlabelled. The aligned set:
    202,599 images; list_eval_partition.txt: train 162,770, test 19,962."""
    size = image_size or 64
    if size not in SIZES:
        raise DataError(f"--image-size for celeba must be one of {SIZES}, got {size}")
    return DatasetSpec("celeba", (3, size, size), 0, 162770, 19962)


def source(spec: DatasetSpec, data_dir: str) -> Source:
    folder = need_dir(spec, data_dir, "the aligned JPEG folder (img_align_celeba/)")
    size = spec.shape[1]

    def load(log):
        return load_celeba(folder, size, lambda done, total: log(
            f"CelebA: decoded {done}/{total} images"))
    return image_files(folder), load, f"CelebA JPEGs in {folder}, {size}x{size}"


CELEBA = DatasetKind("celeba", spec, source=source)
