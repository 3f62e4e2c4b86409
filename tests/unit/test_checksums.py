"""Checksums on what is read back (io/integrity.py): the dataset cache, checkpoints and the
run file's generator, each corrupted at random bytes of its stored data (seeded, several
positions) and each corruption detected: a cache is rebuilt with one line saying so, a
checkpoint is refused by name and ``--resume auto`` falls back to the newest one that
verifies, a damaged generator is one error line of ``sample`` and ``evaluate``.

The checkpoints and run file come from a real standalone run on the ring (one process)."""
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from mpi_gan.analysis.runs import RunFileError, load_trained_generator, read_run
from mpi_gan.data import DataError, Dataset, spec_of
from mpi_gan.data.cache import check_cache, ensure_cache, fingerprint, source
from mpi_gan.io import integrity
from mpi_gan.io.checkpoint import CheckpointError, list_checkpoints, resolve_resume
from mpi_gan.algorithms.standalone.main import Standalone
from tests.unit.test_data import cfg, make_idx_dir
from tests.conftest import shard_of

PY = sys.executable
POSITIONS = 6  # corrupted positions per kind of file


def stored_spans(path: str, under: str = "/") -> list[tuple[str, int, int]]:
    """(dataset, file offset, bytes) of every stored chunk of the datasets below ``under``."""
    spans = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.name.startswith(under) and obj.chunks:
            for i in range(obj.id.get_num_chunks()):
                info = obj.id.get_chunk_info(i)
                spans.append((obj.name, info.byte_offset, info.size))
    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return spans


def corrupt_random_byte(path: str, seed: int, under: str = "/") -> str:
    """Change one byte, drawn uniformly from the stored data below ``under`` (seeded), to
    another value; returns the dataset hit."""
    rng = np.random.default_rng(seed)
    spans = stored_spans(path, under)
    sizes = np.array([s[2] for s in spans], dtype=float)
    name, offset, size = spans[rng.choice(len(spans), p=sizes / sizes.sum())]
    position = offset + int(rng.integers(size))
    with open(path, "r+b") as f:
        f.seek(position)
        old = f.read(1)[0]
        f.seek(position)
        f.write(bytes([old ^ int(rng.integers(1, 256))]))
    return name


def test_every_dataset_written_is_checksummed_and_reads_back_exactly(tmp_path):
    arrays = {"scalar": np.float32(3.5), "empty": np.zeros((0, 4)), "vector": np.arange(7),
              "matrix": np.random.default_rng(0).normal(size=(300, 50)).astype(np.float32)}
    path = str(tmp_path / "x.h5")
    with h5py.File(path, "w", libver=integrity.LIBVER) as f:
        for name, array in arrays.items():
            integrity.create(f, name, array)
        integrity.create(f, "rows", np.arange(10), maxshape=(None,))
    with h5py.File(path, "r") as f:
        integrity.verify(f)
        for name, array in arrays.items():
            back = integrity.read(f[name])
            assert back.shape == np.shape(array) and back.dtype == np.asarray(array).dtype
            assert np.array_equal(back, array), name
        assert all(f[n].fletcher32 for n in ("scalar", "vector", "matrix", "rows"))
        assert f["matrix"].chunks == (300, 50)  # one chunk, one checksum


def test_verify_refuses_a_dataset_without_checksum(tmp_path):
    path = str(tmp_path / "plain.h5")
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(5)
    with h5py.File(path, "r") as f, pytest.raises(integrity.ChecksumError,
                                                  match="/x carries no checksum"):
        integrity.verify(f)


@pytest.mark.parametrize("seed", range(20))
def test_fletcher32_catches_one_changed_byte_anywhere_in_the_data(tmp_path, seed):
    path = str(tmp_path / "x.h5")
    data = np.random.default_rng(seed).integers(0, 3, size=(64, 784), dtype=np.uint8)
    with h5py.File(path, "w", libver=integrity.LIBVER) as f:
        integrity.create(f, "images", data, chunks=(16, 784))  # mostly zero bytes, like MNIST
    corrupt_random_byte(path, seed)
    with h5py.File(path, "r") as f:
        with pytest.raises(integrity.ChecksumError, match="/images fails its checksum"):
            integrity.verify(f)
        with pytest.raises(OSError) as caught:
            f["images"][()]
        assert integrity.is_checksum_failure(caught.value)


@pytest.mark.parametrize("fill", [b"\xff", b"\x00"])
def test_a_chunk_overwritten_whole_is_caught_where_fletcher32_is_blind(tmp_path, fill):
    """The issue's case: one data chunk overwritten after the file was written, its
    Fletcher-32 included. All-0xFF (or all-0x00) bytes check out under Fletcher-32 (shown
    here: h5py reads the chunk back without error); the contents' CRC catches it, in
    ``verify`` and in ``read``."""
    path = str(tmp_path / "x.h5")
    data = np.random.default_rng(0).integers(0, 3, size=(64, 784), dtype=np.uint8)
    with h5py.File(path, "w", libver=integrity.LIBVER) as f:
        integrity.create(f, "images", data, chunks=(16, 784))
    with h5py.File(path, "r") as f:
        info = f["images"].id.get_chunk_info(1)
    with open(path, "r+b") as raw:
        raw.seek(info.byte_offset)
        raw.write(fill * info.size)
    with h5py.File(path, "r") as f:
        assert (f["images"][16:32] == fill[0]).all()  # Fletcher-32 passes it
        with pytest.raises(integrity.ChecksumError, match="/images fails its checksum"):
            integrity.verify(f)
        with pytest.raises(integrity.ChecksumError, match="/images fails its checksum"):
            integrity.read(f["images"])


def test_the_crc_follows_appends_truncations_and_overwrites(tmp_path):
    """The writers keep each dataset's CRC equal to that of its contents, computed here."""
    import zlib
    path = str(tmp_path / "t.h5")
    rows = np.arange(10, dtype=np.float32)
    with h5py.File(path, "w", libver=integrity.LIBVER) as f:
        table = integrity.create(f, "rows", rows[:4], maxshape=(None,))
        integrity.write_rows(table, 4, rows[4:10])   # appended
        integrity.write_rows(table, 7, rows[:2])     # rows 7.. replaced: 9 rows
        fixed = integrity.create(f, "fixed", np.zeros((2, 3), np.int64))
        integrity.overwrite(fixed, np.arange(6).reshape(2, 3))
    expected_rows = np.concatenate([rows[:7], rows[:2]])
    with h5py.File(path, "r") as f:
        assert int(f["rows"].attrs["crc32"]) == zlib.crc32(expected_rows.tobytes())
        assert int(f["fixed"].attrs["crc32"]) == zlib.crc32(np.arange(6, dtype=np.int64).tobytes())
        integrity.verify(f)
        assert np.array_equal(integrity.read(f["rows"]), expected_rows)


def test_a_writer_killed_mid_update_is_named_an_unfinished_update_not_damage(tmp_path):
    """A chunk written in place reaches the file at once, its new CRC only at the next flush:
    a writer killed in between (SIGKILL, OOM) leaves a mismatch, which ``read`` names as an
    unfinished update (the file is marked ``updating``), not as damage."""
    path = str(tmp_path / "run.h5")
    with h5py.File(path, "w", libver=integrity.LIBVER) as f:
        integrity.create(f, "g", np.zeros(1000, np.float32))
    pid = os.fork()
    if pid == 0:  # the writer: its update never finishes
        try:
            f = integrity.open_for_writing(path, "r+")
            with integrity.updating(f):
                integrity.overwrite(f["g"], np.ones(1000, np.float32))
                os._exit(0)  # killed before the update's last flush
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    with h5py.File(path, "r") as f:
        assert f.attrs[integrity.UPDATING] == 1
        with pytest.raises(integrity.ChecksumError, match="last update did not finish"):
            integrity.read(f["g"])
    with h5py.File(path, "r+") as f:  # a finished update clears the mark
        with integrity.updating(f):
            integrity.overwrite(f["g"], np.full(1000, 2, np.float32))
    with h5py.File(path, "r") as f:
        assert f.attrs[integrity.UPDATING] == 0 and integrity.read(f["g"])[0] == 2
    with pytest.raises(ValueError, match="shape"):  # a wrong shape is refused, not reshaped
        with h5py.File(path, "r+") as f:
            integrity.overwrite(f["g"], np.zeros((10, 100), np.float32))


# --- the dataset cache ---------------------------------------------------------------

@pytest.fixture
def idx_cache(tmp_path):
    """(config, cache path, its arrays) of a cache converted from written IDX files."""
    make_idx_dir(str(tmp_path / "idx"), n_train=600, n_test=100)
    c = cfg(data_dir=str(tmp_path / "idx"), cache_dir=str(tmp_path / "cache"))
    path = ensure_cache(spec_of(c), c.data_dir, c.cache_dir, log=lambda *_: None)
    with h5py.File(path, "r") as f:
        arrays = {k: f[k][()] for k in f}
        assert f.attrs["checksum"] == "fletcher32" and f["train_images"].fletcher32
    return c, path, arrays


@pytest.mark.parametrize("seed", range(POSITIONS))
def test_a_damaged_cache_is_rebuilt_with_one_line_saying_so(idx_cache, seed):
    c, path, arrays = idx_cache
    hit = corrupt_random_byte(path, seed)
    stamp = fingerprint(source(spec_of(c), c.data_dir)[0])
    assert check_cache(path, spec_of(c), stamp).startswith(f"damaged: {path}: dataset {hit} ")
    said = []
    assert ensure_cache(spec_of(c), c.data_dir, c.cache_dir, log=said.append) == path
    assert said[0] == f"the dataset cache {path}: dataset {hit} fails its checksum: rebuilding it"
    assert said[1].startswith("converting IDX files")
    with h5py.File(path, "r") as f:
        assert all(np.array_equal(f[k][()], arrays[k]) for k in arrays)  # as before
    assert check_cache(path, spec_of(c), stamp) == ""


def test_a_cache_chunk_overwritten_white_is_rebuilt(idx_cache):
    """The issue's case on a real cache: the first chunk of the training images overwritten
    with 0xFF, checksum and all, attributes intact (it used to train on white images)."""
    c, path, arrays = idx_cache
    with h5py.File(path, "r") as f:
        info = f["train_images"].id.get_chunk_info(0)
    with open(path, "r+b") as raw:
        raw.seek(info.byte_offset)
        raw.write(b"\xff" * info.size)
    said = []
    assert ensure_cache(spec_of(c), c.data_dir, c.cache_dir, log=said.append) == path
    assert said[0] == (f"the dataset cache {path}: dataset /train_images fails its checksum: "
                       "rebuilding it")
    with h5py.File(path, "r") as f:
        assert np.array_equal(f["train_images"][()], arrays["train_images"])


def test_an_intact_cache_is_used_as_it_is_and_an_unchecksummed_one_rebuilt(idx_cache):
    c, path, _ = idx_cache
    mtime = os.stat(path).st_mtime_ns
    said = []
    ensure_cache(spec_of(c), c.data_dir, c.cache_dir, log=said.append)
    assert said == [] and os.stat(path).st_mtime_ns == mtime
    with h5py.File(path, "r+") as f:  # a cache of the previous version: no checksums
        del f.attrs["checksum"]
    ensure_cache(spec_of(c), c.data_dir, c.cache_dir, log=said.append)
    assert len(said) == 1 and said[0].startswith("converting") and os.stat(path).st_mtime_ns != mtime


def test_rows_damaged_after_start_up_are_a_data_error_naming_the_cache(idx_cache):
    c, path, _ = idx_cache
    dataset = Dataset(spec_of(c), path=path)
    corrupt_random_byte(path, 0, under="/train_images")
    with pytest.raises(DataError, match=f"the dataset cache {path} fails its checksum reading "
                                        "train_images"):
        dataset.train_rows(np.arange(600))


def test_a_run_on_a_damaged_cache_says_so_and_trains_on_the_rebuilt_one(idx_cache, tmp_path):
    c, path, _ = idx_cache
    corrupt_random_byte(path, 1, under="/train_images")
    proc = subprocess.run([PY, "-m", "mpi_gan.standalone", "--dataset", "mnist", "--data-dir",
                           c.data_dir, "--cache-dir", c.cache_dir, "--iterations", "2",
                           "--batch-size", "10", "--eval-every", "0", "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"the dataset cache {path}: dataset /train_images fails its checksum: rebuilding it" \
        in proc.stdout


# --- checkpoints and the run file ----------------------------------------------------

@pytest.fixture(scope="module")
def ring_run(tmp_path_factory):
    """A finished standalone run on the ring: checkpoints at 20 and 30, run.h5 at 30."""
    out = tmp_path_factory.mktemp("checksums") / "run"
    proc = subprocess.run([PY, "-m", "mpi_gan.standalone", "--dataset", "ring", "--iterations",
                           "30", "--checkpoint-every", "10", "--eval-every", "0", "--out",
                           str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert [os.path.basename(p) for p in list_checkpoints(str(out))] == \
        ["ckpt_00000020.h5", "ckpt_00000030.h5"]
    return out


reader = Standalone().reader


@pytest.mark.parametrize("seed", range(POSITIONS))
def test_a_damaged_checkpoint_is_refused_by_name_and_the_older_one_used(ring_run, tmp_path,
                                                                        seed):
    run = tmp_path / "run"
    shutil.copytree(ring_run, run)
    newest = str(run / "checkpoints" / "ckpt_00000030.h5")
    hit = corrupt_random_byte(newest, seed)
    with pytest.raises(CheckpointError) as caught:
        reader(newest)
    assert str(caught.value) == (f"checkpoint {newest}: dataset {hit} fails its checksum: "
                                 "refused (the file was damaged after it was written)")
    ckpt = resolve_resume(str(run), reader)
    assert ckpt.iteration == 20 and ckpt.passed_over == (str(caught.value),)


def corrupt_metadata_byte(path: str, seed: int) -> None:
    """Change one byte inside an object header (HDF5 1.8 format: ``OHDR`` blocks, each with
    its checksum) of ``path``, or inside the superblock (seed 0), drawn with ``seed``."""
    import re
    data = bytearray(open(path, "rb").read())
    rng = np.random.default_rng(seed)
    if seed == 0:
        position = 9 + int(rng.integers(0, 30))  # superblock version 2: 48 bytes, checksummed
    else:
        headers = [m.start() for m in re.finditer(b"OHDR", data)]
        assert len(headers) > 10
        position = headers[rng.integers(len(headers))] + 4 + int(rng.integers(1, 30))
    data[position] ^= int(rng.integers(1, 256))
    open(path, "wb").write(data)


def test_a_damaged_shard_is_passed_over_by_resume_auto_and_refused_when_named(ring_run,
                                                                             tmp_path):
    """One byte of rank 0's shard changed, the size kept: the manifest still reads (rank 0
    checks only the sizes), but the rank's own check of its shard's digest passes the
    checkpoint over under --resume auto and refuses it, in one line, when named."""
    run = tmp_path / "run"
    shutil.copytree(ring_run, run)
    newest = str(run / "checkpoints" / "ckpt_00000030.h5")
    corrupt_random_byte(shard_of(newest, 0), 5)
    reader(newest)
    command = [PY, "-m", "mpi_gan.standalone", "--dataset", "ring", "--iterations", "40",
               "--checkpoint-every", "10", "--eval-every", "0", "--out", str(run)]
    named = subprocess.run(command + ["--resume", newest], capture_output=True, text=True,
                           timeout=300)
    why = (f"{newest}: rank 0's shard {shard_of(newest, 0)} does not match the checksum in its "
           "manifest: refused (changed or damaged after it was written)")
    assert named.returncode == 2 and named.stderr.splitlines() == [f"mpi_gan: error: {why}"]
    auto = subprocess.run(command + ["--resume", "auto"], capture_output=True, text=True,
                          timeout=300)
    assert auto.returncode == 0, auto.stderr
    lines = auto.stdout.splitlines()
    assert lines[0] == (f"{why}; resuming from the newest checkpoint that verifies, "
                        + str(run / "checkpoints" / "ckpt_00000020.h5"))
    assert f"resumed from {run / 'checkpoints' / 'ckpt_00000020.h5'} at iteration 20" in lines


@pytest.mark.parametrize("seed", range(POSITIONS))
def test_damaged_metadata_is_refused_like_damaged_data(ring_run, tmp_path, seed):
    """The file format's own checksums (superblock, object headers): a checkpoint whose
    structure was damaged is refused by name and the older one used; in a run file, what
    the analysis reads (the generator, the tables and config) is either exactly what was
    written or one clear error naming the file (damage to an object neither reads, such as
    a stored evaluation's, is seen by ``integrity.verify``)."""
    run = tmp_path / "run"
    shutil.copytree(ring_run, run)
    newest = str(run / "checkpoints" / "ckpt_00000030.h5")
    corrupt_metadata_byte(newest, seed)
    with pytest.raises(CheckpointError) as caught:
        reader(newest)
    assert f"checkpoint {newest}: " in str(caught.value) and (
        "refused" in str(caught.value) or "corrupt" in str(caught.value)), caught.value
    assert resolve_resume(str(run), reader).iteration == 20
    path = str(run / "run.h5")
    intact = [load_trained_generator(path)[0].state_dict(), read_run(path)]
    corrupt_metadata_byte(path, seed)
    for i, load in enumerate((lambda: load_trained_generator(path)[0].state_dict(),
                              lambda: read_run(path))):
        try:
            back = load()
        except RunFileError as exc:
            assert path in str(exc)
            continue
        if i == 0:
            assert all(torch.equal(back[k], intact[0][k]) for k in intact[0])
        else:
            assert repr(back) == repr(intact[1])
    with pytest.raises((integrity.ChecksumError, OSError)):  # OSError: at the superblock
        with h5py.File(path, "r") as f:
            integrity.verify(f)


def test_resume_auto_says_it_falls_back_and_continues_from_the_older_checkpoint(ring_run,
                                                                                 tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ring_run, run)
    newest = str(run / "checkpoints" / "ckpt_00000030.h5")
    hit = corrupt_random_byte(newest, 99)
    proc = subprocess.run([PY, "-m", "mpi_gan.standalone", "--dataset", "ring", "--iterations",
                           "40", "--checkpoint-every", "10", "--eval-every", "0", "--out",
                           str(run), "--resume", "auto"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == (f"checkpoint {newest}: dataset {hit} fails its checksum: refused (the "
                        "file was damaged after it was written); resuming from the newest "
                        "checkpoint that verifies, " + str(run / "checkpoints" / "ckpt_00000020.h5"))
    assert f"resumed from {run / 'checkpoints' / 'ckpt_00000020.h5'} at iteration 20" in lines
    reader(newest)  # written again, whole
    with h5py.File(run / "run.h5", "r") as f:
        assert f.attrs["iteration"] == 40 and f.attrs["finished"] == 1


@pytest.mark.parametrize("seed", range(POSITIONS))
def test_a_damaged_generator_in_the_run_file_is_one_clear_error(ring_run, tmp_path, seed):
    path = str(tmp_path / "run.h5")
    shutil.copyfile(ring_run / "run.h5", path)
    load_trained_generator(path)  # intact: loads
    corrupt_random_byte(path, seed, under="/generator")
    with pytest.raises(RunFileError) as caught:
        load_trained_generator(path)
    assert str(caught.value) == (f"{path}: its generator fails its checksum: the file was "
                                 "damaged after it was written; use one of the run's "
                                 "checkpoints (checkpoints/ckpt_*.h5) instead")


def test_sample_and_evaluate_print_one_line_for_a_damaged_generator(ring_run, tmp_path):
    path = str(tmp_path / "run.h5")
    shutil.copyfile(ring_run / "run.h5", path)
    corrupt_random_byte(path, 7, under="/generator")
    for module in ("sample", "evaluate"):
        args = ["--n", "5", "--out", str(tmp_path / "x.npy")] if module == "sample" else []
        proc = subprocess.run([PY, "-m", f"mpi_gan.{module}", path, *args],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, (module, proc.stderr)
        assert proc.stderr.splitlines() == [
            f"mpi_gan.{module}: error: {path}: its generator fails its checksum: the file was "
            "damaged after it was written; use one of the run's checkpoints "
            "(checkpoints/ckpt_*.h5) instead"], (module, proc.stderr)


def test_only_checksum_errors_count_as_checksum_failures_whatever_the_path(tmp_path):
    missing = tmp_path / "my_checksums" / "cache.h5"
    with pytest.raises(OSError) as caught:
        h5py.File(missing, "r")
    assert not integrity.is_checksum_failure(caught.value)
    assert integrity.is_checksum_failure(OSError("Can't synchronously read data (filter "
                                                 "returned failure during read)"))


def flip_string_attribute(path: str, text: bytes) -> None:
    """Change the first byte of every stored copy of ``text`` (a string attribute's value:
    it lives in HDF5's global heap, which carries no checksum of its own)."""
    data = bytearray(open(path, "rb").read())
    start = data.find(text)
    assert start >= 0
    while start >= 0:
        data[start] ^= 0x01
        start = data.find(text, start + 1)
    open(path, "wb").write(data)


def test_a_damaged_configuration_string_is_caught_by_the_attributes_digest(ring_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ring_run, run)
    newest = str(run / "checkpoints" / "ckpt_00000030.h5")
    flip_string_attribute(newest, b"nonsaturating")  # --g-loss, in /config
    with h5py.File(newest, "r") as f:
        assert f["config"].attrs["g_loss"] != "nonsaturating"  # read back damaged, silently
    with pytest.raises(CheckpointError, match=f"checkpoint {newest}: the attributes of /config "
                                              "fail their checksum: refused"):
        reader(newest)
    assert resolve_resume(str(run), reader).iteration == 20
    run_file = str(run / "run.h5")
    flip_string_attribute(run_file, b"nonsaturating")
    with pytest.raises(RunFileError, match="its configuration fails its checksum"):
        load_trained_generator(run_file)


def test_analyze_draws_no_grid_for_a_damaged_generator_and_says_so(ring_run, tmp_path):
    (tmp_path / "damaged").mkdir()
    path = str(tmp_path / "damaged" / "run.h5")
    shutil.copyfile(ring_run / "run.h5", path)
    corrupt_random_byte(path, 3, under="/generator")
    proc = subprocess.run([PY, "-m", "mpi_gan.analyze", path, "--out", str(tmp_path / "a")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        f"mpi_gan.analyze: warning: no sample grid for damaged: {path}: its generator fails its "
        "checksum: the file was damaged after it was written"], proc.stderr
    assert (tmp_path / "a" / "summary.csv").exists()
