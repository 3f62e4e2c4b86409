"""Faults and bad inputs of issue 19, each run for real against a checkout of mpi-gan:
what every case ends with (exit status, wall seconds, the line the user reads).

Usage: ``python scripts/fault_table.py [--repo DIR] [--only NAME ...]``

``--repo`` (default: this checkout) is the tree whose ``mpi_gan`` runs (the commands run
with it as their working directory, so an older checkout in a ``git worktree`` gives the
"before" table). Every case is bounded by a timeout (a hang shows as status "hang").
Prints a markdown table: case, status, seconds, and the first line of output that
mentions an error, a checksum, a lock or a stop (or "(no line)"), then one
``<case>_status=`` line per case.
"""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mpi_gan.io import integrity  # noqa: E402
from tests.test_integrity import corrupt_deflate_stream  # noqa: E402

BIN = os.path.dirname(sys.executable)
PY, MPIEXEC = sys.executable, os.path.join(BIN, "mpiexec")
FAST = ["--dataset", "ring", "--eval-every", "0", "--log-every", "10"]
KEYWORDS = ("error", "checksum", "lock", "stopped", "interrupted", "rebuild", "non-finite",
            "Traceback")


def mdgan(*args):
    return [MPIEXEC, "-n", "3", PY, "-m", "mpi_gan.mdgan", *FAST, *map(str, args)]


class Case:
    def __init__(self, repo: str, tmp: str):
        self.repo, self.tmp = repo, tmp

    def run(self, argv, timeout=180, env=None):
        tic = time.monotonic()
        try:
            proc = subprocess.run(argv, cwd=self.repo, capture_output=True, text=True,
                                  timeout=timeout, env={**os.environ, **(env or {})})
            return proc.returncode, time.monotonic() - tic, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) \
                else (exc.stdout or "")
            subprocess.run(["pkill", "-9", "-f", self.tmp], check=False)
            return "hang", time.monotonic() - tic, out

    def start(self, argv):
        return subprocess.Popen(argv, cwd=self.repo, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)


def idx_dir(path: str, n_train=600, n_test=100) -> str:
    rng = np.random.default_rng(0)
    os.makedirs(path, exist_ok=True)
    # mostly-zero images, like MNIST's: deflate compresses them (random bytes would be
    # stored verbatim, and a flipped byte would then be a CRC error, not a zlib.error)
    ink = lambda n: rng.integers(0, 256, (n, 28, 28)) * (rng.random((n, 28, 28)) < 0.2)  # noqa: E731
    arrays = {"train-images-idx3-ubyte": ink(n_train),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
              "t10k-images-idx3-ubyte": ink(n_test),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test)}
    for name, array in arrays.items():
        header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big")
                                                         for d in array.shape)
        with gzip.open(os.path.join(path, name + ".gz"), "wb") as f:
            f.write(header + array.astype(np.uint8).tobytes())
    return path


def wait_for(predicate, timeout=120):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def checkpoints(out):
    folder = os.path.join(out, "checkpoints")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


# --- the cases: each returns (status, seconds, output) -------------------------------

def cache_overwritten(c: Case):
    data = idx_dir(os.path.join(c.tmp, "idx"))
    cache = os.path.join(c.tmp, "cache")
    args = [PY, "-m", "mpi_gan.standalone", "--dataset", "mnist", "--data-dir", data,
            "--cache-dir", cache, "--iterations", "2", "--batch-size", "10", "--eval-every", "0"]
    c.run(args + ["--out", os.path.join(c.tmp, "first")])
    [name] = os.listdir(cache)
    with h5py.File(os.path.join(cache, name), "r") as f:
        info = f["train_images"].id.get_chunk_info(0)
    with open(os.path.join(cache, name), "r+b") as f:  # one data chunk white, attrs intact
        f.seek(info.byte_offset)
        f.write(b"\xff" * info.size)
    return c.run(args + ["--out", os.path.join(c.tmp, "second")])


def nan_learning_rates(c: Case):
    return c.run(mdgan("--iterations", 40, "--checkpoint-every", 10, "--lr-g", "1e30",
                       "--lr-d", "1e30", "--out", os.path.join(c.tmp, "run")))


def two_runs_one_out(c: Case):
    out = os.path.join(c.tmp, "run")
    tic = time.monotonic()
    jobs = [c.start(mdgan("--iterations", 60, "--out", out)) for _ in range(2)]
    outputs = [job.communicate(timeout=300)[0] for job in jobs]
    codes = [job.returncode for job in jobs]
    return "/".join(map(str, codes)), time.monotonic() - tic, "\n".join(outputs)


def lost_run(c: Case):
    out = os.path.join(c.tmp, "run")
    c.run(mdgan("--iterations", 20, "--out", out))
    shutil.rmtree(os.path.join(out, "checkpoints"))
    return c.run(mdgan("--iterations", 5, "--seed", 3, "--resume", "auto", "--out", out))


def corrupt_deflate(c: Case):
    data = idx_dir(os.path.join(c.tmp, "idx"), n_train=3000)
    path = os.path.join(data, "train-images-idx3-ubyte.gz")
    corrupt_deflate_stream(path, path)
    return c.run([MPIEXEC, "-n", "3", PY, "-m", "mpi_gan.mdgan", "--dataset", "mnist",
                  "--data-dir", data, "--cache-dir", os.path.join(c.tmp, "cache"),
                  "--batch-size", "10", "--iterations", "5", "--eval-every", "0",
                  "--out", os.path.join(c.tmp, "run")], timeout=120)


def huge_seed(c: Case):
    return c.run(mdgan("--iterations", 5, "--seed", "99999999999999999999",
                       "--out", os.path.join(c.tmp, "run")))


def bad_flag_value(c: Case):
    status, seconds, text = c.run(mdgan("--lr-g", "abc", "--out", os.path.join(c.tmp, "run")))
    return status, seconds, text + f"\n({len(text.splitlines())} lines)"


def ctrl_c(c: Case):
    out = os.path.join(c.tmp, "run")
    tic = time.monotonic()
    job = c.start(mdgan("--iterations", 1000000, "--checkpoint-every", 20, "--out", out))
    wait_for(lambda: checkpoints(out))
    os.killpg(job.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole process group
    try:
        text = job.communicate(timeout=120)[0]
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        return "hang", time.monotonic() - tic, job.communicate()[0]
    tracebacks = text.count("Traceback")
    return job.returncode, time.monotonic() - tic, text + f"\n({tracebacks} tracebacks, " \
        f"checkpoints {checkpoints(out)})"


def sigterm_in_conversion(c: Case):
    cache = os.path.join(c.tmp, "cache")
    tic = time.monotonic()
    job = c.start([PY, "-m", "mpi_gan.standalone", "--dataset", "mnist", "--cache-dir", cache,
                   "--iterations", "2", "--eval-every", "0", "--out",
                   os.path.join(c.tmp, "run")])
    wait_for(lambda: os.path.isdir(cache) and any(".tmp" in n for n in os.listdir(cache)))
    os.killpg(job.pid, signal.SIGTERM)
    text = job.communicate(timeout=300)[0]
    left = [n for n in os.listdir(cache) if ".tmp" in n] if os.path.isdir(cache) else []
    return job.returncode, time.monotonic() - tic, text + f"\n(temporary files left: {left})"


def evaluate_iteration0(c: Case):
    out = os.path.join(c.tmp, "run")
    job = c.start([PY, "-m", "mpi_gan.standalone", *FAST, "--iterations", "1000000",
                   "--checkpoint-every", "0", "--out", out])
    wait_for(lambda: os.path.exists(os.path.join(out, "run.h5")))
    time.sleep(2)
    os.killpg(job.pid, signal.SIGKILL)
    job.communicate()
    return c.run([PY, "-m", "mpi_gan.evaluate", out])


def evaluate_nan_generator(c: Case):
    out = os.path.join(c.tmp, "run")
    c.run([PY, "-m", "mpi_gan.standalone", "--dataset", "mnist", "--iterations", "10",
           "--batch-size", "10", "--eval-every", "0", "--out", out])
    with h5py.File(os.path.join(out, "run.h5"), "r+") as f:
        names = []
        f["generator"].visititems(lambda n, o: names.append(n)
                                  if isinstance(o, h5py.Dataset) else None)
        dataset = f["generator"][names[0]]  # as a writer would (its CRC follows, if any)
        integrity.overwrite(dataset, np.full(dataset.shape, np.nan))
    return c.run([PY, "-m", "mpi_gan.evaluate", out, "--samples", "200"])


CASES = {"cache_overwritten": cache_overwritten, "nan_learning_rates": nan_learning_rates,
         "two_runs_one_out": two_runs_one_out, "lost_run": lost_run,
         "corrupt_deflate": corrupt_deflate, "huge_seed": huge_seed,
         "bad_flag_value": bad_flag_value, "ctrl_c": ctrl_c,
         "sigterm_in_conversion": sigterm_in_conversion,
         "evaluate_iteration0": evaluate_iteration0,
         "evaluate_nan_generator": evaluate_nan_generator}


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    hits = [line for line in lines if any(k in line for k in KEYWORDS)]
    extra = [line for line in lines if line.startswith("(")]
    line = hits[0] if hits else "(no line)"
    line = line if len(line) <= 160 else line[:157] + "..."
    return " ".join([line, *extra]).replace("|", "/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    parser.add_argument("--only", nargs="*", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    rows = []
    for name in args.only:
        with tempfile.TemporaryDirectory(prefix=f"fault-{name}-") as tmp:
            status, seconds, text = CASES[name](Case(os.path.abspath(args.repo), tmp))
        rows.append((name, status, seconds, first_line(text)))
        print(f"{name}: {status} in {seconds:.1f} s", file=sys.stderr, flush=True)
    print("| case | status | seconds | what the user reads |\n|---|---|---|---|")
    for name, status, seconds, line in rows:
        print(f"| {name} | {status} | {seconds:.1f} | {line} |")
    for name, status, _, _ in rows:
        print(f"{name}_status={status}")


if __name__ == "__main__":
    main()
