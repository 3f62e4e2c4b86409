"""End-to-end tests of the scores: evaluation rows and cost counters in real MPI runs,
``python -m mpi_gan.evaluate`` (also --real on full MNIST) and ``python -m mpi_gan.analyze``."""
import os
import re
import socket

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mpi_gan.metrics.classifier import ACCURACY_FLOOR, load_classifier
from tests.conftest import REPO, digest, mpirun
from tests.conftest import FAST, single
from tests.e2e.test_cli import resume_matches_straight

SCORED = ["--eval-every", "5", "--eval-samples", "50", "--iterations", "10"]


def train(module, ranks, out, cache, *extra):
    run = mpirun if ranks > 1 else single
    proc = run(ranks, [module, "--out", str(out), *FAST, *SCORED, "--cache-dir", str(cache),
                       *extra])
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def scored_runs(tmp_path_factory):
    """MD-GAN, FL-GAN and the standalone GAN on the synthetic set, scored every 5 iterations."""
    root = tmp_path_factory.mktemp("scored")
    cache = root / "cache"
    runs = {"mdgan": root / "mdgan", "flgan": root / "flgan", "standalone": root / "alone"}
    logs = {"mdgan": train("mpi_gan.mdgan", 3, runs["mdgan"], cache).stdout,
            "flgan": train("mpi_gan.flgan", 3, runs["flgan"], cache, "--round-every", "5").stdout,
            "standalone": train("mpi_gan.standalone", 1, runs["standalone"], cache).stdout}
    return runs, logs, cache


def test_evaluation_rows_and_cost_are_in_the_run_file(scored_runs):
    runs, logs, _ = scored_runs
    for name, out in runs.items():
        assert "iter 5 scores: mnist_score" in logs[name], logs[name]
        # where the time went, one line per phase; the first run trained the classifier
        phases = dict(re.findall(r"^phase (\w+): ([\d.]+) s", logs[name], re.M))
        assert list(phases) == ["data", "classifier", "training", "scoring"], logs[name]
        assert "phase scoring: " in logs[name] and "(2 evaluations)" in logs[name]
        with h5py.File(out / "run.h5", "r") as f:
            scores = {k: f["scores"][k][()] for k in f["scores"]}
            assert list(scores["iteration"]) == [5, 10], name
            assert ((scores["mnist_score"] >= 1) & (scores["mnist_score"] <= 10)).all()
            assert (scores["classifier_fid"] > 0).all()
            assert np.isnan(scores["inception_fid"]).all() and np.isnan(scores["inception_score"]).all()
            assert (np.diff(scores["wall_seconds"]) > 0).all() and (scores["eval_seconds"] > 0).all()
            world = int(f.attrs["world_size"])
            assert (np.diff(scores["server_bytes"]) > 0).all() or world == 1
            cost = {k: f["cost"][k][()] for k in f["cost"]}
            assert list(cost["steps"]) == [9] * world  # all but the FLOP-counted first
            assert (cost["compute_seconds"] > 0).all() and cost["wall_seconds"] > 0
            trainers = slice(1, None) if world > 1 else slice(0, 1)
            assert (cost["flops_per_step"][trainers] > 0).all()
    with h5py.File(runs["mdgan"] / "run.h5", "r") as md, \
            h5py.File(runs["flgan"] / "run.h5", "r") as fl:
        # an MD-GAN worker trains D only; an FL-GAN worker D and G
        assert md["cost/flops_per_step"][1] < fl["cost/flops_per_step"][1]


def test_scoring_does_not_change_the_training(scored_runs, tmp_path):
    runs, _, cache = scored_runs
    train("mpi_gan.mdgan", 3, tmp_path / "plain", cache, "--eval-every", "0")
    with h5py.File(runs["mdgan"] / "run.h5", "r") as a, \
            h5py.File(tmp_path / "plain" / "run.h5", "r") as b:
        assert "scores" in b and len(b["scores/iteration"]) == 0
        for key in a["generator/model"]:
            assert np.array_equal(a["generator/model"][key][()], b["generator/model"][key][()])


def test_evaluate_matches_the_training_rows_and_stores_them(scored_runs):
    runs, _, cache = scored_runs
    run_file = runs["mdgan"] / "run.h5"
    before = digest(run_file)
    proc = mpirun(1, ["mpi_gan.evaluate", str(runs["mdgan"]), "--cache-dir", str(cache)])
    assert proc.returncode == 0, proc.stderr
    assert digest(run_file) == before and "stored in" not in proc.stdout  # only read
    only_read = proc.stdout.strip().splitlines()[-2:]
    proc = mpirun(1, ["mpi_gan.evaluate", str(runs["mdgan"]), "--cache-dir", str(cache),
                      "--store"])
    assert proc.returncode == 0 and "stored in" in proc.stdout, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split("=")[0] for line in lines[-2:]] == ["mnist_score", "classifier_fid"]
    assert lines[-2:] == only_read
    printed = {k: float(v) for k, v in (line.split("=") for line in lines[-2:])}
    with h5py.File(run_file, "r") as f:
        stored = dict(f["evaluation"].attrs)
        last = {k: f["scores"][k][-1] for k in ("mnist_score", "classifier_fid")}
    assert stored["samples"] == 50 and stored["iteration"] == 10
    assert f"{run_file} (the generator of iteration 10): " in proc.stdout
    assert "(50 samples, 1 thread, " in proc.stdout  # the run's own --threads
    for name, value in printed.items():  # same generator, latents, images and threads
        assert value == pytest.approx(last[name], rel=1e-5)  # printed with 6 digits
        assert stored[name] == last[name]  # exactly training's
    # with another thread count: said, and the same scores to float noise
    proc = mpirun(1, ["mpi_gan.evaluate", str(runs["mdgan"]), "--cache-dir", str(cache),
                      "--threads", "2"])
    assert proc.returncode == 0, proc.stderr
    assert "is scored with 2 threads, its run scored with 1" in proc.stdout
    again = dict(line.split("=") for line in proc.stdout.strip().splitlines()[-2:])
    for name, value in again.items():
        assert float(value) == pytest.approx(last[name], rel=1e-4)
    ckpt = runs["flgan"] / "checkpoints" / "ckpt_00000010.h5"
    proc = mpirun(1, ["mpi_gan.evaluate", str(ckpt), "--samples", "20", "--cache-dir",
                      str(cache), "--store"])
    assert proc.returncode == 0 and "stored in" in proc.stdout, proc.stderr
    with h5py.File(ckpt, "r") as f:
        assert f.attrs["complete"] == 1 and f["evaluation"].attrs["samples"] == 20


def test_the_inception_preprocessing_goes_from_the_command_line_to_every_score(scored_runs,
                                                                               tmp_path):
    """--inception-preprocessing reaches the training's Inception scores (evaluate repeats
    them exactly with the run's choice, and not with another), the run file's
    configuration, evaluate's output line and its stored attributes."""
    import torch
    from tests.unit.test_metrics import _FeaturesAndLogits
    _, _, cache = scored_runs
    weights = tmp_path / "logits.pt"
    torch.jit.script(_FeaturesAndLogits()).save(str(weights))
    out = tmp_path / "run"
    train("mpi_gan.standalone", 1, out, cache, "--inception-weights", str(weights),
          "--inception-preprocessing", "pytorch-fid")
    with h5py.File(out / "run.h5", "r") as f:
        assert f["config"].attrs["inception_preprocessing"] == "pytorch-fid"
        last = float(f["scores"]["inception_fid"][-1])
    assert np.isfinite(last)

    def evaluate(*extra):
        proc = single(1, ["mpi_gan.evaluate", str(out), "--cache-dir", str(cache), *extra])
        assert proc.returncode == 0, proc.stderr
        return proc.stdout, float(re.search(r"^inception_fid=(\S+)$", proc.stdout,
                                            re.M).group(1))
    text, own = evaluate()
    assert own == pytest.approx(last, rel=1e-5)  # printed with 6 digits
    assert f"(Inception: pytorch-fid preprocessing, {weights})" in text
    text, other = evaluate("--inception-preprocessing", "tensorflow", "--store")
    assert other != pytest.approx(last, rel=1e-3) and "stored in" in text
    with h5py.File(out / "run.h5", "r") as f:
        stored = dict(f["evaluation"].attrs)
    assert stored["inception_preprocessing"] == "tensorflow"
    assert stored["inception_weights"] == str(weights)


def test_evaluate_bad_input_is_one_clear_error(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    for args, message in [([str(tmp_path / "missing")], "no run file or checkpoint"),
                          ([str(junk)], "not a readable HDF5 file"),
                          (["--real", "--samples", "1"], "--samples must be"),
                          ([], "give run files")]:
        proc = mpirun(1, ["mpi_gan.evaluate", *args], timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_bad_inception_weights_stop_every_rank_at_start(tmp_path):
    proc = mpirun(3, ["mpi_gan.mdgan", "--out", str(tmp_path / "r"), *FAST, *SCORED,
                      "--inception-weights", str(tmp_path / "none.pt")], timeout=120)
    assert proc.returncode == 2
    assert "mpi_gan: error: Inception weights" in proc.stderr and "no such file" in proc.stderr


def test_resumed_run_scores_as_if_never_interrupted(tmp_path):
    resume_matches_straight(tmp_path, "mpi_gan.mdgan", 3, [
        *FAST, "--eval-every", "3", "--eval-samples", "30", "--cache-dir",
        str(tmp_path / "cache")])
    with h5py.File(tmp_path / "straight" / "run.h5", "r") as a, \
            h5py.File(tmp_path / "split" / "run.h5", "r") as b:
        assert list(b["scores/iteration"][()]) == [3, 6, 9, 12]
        for name in ("iteration", "mnist_score", "classifier_fid"):
            assert np.array_equal(a[f"scores/{name}"][()], b[f"scores/{name}"][()]), name
        assert list(b["cost/steps"][()]) == [10, 10, 10]  # 12 less each process's first


def test_analyze_writes_the_table_and_plots(scored_runs, tmp_path):
    runs, _, _ = scored_runs
    out = tmp_path / "analysis"
    proc = mpirun(1, ["mpi_gan.analyze", *map(str, runs.values()), "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "runs=3"
    ratio = [line for line in lines if line.startswith("mdgan_vs_flgan_worker_flops_synthetic")]
    assert ratio and 0 < float(ratio[0].split("=")[1]) < 1
    table = pd.read_csv(out / "summary.csv")
    assert list(table.algorithm) == ["mdgan", "flgan", "standalone"]
    for column in ("mnist_score", "classifier_fid", "wall_seconds", "seconds_per_iteration_per_worker",
                   "flops_per_iteration_per_worker", "bytes_sent_per_worker", "bytes_feedback",
                   "bytes_upload", "k", "split", "workers"):
        assert column in table, column
    assert table.mnist_score.between(1, 10).all() and (table.iterations == 10).all()
    assert list(table.workers) == [2, 2, 1]
    assert len(pd.read_csv(out / "cost_ratios.csv")) == 1
    ranks = pd.read_csv(out / "ranks.csv")  # where each rank ran (/ranks)
    assert list(ranks.run) == ["mdgan"] * 3 + ["flgan"] * 3 + ["alone"]
    assert list(ranks["rank"]) == [0, 1, 2, 0, 1, 2, 0]
    assert set(ranks.host) == {socket.gethostname()} and set(ranks.device) == {"cpu"}
    assert ranks.pid.nunique() == 7 and ranks.mpi_library.str.contains("MPI").all()
    assert f"where: mdgan: ranks 0-2 on {socket.gethostname()} (cpu; " in proc.stdout
    sizes = {"scores_vs_iteration": (1200, 900), "scores_vs_wall_seconds": (1200, 900),
             "scores_vs_server_bytes": (1200, 900), "losses": (1200, 500),
             "traffic_mdgan": None, "traffic_flgan": None}
    for name, size in sizes.items():
        with Image.open(out / f"{name}.png") as image:
            image.load()
            assert size is None or image.size == size, (name, image.size)
        assert (out / f"{name}.svg").stat().st_size > 1000, name
    assert not (out / "traffic_alone.png").exists()  # one process: no links
    with Image.open(out / "samples_mdgan.png") as image:
        image.load()  # 10 x 10 samples of 28 pixels, each at least 56 high, classes named
        assert image.size[0] > 10 * 56 and image.size[1] > 10 * 56, image.size
        assert np.asarray(image).std() > 0


@pytest.fixture(scope="session")
def score_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("score-cache")


@pytest.mark.solo
@pytest.mark.timeout(1000)  # trains the MNIST score classifier (80 s on an idle 2-core machine)
def test_evaluate_real_mnist_is_above_nine_and_classifier_meets_its_floor(score_cache):
    proc = mpirun(1, ["mpi_gan.evaluate", "--real", "--dataset", "mnist", "--cache-dir",
                      str(score_cache)], timeout=900)
    assert proc.returncode == 0, proc.stderr
    score = float(proc.stdout.strip().splitlines()[-2].removeprefix("mnist_score="))
    assert score > 9
    [path] = [p for p in os.listdir(score_cache) if p.startswith("classifier-mnist")]
    assert load_classifier(str(score_cache / path), (1, 28, 28), 10).accuracy >= \
        ACCURACY_FLOOR["mnist"]


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="Debian's dataset-fashion-mnist is not installed")
@pytest.mark.solo
@pytest.mark.timeout(1000)
def test_fashion_mnist_classifier_meets_its_floor(score_cache):
    proc = mpirun(1, ["mpi_gan.evaluate", "--real", "--dataset", "fashion-mnist", "--cache-dir",
                      str(score_cache)], timeout=900)
    assert proc.returncode == 0, proc.stderr
    [path] = [p for p in os.listdir(score_cache) if p.startswith("classifier-fashion")]
    assert load_classifier(str(score_cache / path), (1, 28, 28), 10).accuracy >= \
        ACCURACY_FLOOR["fashion-mnist"]


def on_a_terminal(args, env):
    """Run ``args`` with stdout a pseudo-terminal; what it drew there."""
    import pty
    import subprocess
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdout=slave, stderr=subprocess.PIPE,
                            env=dict(os.environ, COLUMNS="120", **env))
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=240) == 0, proc.stderr.read()
    os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_progress_is_a_bar_on_a_terminal_and_lines_in_a_log(tmp_path):
    """On a TTY rank 0 draws a tqdm bar and keeps the periodic lines for its log file; with
    stdout a file (a batch job's log) it prints the lines; MPI_GAN_PROGRESS=lines prints
    lines on a TTY too (Open MPI hands its ranks one even when its output is a file)."""
    import sys
    args = [sys.executable, "-m", "mpi_gan.standalone", *FAST, "--iterations", "10",
            "--log-every", "5", "--eval-every", "0"]
    terminal = on_a_terminal([*args, "--out", str(tmp_path / "tty")], {})
    assert "10/10" in terminal and "it/s" in terminal and "\r" in terminal
    assert "iter 5/10" not in terminal
    assert "iter 5/10" in (tmp_path / "tty" / "logs" / "rank0.log").read_text()
    lines = on_a_terminal([*args, "--out", str(tmp_path / "lines")],
                          {"MPI_GAN_PROGRESS": "lines"})
    # a terminal turns each newline into \r\n; a bar redraws with a bare \r
    assert "iter 5/10" in lines and "it/s" in lines and "\r" not in lines.replace("\r\n", "")
    piped = single(1, ["mpi_gan.standalone", *FAST, "--iterations", "10", "--log-every", "5",
                       "--eval-every", "0", "--out", str(tmp_path / "file")])
    assert piped.returncode == 0 and "iter 5/10" in piped.stdout and "\r" not in piped.stdout


def quick_start_flags() -> list[str]:
    """The Makefile's RUN_FLAGS: the recipe `make run` trains with."""
    with open(os.path.join(REPO, "Makefile")) as f:
        line = next(line for line in f if line.startswith("RUN_FLAGS ?="))
    return line.split("?=", 1)[1].split()


@pytest.mark.solo
@pytest.mark.timeout(2000)  # 2,000 MD-GAN updates with 4 ranks, and maybe the classifier
def test_quick_start_draws_digits_a_person_recognises(score_cache, tmp_path):
    """`make run`: MD-GAN on full MNIST, 1 server + 3 workers, 2,000 updates of the paper's
    MLP with the recipe; its last evaluation must reach MNIST score >= 6 and classifier FID
    <= 200 (seeds 0 to 2 measured 9.07 to 9.14 and 52 to 56; the defaults: 4.01 / 330)."""
    flags = quick_start_flags()
    assert "--g-ema" in flags and "--lr-g" in flags
    out = tmp_path / "quickstart"
    proc = mpirun(4, ["mpi_gan.mdgan", "--iterations", "2000", *flags, "--cache-dir",
                      str(score_cache), "--log-every", "500", "--out", str(out)], timeout=1900)
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out / "run.h5", "r") as f:
        iteration = int(f["scores/iteration"][-1])
        score, fid = float(f["scores/mnist_score"][-1]), float(f["scores/classifier_fid"][-1])
    assert iteration == 2000
    assert score >= 6 and fid <= 200, f"MNIST score {score:.2f}, classifier FID {fid:.1f}"
