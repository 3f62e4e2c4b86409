"""End-to-end tests of ``python -m mpi_gan.mdgan`` through real mpiexec subprocesses."""
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

from tests.conftest import REPO, ASGD_FAST, FAST, all_params, digest, mpirun, single
from tests.unit.test_data import write_cifar_dir




def mdgan(n, out, *extra, timeout=240, env=None):
    return mpirun(n, ["mpi_gan.mdgan", "--out", str(out), *FAST, *extra], timeout=timeout, env=env)




def resume_matches_straight(tmp_path, module, world, common, total=12, half=6):
    """2T iterations in one go == T, then --resume up to 2T: every rank's saved state
    (models, Adam, RNG, compressor), the run file's tables and model, bit for bit."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = [*common, "--checkpoint-every", str(half), "--keep-checkpoints", "5"]
    run = mpirun if world > 1 else single
    p1 = run(world, [module, "--out", str(straight), "--iterations", str(total), *common])
    assert p1.returncode == 0, p1.stderr
    p2 = run(world, [module, "--out", str(split), "--iterations", str(half), *common])
    assert p2.returncode == 0, p2.stderr
    first = split / "checkpoints" / f"ckpt_{half:08d}.h5"
    before = digest(first)
    p3 = run(world, [module, "--out", str(split), "--iterations", str(total), *common,
                     "--resume", str(split)])
    assert p3.returncode == 0, p3.stderr
    assert "resumed from" in p3.stdout
    assert digest(first) == before  # the checkpoint resumed from is untouched
    name = f"ckpt_{total:08d}.h5"
    a = all_params(straight / "checkpoints" / name)
    b = all_params(split / "checkpoints" / name)
    # the final checkpoints' tables, read through their row segments (digests checked):
    # the resumed run's holds the first launch's rows too
    from mpi_gan.analysis.runs import read_run
    tables = [read_run(str(d / "checkpoints" / name))["metrics"] for d in (straight, split)]
    assert tables[0].keys() == tables[1].keys() and len(tables[0]["iteration"])
    differ = [k for k in tables[0] if k != "seconds"  # wall time differs
              and not np.array_equal(tables[0][k], tables[1][k], equal_nan=True)]
    assert differ == [], {k: (tables[0][k], tables[1][k]) for k in differ}
    assert a.keys() == b.keys() and len(a) > 10 and any("rng" in k for k in a)
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    with h5py.File(straight / "run.h5", "r") as f1, h5py.File(split / "run.h5", "r") as f2:
        rows = f2["metrics/iteration"][()]
        assert np.array_equal(f1["metrics/iteration"][()], rows) and len(rows)
        assert np.array_equal(f1["metrics/d_loss"][()], f2["metrics/d_loss"][()])
        model = "generator" if "generator" in f1 else "model"
        for key in f1[f"{model}/model"]:
            assert np.array_equal(f1[f"{model}/model/{key}"][()], f2[f"{model}/model/{key}"][()])
        assert f2.attrs["finished"] == 1 and f2.attrs["iteration"] == total
    return p1



def test_mdgan_resume_is_bit_identical(tmp_path):
    # the command line's --resume through mpiexec, at 3 ranks (every world size, in process:
    # tests/mpi/test_mdgan.py); 96 samples, batch 8, N = 2: swaps after iterations 6 and 12;
    # compressed feedback: the compressor's call counter and the residual must resume too;
    # so must the moving average of G (--g-ema), which is also the run file's generator
    resume_matches_straight(tmp_path, "mpi_gan.mdgan", 3, [
        *FAST, "--swap-adam", "travel", "--compress", "randomk:ratio=0.2", "--residual",
        "--g-ema", "0.9"])


def test_mdgan_resume_is_bit_identical_on_rgb_images(tmp_path):
    """3x32x32: CIFAR-10 binary batches written here, the paper's CIFAR10 CNN, non-i.i.d."""
    write_cifar_dir(str(tmp_path / "cifar"), per_batch=16)
    resume_matches_straight(tmp_path, "mpi_gan.mdgan", 3, [
        "--dataset", "cifar10", "--data-dir", str(tmp_path / "cifar"), "--cache-dir",
        str(tmp_path / "cache"), "--model", "cnn", "--latent-dim", "32", "--batch-size", "8",
        "--split", "labels:5", "--log-every", "100", "--seed", "3"], total=8, half=4)


def test_a_straggler_changes_no_number_of_synchronous_mdgan_and_is_recorded(tmp_path):
    """--slow 2:3 (worker 2 sleeps twice its compute time per step) leaves synchronous
    MD-GAN's mathematics alone: every rank's checkpointed state equals the run without it,
    bit for bit; the run file's configuration records it and worker 2 says it straggles."""
    common = ["--iterations", "6", "--eval-every", "0", "--checkpoint-every", "6"]
    plain = mdgan(3, tmp_path / "plain", *common)
    slow = mdgan(3, tmp_path / "slow", *common, "--slow", "2:3")
    assert plain.returncode == 0 and slow.returncode == 0, plain.stderr + slow.stderr
    [a], [b] = ([p for p in (tmp_path / run / "checkpoints").glob("ckpt_*.h5")]
                for run in ("plain", "slow"))
    left, right = all_params(a), all_params(b)
    assert left.keys() == right.keys() and all(np.array_equal(left[k], right[k]) for k in left)
    with h5py.File(tmp_path / "slow" / "run.h5", "r") as f:
        assert f["config"].attrs["slow"] == "2:3"
    with h5py.File(tmp_path / "plain" / "run.h5", "r") as f:
        assert f["config"].attrs["slow"] == ""
    assert "stragglers (--slow): worker 2 takes 3 times its compute time per step" in \
        slow.stdout
    assert "worker 2: a straggler (--slow 2:3)" in \
        (tmp_path / "slow" / "logs" / "rank2.log").read_text()


def test_flgan_resume_is_bit_identical(tmp_path):
    # shards of 48, batch 8: rounds after iterations 6 and 8 (the last); 4 is mid-round
    resume_matches_straight(tmp_path, "mpi_gan.flgan", 3, FAST, total=8, half=4)


@pytest.mark.timeout(600)  # three trainings, then analyze and sample as printed
def test_standalone_resume_is_bit_identical_without_mpiexec(tmp_path):
    """... and the commands a run prints at its end work as printed, on its own paths."""
    straight = resume_matches_straight(tmp_path, "mpi_gan.standalone", 1,
                                       [*FAST, "--g-ema", "0.9"], total=8, half=4)
    lines = straight.stdout.splitlines()
    steps = [line.split("#")[0].split() for line in lines[lines.index("next:") + 1:]]
    assert [s[:3] for s in steps] == [[sys.executable, "-m", f"mpi_gan.{m}"]
                                      for m in ("analyze", "sample", "evaluate")]
    run = str(tmp_path / "straight")
    assert all(s[3] == run for s in steps)
    for step in steps[:2]:  # evaluate would train a score classifier: tested elsewhere
        proc = subprocess.run(step, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (step, proc.stderr)
    assert (tmp_path / "straight" / "analysis" / "report.html").is_file()
    assert (tmp_path / "straight" / "samples.png").is_file()


def test_every_entry_points_help_shows_defaults_and_no_empty_ones_markup_or_source():
    """Each command's --help: the defaults that mean something, and none of "(default: )",
    "(default: None)", a second default beside one the text gives, docstring backquotes
    or the paths of the package's source files (a user should not need them)."""
    shown = {"mpi_gan.mdgan": "--swap-epochs", "mpi_gan.flgan": "--round-epochs",
             "mpi_gan.standalone": "--split", "mpi_gan.asgd": "--staleness",
             "mpi_gan.analyze": "--grid", "mpi_gan.evaluate": "--samples",
             "mpi_gan.sample": "--cols"}
    procs = {m: subprocess.Popen([sys.executable, "-m", m, "--help"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for m in shown}
    for module, proc in procs.items():
        text = " ".join(proc.communicate(timeout=120)[0].split())  # lines joined
        assert proc.returncode == 0, (module, text)
        assert re.search(rf"{shown[module]} \S+ .*?\(default: \S+\)", text), module
        for bad in ("(default: )", "(default: None)", "(default: False)", "``", "mpi_gan/",
                    ".py"):
            assert bad not in text, (module, bad)
        assert not re.search(r"\(default[^()]*(\([^()]*\)[^()]*)*\) \(default:", text), module


@pytest.mark.parametrize("exchange", ["p2p", "tree"])
def test_eight_ranks_k_below_n_equal_the_reference(tmp_path, exchange):
    """1 server + 7 workers, k = 3 < N, swaps every 3 iterations, on synthetic data; with
    --exchange tree, batches go down trees of 4 and 5 recipients (depth 2 and 3) and
    the traffic counters equal the model's."""
    from mpi_gan.algorithms.mdgan.reference import run_reference
    from mpi_gan.algorithms.mdgan.traffic_model import expected_traffic
    from mpi_gan.algorithms.mdgan.protocol import ALL_KINDS
    from mpi_gan.io.runlog import read_traffic
    from mpi_gan.algorithms.mdgan.config import MdganConfig
    out = tmp_path / "n8"
    args = ["--dataset", "synthetic", "--synthetic-size", "168", "--batch-size", "8",
            "--iterations", "7", "--k", "3", "--checkpoint-every", "0", "--seed", "11",
            "--log-every", "100", "--cache-dir", str(tmp_path / "cache"),
            "--exchange", exchange]
    proc = mpirun(8, ["mpi_gan.mdgan", "--out", str(out), *args], timeout=300)
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out / "run.h5", "r") as f:
        cfg = MdganConfig.from_attrs(f["config"].attrs)
        assert cfg.k == 3 and f.attrs["world_size"] == 8 and cfg.exchange == exchange
        assert read_traffic(f).matrix("swap", "messages")[1:, 1:].sum() == 2 * 7  # 2 swaps x 7
        stored = {k: f[f"generator/model/{k}"][()] for k in f["generator/model"]}
        counted = {kind: read_traffic(f).matrix(kind) for kind in
                   ("batch_g", "batch_d", "feedback")}
    ref_g, _ = run_reference(cfg, 8)
    for key, value in ref_g.state_dict().items():
        assert np.allclose(stored[key], value.numpy(), rtol=0, atol=1e-6), key
    model, _ = expected_traffic(cfg, 8, 784, 24, 0, 0, 0, 0)
    batch = 7 * 8 * 784 * 4  # 7 iterations of (8, 1, 28, 28) float32
    for kind, got in counted.items():
        assert np.array_equal(got, model[ALL_KINDS.index(kind)]), kind
    server_out = counted["batch_g"][0].sum() + counted["batch_d"][0].sum()
    assert server_out == (3 if exchange == "tree" else 2 * 7) * batch
    assert counted["feedback"][:, 0].sum() == (3 if exchange == "tree" else 7) * batch
    relayed = counted["batch_g"][1:].sum() + counted["batch_d"][1:].sum()
    assert relayed == (2 * 7 - 3 if exchange == "tree" else 0) * batch


def bad_runs(tmp_path):
    good = tmp_path / "good"
    proc = mdgan(3, good, "--iterations", "4", "--checkpoint-every", "2")
    assert proc.returncode == 0, proc.stderr
    ckpt = good / "checkpoints" / "ckpt_00000004.h5"
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(open(ckpt, "rb").read()[:5000])
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = tmp_path / "bad"
    return good, ckpt, [
        (1, ["--iterations", "2"], "at least 2 MPI ranks"),
        (2, ["--k", "2"], "1 <= k <= number of workers (1), got 2"),
        (2, ["--k", "0"], "1 <= k <= number of workers"),
        (2, ["--batch-size", "0"], "must be a positive integer"),
        (2, ["--batch-size", "-4"], "must be a positive integer"),
        (2, ["--iterations", "abc"], "must be an integer"),
        (2, ["--dataset", "mnist", "--data-dir", str(tmp_path / "missing")],
         "does not exist or is not a directory"),
        (2, ["--resume", str(corrupt), "--iterations", "8"], "corrupt or truncated"),
        (2, ["--resume", str(ckpt), "--iterations", "8", "--model", "cnn"],
         "--model 'mlp' in checkpoint vs 'cnn' now"),
        (2, ["--resume", str(tmp_path / "nothing-here"), "--iterations", "8"], "no such file"),
        (2, ["--out", str(blocker / "sub")], "is not a writable directory"),
        (2, ["--exchange", "ring"], "--exchange: invalid choice: 'ring'"),
        (2, ["--exchange", "tree", "--compress", "topk:ratio=0.1"],
         "--exchange tree sums the feedback on its way up the tree and needs --compress none"),
        (2, ["--exchange", "tree", "--fault-tolerant"], "--exchange tree does not survive"),
        # a new run must not overwrite an earlier run's files
        (2, ["--out", str(good), "--iterations", "8"], "already holds a run"),
    ], out


def test_bad_input_fails_fast_with_one_message(tmp_path):
    good, ckpt, cases, out = bad_runs(tmp_path)
    before, run_before = digest(ckpt), digest(good / "run.h5")
    for n, args, message in cases:
        proc = mpirun(n, ["mpi_gan.mdgan", *FAST, "--out", str(out), *args], timeout=60)
        assert proc.returncode != 0, (args, proc.stdout)
        assert message in proc.stderr, (args, proc.stderr)
        assert proc.stderr.count("error:") == 1, (args, proc.stderr)  # one message, not N
    assert digest(ckpt) == before and digest(good / "run.h5") == run_before


def test_exception_on_one_rank_aborts_job_and_keeps_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = mdgan(4, out, "--iterations", "20", "--checkpoint-every", "4",
                 env={"MPI_GAN_FAULT": "2:9"}, timeout=120)
    assert proc.returncode != 0
    # why the job died is in the failing rank's log, written before MPI_Abort
    log = (out / "logs" / "rank2.log").read_text()
    assert "aborting the job" in log and "fault injected by MPI_GAN_FAULT at iteration 9" in log
    # and on mpiexec's stderr: the rank waits until the launcher has read it before aborting
    assert "rank 2 failed, aborting all ranks" in proc.stderr, proc.stderr
    assert "fault injected" in proc.stderr, proc.stderr
    # the checkpoint before the failure is complete and resumable
    resumed = mdgan(4, out, "--iterations", "12", "--checkpoint-every", "4", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "ckpt_00000008.h5" in resumed.stdout




def test_asgd_end_to_end_and_traffic_report(tmp_path):
    """Two asgd runs (uncompressed, AdaComp), then the analysis script's table."""
    runs = {}
    for name, compress in (("plain", "none"), ("ada", "adacomp:ratio=0.01,values=fp16")):
        out = tmp_path / name
        # both evaluate on 80 held-out training samples, the test set once at the end
        proc = mpirun(3, ["mpi_gan.asgd", *ASGD_FAST, "--iterations", "100", "--compress",
                          compress, "--validation", "80", "--out", str(out)], timeout=180)
        assert proc.returncode == 0, proc.stderr
        assert "final validation accuracy" in proc.stdout and "80 held-out" in proc.stdout
        assert "final test accuracy" in proc.stdout
        runs[name] = out / "run.h5"
    report = subprocess.run([sys.executable, "scripts/traffic_report.py", str(runs["plain"]),
                             str(runs["ada"])], capture_output=True, text=True, timeout=60,
                            cwd=REPO)
    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    ada = next(line for line in lines if "adacomp" in line)
    factor = float(ada.split("x")[0].split()[-1])
    assert factor > 50  # 1% of values, fp16, compact indices
    assert "accuracy" in ada
    plain = next(line for line in lines if " none " in line)
    assert " 1.0x" in plain
    assert "validation" in ada and "test" in ada
    # then one row per setting (one seed each), validation and test apart
    head = lines.index("per setting (asgd runs that differ only in their seed):")
    assert "VALIDATION acc mean" in lines[head + 1] and "TEST acc mean" in lines[head + 1]
    assert lines[head + 2].startswith("none, staleness adacomp")
    assert lines[head + 3].startswith("adacomp:ratio=0.01,values=fp16, residual")
    assert lines[head + 3].count(" pt") == 2  # validation and test against the baseline


def test_asgd_bad_input(tmp_path):
    cases = [(1, ["--iterations", "5"], "at least 2 MPI ranks"),
             (2, ["--compress", "adacomp:ratio=3"], "bad ratio=3"),
             (2, ["--compress", "zip"], "valid: adacomp, adacomp_bins"),
             (2, ["--lr", "-1"], "must be a positive finite number"),
             (2, ["--resume", str(tmp_path / "none")], "no such file")]
    for n, args, message in cases:
        proc = mpirun(n, ["mpi_gan.asgd", *ASGD_FAST, "--out", str(tmp_path / "x"), *args],
                      timeout=60)
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr)
        assert proc.stderr.count("error:") == 1, proc.stderr


def test_baselines_and_datasets_bad_input(tmp_path):
    """One clear message and a non-zero exit on every rank, for the new entry points and data."""
    write_cifar_dir(str(tmp_path / "cifar"), per_batch=4)  # 20 training images
    cases = [
        (2, "mpi_gan.standalone", [], "runs in one process"),
        (1, "mpi_gan.standalone", ["--split", "labels:2"], "trains on the whole training set"),
        (1, "mpi_gan.flgan", [], "at least 2 MPI ranks"),
        (2, "mpi_gan.flgan", ["--round-every", "-1"], "must be an integer >= 0"),
        (2, "mpi_gan.mdgan", ["--dataset", "celeba", "--data-dir", str(tmp_path)],
         "--acgan needs class labels"),
        (2, "mpi_gan.mdgan", ["--dataset", "cifar10"], "cifar10 needs --data-dir"),
        (2, "mpi_gan.flgan", ["--dataset", "cifar10", "--data-dir", str(tmp_path / "nope")],
         "does not exist"),
        (3, "mpi_gan.mdgan", ["--dataset", "cifar10", "--data-dir", str(tmp_path / "cifar"),
                              "--batch-size", "16"], "fewer than --batch-size 16"),
        (2, "mpi_gan.mdgan", ["--split", "labels:12"], "only 10 classes"),
        (2, "mpi_gan.asgd", ["--dataset", "celeba"], "has no labels"),
        # a cache directory where no file can be made (sysfs: not even by root)
        (2, "mpi_gan.mdgan", ["--dataset", "mnist", "--cache-dir", "/sys"],
         "cannot write in '/sys', where mnist-"),
    ]
    for n, module, args, message in cases:
        run = mpirun if n > 1 else single
        proc = run(n, [module, *FAST, "--out", str(tmp_path / "x"), "--cache-dir",
                       str(tmp_path / "cache"), *args], timeout=60)
        assert proc.returncode != 0, (module, args, proc.stdout)
        assert message in proc.stderr, (module, args, proc.stderr)
        assert proc.stderr.count("error:") == 1, (module, args, proc.stderr)
