"""PNG plots of runs (matplotlib, Agg backend: no display needed). Every figure is
FIGSIZE at DPI: 1200 x 900 pixels.

* ``scores_vs_<x>.png``: one panel per score, one line per run, against iterations,
  training wall seconds, or bytes rank 0 has sent and received;
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


def score_plots(runs: list[dict], out: str) -> list[str]:
    """scores_vs_iteration.png, scores_vs_wall_seconds.png, scores_vs_server_bytes.png
    (none if no run has scores)."""
    names = [n for n in SCORES if any(np.isfinite(r["scores"].get(n, [np.nan])).any()
                                      for r in runs if r["scores"].get(n) is not None)]
    if not names:
        return []
    paths = []
    for x, label in X_AXES.items():
        fig, axes = _grid(len(names))
        for ax, name in zip(axes, names):
            for run in runs:
                table = run["scores"]
                if name in table and len(table[name]) and np.isfinite(table[name]).any():
                    ax.plot(table[x], table[name], marker="o", label=run["name"])
            ax.set_xlabel(label)
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"scores against {label}")
        fig.tight_layout()
        paths.append(_save(fig, os.path.join(out, f"scores_vs_{x}.png")))
    return paths


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
    kinds = [k for i, k in enumerate(run["kinds"]) if run["bytes"][i].any()] or \
        list(run["kinds"][:1])
    fig, axes = _grid(len(kinds))
    for ax, kind in zip(axes, kinds):
        matrix = run["bytes"][run["kinds"].index(kind)]
        image = ax.imshow(matrix / 1e6, cmap="viridis")
        ax.set_title(f"{kind} (MB)")
        ax.set_xlabel("destination rank")
        ax.set_ylabel("source rank")
        ax.set_xticks(range(run["world"]))
        ax.set_yticks(range(run["world"]))
        fig.colorbar(image, ax=ax)
    fig.suptitle(f"{run['name']}: bytes per link and message kind")
    fig.tight_layout()
    return _save(fig, os.path.join(out, f"traffic_{run['name']}.png"))
