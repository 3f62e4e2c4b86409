"""The figures of ``python -m mpi_gan.analyze``, each as PNG and SVG (matplotlib, Agg
backend: no display needed), in one style (``STYLE``).

* ``scores_vs_<x>.png``: one panel per score against generator updates, training wall
  time, or bytes rank 0 has sent and received; each y axis names its score and which way
  is better. One line per group of runs that differ only in their seed
  (mpi_gan/analysis/groups.py): a marker at each evaluation, the mean over its seeds
  (x: the mean x there), dashed between evaluations (nothing was measured there), a band
  from their min to their max, labelled ``<setting> (<n> seeds)``; a group of one run is
  labelled with its name. 1200 x 900 pixels.
* ``losses.png``: D and G losses (mean over workers) against generator updates.
* ``traffic_<run>.png``: a source x destination heatmap of bytes per link, one panel per
  message kind (three to a row), each in its own unit (B, kB, MB, GB); a tick per rank up
  to 10 ranks, about 8 beyond. None for a run of one process (it has no links).
"""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import numpy as np  # noqa: E402
from matplotlib.ticker import EngFormatter, MaxNLocator  # noqa: E402

from ..metrics.evaluator import SCORES  # noqa: E402
from .groups import group_runs, setting_labels  # noqa: E402
from .summary import (INCEPTION_SCORES, has_training_scores,  # noqa: E402
                      inception_preprocessing, worker_means)

FIGSIZE, DPI = (12, 9), 100
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 9,
         "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
         "axes.spines.right": False, "figure.facecolor": "white",
         "savefig.facecolor": "white", "axes.prop_cycle": plt.cycler(
             color=plt.get_cmap("tab10").colors)}
X_AXES = {"iteration": "generator updates", "wall_seconds": "training wall time (s)",
          "server_bytes": "bytes through rank 0"}
# what each score is called on an axis, and which way is better
SCORE_AXES = {"mnist_score": ("MNIST score", "higher is better"),
              "classifier_fid": ("classifier FID", "lower is better"),
              "inception_fid": ("Inception FID", "lower is better"),
              "inception_score": ("Inception Score", "higher is better"),
              "modes": ("modes covered", "higher is better"),
              "high_quality": ("high-quality samples (share)", "higher is better"),
              "mode_kl": ("mode KL divergence (nats)", "lower is better")}
UNITS = ((1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1, "B"))
TICK_EVERY_RANK = 10  # heatmaps: a labelled tick per rank up to this many, 8 or so beyond


def _save(fig, path: str) -> str:
    """``path`` (a .png) and the same figure as .svg beside it; returns ``path``."""
    fig.savefig(path, dpi=DPI)
    fig.savefig(os.path.splitext(path)[0] + ".svg")
    plt.close(fig)
    return path


def _grid(count: int, figsize=FIGSIZE):
    cols = 2 if count > 1 else 1
    rows = (count + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=figsize, dpi=DPI, squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def score_axis(name: str, preprocessing: str = "") -> str:
    """A score's axis label: ``MNIST score (higher is better)``; an Inception score's says
    its ``preprocessing``: ``Inception FID, tensorflow input (lower is better)``."""
    label, better = SCORE_AXES.get(name, (name, ""))
    if preprocessing:
        label = f"{label}, {preprocessing} input"
    return f"{label} ({better})" if better else label


def _preprocessing(groups: list[list[dict]], name: str) -> str:
    """The Inception preprocessing of the runs plotted for an Inception score ('' for the
    others; 'mixed' when they differ: the summary table says which run used which)."""
    if name not in INCEPTION_SCORES:
        return ""
    found = {inception_preprocessing(run) for group in groups for run in group
             if has_training_scores(run, (name,))}
    return found.pop() if len(found) == 1 else "mixed"


def unit_of(largest: float) -> tuple[float, str]:
    """(divisor, unit) that shows byte counts up to ``largest`` in numbers below 1000."""
    return next(((d, u) for d, u in UNITS if largest >= d), UNITS[-1])


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
    one curve (and band, for several seeds) per group."""
    labels = setting_labels(groups)
    with plt.rc_context(STYLE):
        fig, axes = _grid(len(names))
        for ax, name in zip(axes, names):
            for group, setting in zip(groups, labels):
                xs, mean, low, high = seed_curve(group, name, x)
                if not len(xs):
                    continue
                label = group[0]["name"] if len(group) == 1 else \
                    f"{setting} ({len(group)} seeds)"
                line, = ax.plot(xs, mean, marker="o", linestyle="--", linewidth=1,
                                label=label)
                if len(group) > 1:
                    ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2,
                                    linewidth=0)
            ax.set_xlabel(X_AXES[x])
            ax.set_ylabel(score_axis(name, _preprocessing(groups, name)))
            if x == "server_bytes":  # 500 MB, 1 GB: no 1e9 offset to decode
                ax.xaxis.set_major_formatter(EngFormatter(unit="B"))
            elif x == "iteration":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0].legend()
        fig.suptitle(f"scores against {X_AXES[x]} (markers: evaluations)")
        fig.tight_layout()
    return fig


def score_plots(runs: list[dict], out: str) -> list[str]:
    """scores_vs_iteration.png, scores_vs_wall_seconds.png, scores_vs_server_bytes.png
    (and their .svg; none if no run has scores); runs grouped by ``groups.group_runs``."""
    names = [n for n in SCORES if any(np.isfinite(r["scores"].get(n, [np.nan])).any()
                                      for r in runs if r["scores"].get(n) is not None)]
    if not names:
        return []
    groups = group_runs(runs)
    return [_save(score_figure(groups, names, x), os.path.join(out, f"scores_vs_{x}.png"))
            for x in X_AXES]


def loss_plot(runs: list[dict], out: str) -> str:
    """losses.png (and .svg): mean D loss and mean G loss against generator updates."""
    with plt.rc_context(STYLE):
        fig, axes = _grid(2, figsize=(12, 5))
        for run in runs:
            table = run["metrics"]
            if "d_loss" not in table or not len(table["iteration"]):
                continue
            for ax, column in zip(axes, ("d_loss", "g_loss")):
                ax.plot(table["iteration"], worker_means(table, column), label=run["name"],
                        linewidth=0.8)
        for ax, column in zip(axes, ("D loss", "G loss")):
            ax.set_xlabel("generator updates")
            ax.set_ylabel(f"{column}, mean over workers (nats)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0].legend()
        fig.suptitle("losses against generator updates")
        fig.tight_layout()
    return _save(fig, os.path.join(out, "losses.png"))


def traffic_plot(run: dict, out: str) -> str | None:
    """traffic_<run>.png (and .svg): bytes per (source, destination), one panel per
    message kind that moved bytes; None for a run of one process."""
    traffic = run["traffic"]
    if traffic.world < 2:
        return None
    kinds = [k for k, total in zip(run["kinds"], traffic.per_kind()) if total] or \
        list(run["kinds"][:1])
    with plt.rc_context({**STYLE, "axes.grid": False}):
        cols = min(len(kinds), 3)
        rows = -(-len(kinds) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols + 0.6, 4.2 * rows + 0.6),
                                 dpi=DPI, squeeze=False)
        for ax in axes.flat[len(kinds):]:
            ax.set_visible(False)
        for ax, kind in zip(axes.flat, kinds):
            matrix = traffic.matrix(kind).astype(np.float64)
            divisor, unit = unit_of(matrix.max())
            image = ax.imshow(matrix / divisor, cmap="viridis", interpolation="nearest")
            ax.set_title(kind)
            ax.set_xlabel("destination rank")
            ax.set_ylabel("source rank")
            if traffic.world <= TICK_EVERY_RANK:  # a tick per rank while the labels fit
                ax.set_xticks(range(traffic.world))
                ax.set_yticks(range(traffic.world))
            else:
                for axis in (ax.xaxis, ax.yaxis):
                    axis.set_major_locator(MaxNLocator(nbins=8, integer=True))
            bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
            bar.set_label(f"{unit} per link")
        fig.suptitle(f"{run['name']}: bytes per link and message kind "
                     f"({traffic.world} ranks)")
        fig.tight_layout()
    return _save(fig, os.path.join(out, f"traffic_{run['name']}.png"))
