"""Bounded-staleness MD-GAN in one process (``replay.Replica``), on a fixed schedule, to
study what a one-version lag costs and how a staleness rule repairs it, free of MPI's
timing (docs/results.md: how ``--staleness-lookahead`` was chosen):

* ``sync``: every worker is handed the version's pair, every feedback is taken, G steps:
  synchronous MD-GAN with k = 1 (tau = 0; since the pairs are split as synchronous
  MD-GAN splits its batches, bit for bit; the results of docs/results.md were of one X_g
  per pair);
* ``lag``: the steady state of ``--staleness-bound`` > 0 without a straggler, as the MPI
  server runs it (``hands_on``): each worker whose feedback is taken is handed its next
  batches at once, before the update that feedback completes, so nearly every feedback
  is one version stale (tau = 1; tau = 0 after a drain). Every ``swap_period`` versions
  the steps in flight are drained and the discriminators swapped (both schedules).

Toy datasets (ring, grid) only, 4 workers, scored every 500 G updates on 2,500 samples.
Usage: ``python scripts/staleness_pipeline.py sync|lag SEED... -- MDGAN_FLAGS`` (e.g.
``lag 3 4 5 -- --dataset ring --iterations 3000 --staleness-lookahead 1``). Prints each
evaluation, then, over the seeds, the mean staleness of the feedbacks taken and the mean
of each run's last three evaluations as ``mean_tau=``, ``modes_last3=`` and
``high_quality_last3=`` (the last lines).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from mpi_gan.algorithms.mdgan.config import parse_args, validate
from mpi_gan.algorithms.mdgan.plan import swap_period
from mpi_gan.algorithms.mdgan.replay import Replica
from mpi_gan.algorithms.mdgan.staleness import hands_on
from mpi_gan.data.toy import mixture
from mpi_gan.metrics.evaluator import generate
from mpi_gan.metrics.modes import mode_scores

WORKERS, EVAL_EVERY, SAMPLES = 4, 500, 2500


def train(schedule: str, flags: list[str]) -> tuple[list[tuple[int, float, float]], float]:
    """((version, modes, high_quality) at every evaluation, the mean staleness of the
    feedbacks taken) of one run."""
    cfg = parse_args(["--k", "1", "--staleness-bound", "4", "--staleness-batches", "eager",
                      *flags], quiet=True)
    validate(cfg, WORKERS + 1)
    if cfg.staleness_batches != "eager" or cfg.staleness_quorum:
        sys.exit("the schedules here hand out batches themselves and step G after every "
                 "worker's feedback: leave --staleness-batches and --staleness-quorum out")
    if cfg.dataset not in ("ring", "grid"):
        sys.exit(f"toy datasets only (ring, grid), got {cfg.dataset}")
    if cfg.iterations < 3 * EVAL_EVERY:
        sys.exit(f"--iterations must be >= {3 * EVAL_EVERY}: three evaluations at least")
    if schedule == "sync" and cfg.staleness_lookahead:
        sys.exit("the sync schedule has no stale feedback: leave --staleness-lookahead out")
    torch.set_num_threads(cfg.threads)
    run = Replica(cfg, WORKERS + 1)
    core, points = run.core, mixture(cfg.dataset)
    period = swap_period(cfg.swap_epochs, run.mean_shard, cfg.batch_size)
    evaluated, rows, taus, idle = 0, [], [], list(run.workers)
    while core.version < cfg.iterations:
        if core.update_due():  # the update a drain left due, made as the MPI server does
            run.update()
        for n in idle:
            run.hand_out(n)
        idle = []
        for n in run.workers:  # feedbacks arrive in rank order
            taus.append(run.take(n).tau)
            due = core.update_due()
            if schedule == "lag" and hands_on(due, core.version, period, WORKERS, 0,
                                              cfg.iterations):
                run.hand_out(n)  # before the update: its feedback will be a version stale
            else:
                idle.append(n)
            if due:
                run.update()
        if period and core.version % period == 0:
            for n in sorted(core.in_flight):  # the drain: every worker idle
                taus.append(run.take(n).tau)
                idle.append(n)
            run.swap(core.version // period)
        if core.version // EVAL_EVERY > evaluated:
            evaluated = core.version // EVAL_EVERY
            scored = run.average if run.average is not None else run.g
            samples = generate(scored, cfg.latent_dim, 0, SAMPLES, cfg.seed, torch.device("cpu"))
            s = mode_scores(samples.numpy(), points.centres, points.std)
            rows.append((core.version, s["modes"], s["high_quality"]))
            print(f"seed {cfg.seed} {schedule} version {core.version}: modes {s['modes']:.0f} "
                  f"high_quality {s['high_quality']:.3f}", flush=True)
    return rows, float(np.mean(taus))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("schedule", choices=("sync", "lag"))
    parser.add_argument("seeds", nargs="+", type=int)
    ours, flags = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    args = parser.parse_args(ours)
    last3, taus = [], []
    for seed in args.seeds:
        rows, tau = train(args.schedule, [*flags, "--seed", str(seed)])
        last3.append(np.mean(rows[-3:], axis=0))
        taus.append(tau)
    last3 = np.array(last3)
    print(f"mean_tau={np.mean(taus):.3f}")
    print(f"modes_last3={last3[:, 1].mean():.2f}")
    print(f"high_quality_last3={last3[:, 2].mean():.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
