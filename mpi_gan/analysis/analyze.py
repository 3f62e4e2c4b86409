"""Offline analysis of runs, no MPI needed.

``python -m mpi_gan.analyze RUN... --out DIR`` reads run files, run directories or
checkpoints and writes into DIR: report.html (everything below on one self-contained
page, to open in a browser, offline), summary.csv (printed too: one row per run, with its
settings, seed and group, its last scores, wall time, cost per iteration and bytes per
message kind), groups.csv (printed too: one row per group of runs that differ only in
their seed, with the mean, std, min and max of each score and cost), cost_ratios.csv
(MD-GAN worker cost / FL-GAN worker cost where both ran on the same data),
scores_vs_{iteration,wall_seconds,server_bytes}.png, losses.png, traffic_<run>.png per
run and samples_<run>.png per run with a generator (one row per class with ACGAN; toy
runs: a scatter of the points, the mixture's centres marked). ranks.csv (printed as one
where: line per run) says where each rank ran: host, process id, device and MPI library.
Its output ends with name=value lines: the cost ratios, the number of groups and the
number of runs.
"""
from __future__ import annotations

import argparse
import os
import sys

import pandas as pd

from ..argtypes import HelpFormatter, OneLineParser
from .groups import group_table, label_runs
from .placement import ranks_table, where_lines
from .plots import loss_plot, score_plots, traffic_plot
from . import tensorboard_export
from .report import write_report
from .runs import RunFileError, read_run
from .sampling import grid_png
from .summary import cost_ratios, summary_table


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(error_name="mpi_gan.analyze", prog="python -m mpi_gan.analyze",
                      description=__doc__.split("\n\n")[1],
                      formatter_class=HelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run files, run directories or "
                   "checkpoints")
    p.add_argument("--out", default="analysis", help="directory for the CSV and PNG files")
    p.add_argument("--grid", type=int, default=10, help="rows and columns of sample grids "
                   "(rows: one per class with ACGAN; toy runs: 10 x grid^2 points)")
    p.add_argument("--tensorboard", metavar="DIR", default="", help="also write TensorBoard "
                   "event files, one directory per run (DIR/<run>), for tensorboard --logdir "
                   "DIR: losses, scores, time, bytes, sample grids and the configuration "
                   "(needs the tensorboard package)")
    return p


def unique_names(runs: list[dict]) -> None:
    """Give each run a name no other has (its per-run files, report sections and TensorBoard
    directory are named after it): a name two runs share gets its file's directory's
    name, then a count (``x``, ``x-2``, ...)."""
    names = [r["name"] for r in runs]
    for run in runs:
        if names.count(run["name"]) > 1:
            parent = os.path.basename(os.path.dirname(os.path.abspath(run["path"])))
            if parent != run["name"]:
                run["name"] = f"{run['name']}-{parent}"
    seen: dict[str, int] = {}
    for run in runs:
        seen[run["name"]] = seen.get(run["name"], 0) + 1
        if seen[run["name"]] > 1:
            run["name"] = f"{run['name']}-{seen[run['name']]}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.tensorboard:
            tensorboard_export.writer_class()  # before any work: is the package there?
        runs = [read_run(p) for p in args.runs]
        os.makedirs(args.out, exist_ok=True)
    except (RunFileError, OSError, tensorboard_export.TensorBoardMissing) as exc:
        print(f"mpi_gan.analyze: error: {exc}", file=sys.stderr)
        return 2
    unique_names(runs)
    table = label_runs(runs, summary_table(runs))
    table.to_csv(os.path.join(args.out, "summary.csv"), index=False)
    groups = group_table(table)
    groups.to_csv(os.path.join(args.out, "groups.csv"), index=False)
    ratios = cost_ratios(table)
    ratios.to_csv(os.path.join(args.out, "cost_ratios.csv"), index=False)
    ranks = ranks_table(runs)
    ranks.to_csv(os.path.join(args.out, "ranks.csv"), index=False)
    written = score_plots(runs, args.out) + [loss_plot(runs, args.out)]
    for run in runs:
        traffic = traffic_plot(run, args.out)
        if traffic is not None:
            written.append(traffic)
        if run["algorithm"] in ("mdgan", "flgan", "standalone"):
            try:
                written.append(grid_png(run["path"], args.grid,
                                        os.path.join(args.out, f"samples_{run['name']}.png")))
            except RunFileError as exc:  # a damaged generator: the tables stand without it
                print(f"mpi_gan.analyze: warning: no sample grid for {run['name']}: {exc}",
                      file=sys.stderr)
    with pd.option_context("display.width", 250, "display.max_columns", 40,
                           "display.float_format", "{:.4g}".format):
        print(table.to_string(index=False))
        print(groups.dropna(axis=1, how="all").to_string(index=False))
        if len(ratios):
            print(ratios.to_string(index=False))
        else:
            print("cost_ratios.csv: no rows (it needs an MD-GAN run with uncompressed "
                  "feedback and an FL-GAN run on the same data, split and batch size)")
    for line in where_lines(ranks):
        print(f"where: {line}")
    report = write_report(args.out, runs, table, groups, ratios, ranks)
    if args.tensorboard:
        tensorboard_export.export(runs, args.tensorboard, args.out)
        print(f"tensorboard: {len(runs)} runs in {args.tensorboard} "
              f"(see them with: tensorboard --logdir {args.tensorboard})")
    print(f"wrote {os.path.join(args.out, 'summary.csv')}, groups.csv, cost_ratios.csv, "
          f"ranks.csv and {len(written)} PNG files in {args.out}")
    print(f"report: {os.path.abspath(report)} (one self-contained page: open it in a browser)")
    for _, r in ratios.iterrows():
        tag = f"{r.dataset}_{r.split}".replace("-", "_").replace(":", "")
        print(f"mdgan_vs_flgan_worker_seconds_{tag}={r.seconds_ratio:.4g}")
        print(f"mdgan_vs_flgan_worker_flops_{tag}={r.flops_ratio:.4g}")
    print(f"groups={len(groups)}")
    print(f"runs={len(runs)}")
    return 0
