"""The MD-GAN server's link under ``--exchange p2p`` and ``--exchange tree``, measured in
one run of each on the same data, against the analytic traffic model.

Usage: ``python scripts/bench_exchange.py [--workers 16] [--k 4] [--iterations 30]``

Each mode is a real ``mpiexec -n N+1 python -m mpi_gan.mdgan`` run on full MNIST (the
defaults: MLP models, batch 100, ACGAN) with no evaluation and no checkpoint but the
last. From its run file this script reads the traffic counters of the iteration's
messages (batch_g, batch_d, labels, feedback, losses) and prints, per iteration, the
bytes the server sent and received, the same figures from the traffic model
(``traffic_model.expected_traffic``), and the median seconds of an iteration (rank 0's
``metrics/seconds``, the first 3 left out). Ends with one ``name=value`` line per figure;
the issue's floor is ``server_bytes_tree_over_p2p <= 0.3`` (sent plus received).
On a machine with fewer cores than ranks the seconds measure the ranks' compute sharing
the cores, not the network.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np

BIN = os.path.dirname(sys.executable)
MPIEXEC = os.path.join(BIN, "mpiexec")
ITERATION_KINDS = ("batch_g", "batch_d", "labels", "feedback", "losses")


def run_mode(exchange: str, args, cache: str) -> dict:
    """One MD-GAN run; the server's bytes out and in per iteration, measured and modelled,
    and the median seconds of an iteration."""
    from mpi_gan.algorithms.mdgan.protocol import ALL_KINDS
    from mpi_gan.algorithms.mdgan.traffic_model import expected_traffic
    from mpi_gan.algorithms.mdgan.config import MdganConfig
    from mpi_gan.data import spec_of
    from mpi_gan.io.runlog import read_traffic
    with tempfile.TemporaryDirectory() as out:
        run = subprocess.run([MPIEXEC, "-n", str(args.workers + 1), sys.executable, "-m",
                              "mpi_gan.mdgan", "--out", out, "--exchange", exchange,
                              "--k", str(args.k), "--iterations", str(args.iterations),
                              "--cache-dir", cache, "--eval-every", "0",
                              "--checkpoint-every", "0", "--swap-epochs", "0",
                              "--log-every", str(args.iterations)],
                             capture_output=True, text=True, timeout=3600)
        if run.returncode != 0:
            sys.exit(f"--exchange {exchange} failed:\n{run.stdout}{run.stderr}")
        with h5py.File(os.path.join(out, "run.h5"), "r") as f:
            cfg = MdganConfig.from_attrs(f["config"].attrs)
            counters = read_traffic(f)
            traffic = sum(counters.matrix(kind) for kind in ITERATION_KINDS)
            seconds = f["metrics/seconds"][()]
    sample = int(np.prod(spec_of(cfg).shape))  # d = C*H*W
    model, _ = expected_traffic(cfg, args.workers + 1, sample, 1, 0, 0, 0, 0)
    modelled = sum(model[ALL_KINDS.index(kind)] for kind in ITERATION_KINDS)
    per = float(args.iterations)
    return dict(out=traffic[0].sum() / per, into=traffic[:, 0].sum() / per,
                model_out=modelled[0].sum() / per, model_into=modelled[:, 0].sum() / per,
                seconds=float(np.median(seconds[3:])) if len(seconds) > 3 else float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--workers", type=int, default=16, help="worker count N (ranks N+1)")
    parser.add_argument("--k", type=int, default=4, help="generated batches per iteration")
    parser.add_argument("--iterations", type=int, default=30, help="iterations of each run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        rows = {mode: run_mode(mode, args, cache) for mode in ("p2p", "tree")}
    print(f"MD-GAN, N = {args.workers}, k = {args.k}, full MNIST, {args.iterations} "
          f"iterations; server bytes per iteration (MB)")
    print(f"{'exchange':<9}{'sent':>10}{'model':>10}{'received':>10}{'model':>10}"
          f"{'s/iter':>9}")
    for mode, r in rows.items():
        print(f"{mode:<9}{r['out'] / 1e6:>10.3f}{r['model_out'] / 1e6:>10.3f}"
              f"{r['into'] / 1e6:>10.3f}{r['model_into'] / 1e6:>10.3f}{r['seconds']:>9.3f}")
    p2p, tree = rows["p2p"], rows["tree"]
    for mode, r in rows.items():
        print(f"{mode}_server_bytes_per_iteration={r['out'] + r['into']:.0f}")
        measured, modelled = r["out"] + r["into"], r["model_out"] + r["model_into"]
        print(f"{mode}_measured_over_model={measured / modelled:.4f}")
    print(f"seconds_per_iteration_tree_over_p2p={tree['seconds'] / p2p['seconds']:.3f}")
    print(f"server_bytes_out_tree_over_p2p={tree['out'] / p2p['out']:.3f}")
    print(f"server_bytes_in_tree_over_p2p={tree['into'] / p2p['into']:.3f}")
    print(f"server_bytes_tree_over_p2p="
          f"{(tree['out'] + tree['into']) / (p2p['out'] + p2p['into']):.3f}")


if __name__ == "__main__":
    main()
