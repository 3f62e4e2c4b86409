"""The summary table of runs (one row each) and the MD-GAN / FL-GAN worker-cost ratios.

Columns: run, algorithm, dataset, split, model, workers, k and compress (MD-GAN: its
feedback compressor), batch_size, iterations, finished, the final score of each kind (last evaluation during training,
or the stored offline evaluation when there is none), inception_preprocessing (beside the
Inception scores, in the rows that have them: how their images were resized and scaled,
``metrics/inception_input.py``; ``legacy`` for files written before the choice existed),
wall_seconds (training loop),
seconds_per_iteration_per_worker and flops_per_iteration_per_worker (mean over the ranks that
train: the workers, or the one standalone process), server_bytes_sent,
bytes_sent_per_worker (mean over workers), and bytes_<kind> (all links) per message kind.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..metrics.evaluator import SCORES
from ..metrics.choices import LEGACY

INCEPTION_SCORES = ("inception_fid", "inception_score")


def _trainers(run: dict) -> list[int]:
    """The ranks whose cost is the per-worker cost (standalone: its only rank)."""
    return [0] if run["world"] == 1 else list(range(1, run["world"]))


def summary_row(run: dict) -> dict:
    cfg, cost, traffic = run["config"], run["cost"], run["traffic"]
    sent = np.zeros(traffic.world, dtype=np.int64)  # bytes each rank sent, all kinds
    np.add.at(sent, traffic.column("source"), traffic.column("bytes"))
    row = {"run": run["name"], "algorithm": run["algorithm"], "dataset": cfg.get("dataset"),
           "split": cfg.get("split"), "model": cfg.get("model"),
           "workers": max(run["world"] - 1, 1), "k": cfg.get("k", np.nan) if
           run["algorithm"] == "mdgan" else np.nan,
           "compress": cfg.get("compress", "none") if run["algorithm"] == "mdgan" else "",
           "batch_size": cfg.get("batch_size"),
           "iterations": run["iteration"], "finished": run["finished"]}
    for name in SCORES:
        column = run["scores"].get(name)
        value = column[-1] if column is not None and len(column) else np.nan
        row[name] = run["evaluation"].get(name, np.nan) if np.isnan(value) else value
    if any(np.isfinite(row[name]) for name in INCEPTION_SCORES):
        row["inception_preprocessing"] = inception_preprocessing(run)
    ranks = _trainers(run)
    steps = cost.get("steps")
    if steps is not None and steps[ranks].min() > 0:
        row["wall_seconds"] = float(cost["wall_seconds"])
        row["seconds_per_iteration_per_worker"] = float(np.mean(
            cost["compute_seconds"][ranks] / steps[ranks]))
        row["flops_per_iteration_per_worker"] = float(np.mean(cost["flops_per_step"][ranks]))
    row["server_bytes_sent"] = int(sent[0])
    row["bytes_sent_per_worker"] = float(sent[1:run["world"]].mean()) if run["world"] > 1 else 0.0
    for kind, total in zip(run["kinds"], traffic.per_kind()):
        row[f"bytes_{kind}"] = int(total)
    return row


def worker_means(metrics: dict, column: str) -> np.ndarray:
    """float64 (rows,): a per-worker loss column of a run's metrics table (``d_loss``,
    ``g_loss``: (rows, workers)) averaged over the workers of each row, NaN (a worker that
    did not exist yet: a run resumed on more workers) left out."""
    values = np.asarray(metrics[column], dtype=np.float64).reshape(len(metrics["iteration"]),
                                                                  -1)
    with warnings.catch_warnings():  # a row of NaN only: NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=1)


def summary_table(runs: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame([summary_row(r) for r in runs])
    if "inception_preprocessing" in table:  # beside the Inception scores
        columns = [c for c in table.columns if c != "inception_preprocessing"]
        at = columns.index(INCEPTION_SCORES[-1]) + 1
        table = table[columns[:at] + ["inception_preprocessing"] + columns[at:]]
    return table


def has_training_scores(run: dict, names=INCEPTION_SCORES) -> bool:
    """Whether the run's scores table (scores during training) has a value of one of the
    scores ``names`` (by default the Inception scores)."""
    scores = run.get("scores") or {}  # ASGD runs have none
    return any(scores.get(name) is not None and np.isfinite(
        np.asarray(scores[name], dtype=np.float64)).any() for name in names)


def inception_preprocessing(run: dict) -> str | None:
    """How a run's Inception scores prepared their images (``metrics/inception_input.py``):
    its configuration's choice for scores of training (``LEGACY`` for a file written before
    the choice existed), the stored offline evaluation's for scores taken from it (the
    summary takes those only where training has none); None without Inception scores."""
    if has_training_scores(run):
        return run["config"].get("inception_preprocessing", LEGACY)
    evaluation = run.get("evaluation") or {}
    if any(name in evaluation for name in INCEPTION_SCORES):
        return evaluation.get("inception_preprocessing", LEGACY)
    return None


RATIO_COLUMNS = ["dataset", "split", "batch_size", "mdgan_runs", "flgan_runs", "seconds_ratio",
                 "flops_ratio"]


def cost_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """MD-GAN worker cost / FL-GAN worker cost for each (dataset, split, batch_size) that has
    both: the mean over every MD-GAN run with uncompressed feedback (any k, any seed) over
    the mean over every FL-GAN run, of seconds and of FLOPs per iteration; the runs used
    are listed (space-separated). With nothing to compare, a table of no rows that still
    has its columns (``RATIO_COLUMNS``)."""
    rows = []
    if "seconds_per_iteration_per_worker" not in table:
        return pd.DataFrame(rows, columns=RATIO_COLUMNS)
    for key, group in table.groupby(["dataset", "split", "batch_size"]):
        md = group[(group.algorithm == "mdgan") & (group.get("compress", "none") == "none")]
        fl = group[group.algorithm == "flgan"]
        md, fl = (runs.dropna(subset=["seconds_per_iteration_per_worker"]) for runs in (md, fl))
        if len(md) and len(fl):
            rows.append({"dataset": key[0], "split": key[1], "batch_size": key[2],
                         "mdgan_runs": " ".join(md.run), "flgan_runs": " ".join(fl.run),
                         "seconds_ratio": md.seconds_per_iteration_per_worker.mean() /
                         fl.seconds_per_iteration_per_worker.mean(),
                         "flops_ratio": md.flops_per_iteration_per_worker.mean() /
                         fl.flops_per_iteration_per_worker.mean()})
    return pd.DataFrame(rows, columns=RATIO_COLUMNS)
