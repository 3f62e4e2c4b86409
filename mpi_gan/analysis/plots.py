"""PNG plots of runs (matplotlib, Agg backend: no display needed). Every figure is
FIGSIZE at DPI: 1200 x 900 pixels.

* ``scores_vs_<x>.png``: one panel per score against iterations, training wall seconds,
  or bytes rank 0 has sent and received; one line per group of runs that differ only in
  their seed (mpi_gan/analysis/groups.py): the mean over its seeds at each evaluation
  iteration (x: the mean x there), a band from their min to their max, labelled
  ``<setting> (<n> seeds)``; a group of one run is a plain line labelled with its name;
* ``losses.png``: D and G losses (mean over workers) against iterations;
* ``traffic_<run>.png``: a source x destination heatmap of bytes per message kind.
"""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import numpy as np  # noqa: E402

from ..metrics.evaluator import SCORES  # noqa: E402
from .groups import group_runs, setting_labels  # noqa: E402

FIGSIZE, DPI = (12, 9), 100
X_AXES = {"iteration": "generator updates", "wall_seconds": "training wall time (s)",
          "server_bytes": "bytes through rank 0"}


def _save(fig, path: str) -> str:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _grid(count: int):
    cols = 2 if count > 1 else 1
    rows = (count + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=FIGSIZE, dpi=DPI, squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def seed_curve(group: list[dict], name: str, x: str) -> tuple[np.ndarray, ...]:
    """(x, mean, min, max) of score ``name`` over a group's runs at the evaluation
    iterations every run has a finite value at, x the mean of the runs' ``x`` there."""
    tables = [run["scores"] for run in group]
    common = None
    for table in tables:
        values = np.asarray(table.get(name, []), dtype=np.float64)
        done = set(np.asarray(table["iteration"])[np.isfinite(values)].tolist()) \
            if len(values) else set()
        common = done if common is None else common & done
    iterations = np.array(sorted(common or ()), dtype=np.int64)
    if not len(iterations):
        return (np.empty(0),) * 4
    xs, ys = (np.empty((len(tables), len(iterations))) for _ in range(2))
    for i, table in enumerate(tables):
        row = {int(it): j for j, it in enumerate(table["iteration"])}
        at = [row[int(it)] for it in iterations]
        xs[i] = np.asarray(table[x], dtype=np.float64)[at]
        ys[i] = np.asarray(table[name], dtype=np.float64)[at]
    return xs.mean(axis=0), ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0)


def score_figure(groups: list[list[dict]], names: list[str], x: str):
    """The figure of ``scores_vs_<x>.png`` (not saved): one panel per score in ``names``,
    one line (and band, for several seeds) per group."""
    labels = setting_labels(groups)
    fig, axes = _grid(len(names))
    for ax, name in zip(axes, names):
        for group, setting in zip(groups, labels):
            xs, mean, low, high = seed_curve(group, name, x)
            if not len(xs):
                continue
            if len(group) == 1:
                ax.plot(xs, mean, marker="o", label=group[0]["name"])
                continue
            line, = ax.plot(xs, mean, marker="o", label=f"{setting} ({len(group)} seeds)")
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel(X_AXES[x])
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"scores against {X_AXES[x]}")
    fig.tight_layout()
    return fig


def score_plots(runs: list[dict], out: str) -> list[str]:
    """scores_vs_iteration.png, scores_vs_wall_seconds.png, scores_vs_server_bytes.png
    (none if no run has scores); runs are grouped by ``groups.group_runs``."""
    names = [n for n in SCORES if any(np.isfinite(r["scores"].get(n, [np.nan])).any()
                                      for r in runs if r["scores"].get(n) is not None)]
    if not names:
        return []
    groups = group_runs(runs)
    return [_save(score_figure(groups, names, x), os.path.join(out, f"scores_vs_{x}.png"))
            for x in X_AXES]


def loss_plot(runs: list[dict], out: str) -> str:
    """losses.png: mean D loss and mean G loss against iterations."""
    fig, axes = _grid(2)
    for run in runs:
        table = run["metrics"]
        if "d_loss" not in table or not len(table["iteration"]):
            continue
        for ax, column in zip(axes, ("d_loss", "g_loss")):
            values = table[column].reshape(len(table["iteration"]), -1).mean(axis=1)
            ax.plot(table["iteration"], values, label=run["name"], linewidth=0.8)
    for ax, column in zip(axes, ("D loss", "G loss")):
        ax.set_xlabel("generator updates")
        ax.set_ylabel(f"{column} (mean over workers)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, os.path.join(out, "losses.png"))


def traffic_plot(run: dict, out: str) -> str:
    """traffic_<run>.png: bytes per (source, destination), one panel per message kind."""
    traffic = run["traffic"]
    kinds = [k for k, total in zip(run["kinds"], traffic.per_kind()) if total] or \
        list(run["kinds"][:1])
    fig, axes = _grid(len(kinds))
    for ax, kind in zip(axes, kinds):
        image = ax.imshow(traffic.matrix(kind) / 1e6, cmap="viridis")
        ax.set_title(f"{kind} (MB)")
        ax.set_xlabel("destination rank")
        ax.set_ylabel("source rank")
        if traffic.world <= 32:  # a tick per rank while they can be read
            ax.set_xticks(range(traffic.world))
            ax.set_yticks(range(traffic.world))
        fig.colorbar(image, ax=ax)
    fig.suptitle(f"{run['name']}: bytes per link and message kind")
    fig.tight_layout()
    return _save(fig, os.path.join(out, f"traffic_{run['name']}.png"))
