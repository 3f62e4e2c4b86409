"""TensorBoard event files of runs (``python -m mpi_gan.analyze RUN... --tensorboard DIR``),
one directory per run, ``DIR/<run>``, so that ``tensorboard --logdir DIR`` shows the runs
side by side, as it does PyTorch Lightning's. The HDF5 files stay the record: the export
is written from them and can be written again at any time (a run's earlier event files in
``DIR/<run>`` are replaced).

Per run, the global step being generator updates (ASGD: applied pushes):
  loss/d, loss/g                 D and G loss, mean over workers, every iteration
  score/<name>                   every evaluation (mnist_score, classifier_fid, modes, ...)
  time/wall_seconds              the training loop's wall time at each evaluation
  traffic/bytes_through_rank0    bytes rank 0 had sent and received at each evaluation
  traffic/<kind>_bytes           each message kind's total, at the run's last iteration
  samples                        the run's sample grid (``samples_<run>.png``), last iteration
  config                         every option, as a table (TEXT tab), and as hyperparameters
                                 with the last scores as their metrics (HPARAMS tab)
"""
from __future__ import annotations

import glob
import os
import warnings

import numpy as np
from PIL import Image

from ..metrics.evaluator import SCORES
from .summary import worker_means

EVENT_FILES = "events.out.tfevents.*"


class TensorBoardMissing(RuntimeError):
    """The tensorboard package is not installed."""


def writer_class():
    """torch's SummaryWriter (it needs the tensorboard package)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its own deprecation notices, not the user's
            from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise TensorBoardMissing("--tensorboard needs the tensorboard package: "
                                 "pip install tensorboard (or pip install -e '.[tensorboard]')"
                                 ) from exc
    return SummaryWriter


def plain(value):
    """A configuration value as TensorBoard's hyperparameters take it (bool, int, float or
    text)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return str(value)


def export_run(run: dict, directory: str, samples: str | None = None) -> str:
    """Write one run (``read_run``'s dict) into ``directory`` (its event files replaced);
    ``samples``: its sample grid PNG, if there is one. Returns ``directory``."""
    SummaryWriter = writer_class()
    os.makedirs(directory, exist_ok=True)
    for old in glob.glob(os.path.join(directory, EVENT_FILES)):
        os.unlink(old)
    writer = SummaryWriter(log_dir=directory)
    try:
        metrics = run["metrics"]
        steps = np.asarray(metrics.get("iteration", []), dtype=np.int64)
        for column, tag in (("d_loss", "loss/d"), ("g_loss", "loss/g")):
            if column not in metrics or not len(steps):
                continue
            for step, value in zip(steps, worker_means(metrics, column)):
                writer.add_scalar(tag, float(value), int(step))
        scores = run["scores"]
        last = {}
        for i, step in enumerate(np.asarray(scores.get("iteration", []), dtype=np.int64)):
            for name in SCORES:
                value = float(scores[name][i]) if name in scores else np.nan
                if np.isfinite(value):
                    writer.add_scalar(f"score/{name}", value, int(step))
                    last[name] = value
            writer.add_scalar("time/wall_seconds", float(scores["wall_seconds"][i]), int(step))
            writer.add_scalar("traffic/bytes_through_rank0", float(scores["server_bytes"][i]),
                              int(step))
        end = int(run["iteration"])
        for kind, total in zip(run["kinds"], run["traffic"].per_kind()):
            writer.add_scalar(f"traffic/{kind}_bytes", float(total), end)
        if samples and os.path.isfile(samples):
            with Image.open(samples) as image:
                writer.add_image("samples", np.asarray(image.convert("RGB")), end,
                                 dataformats="HWC")
        config = {k: plain(v) for k, v in sorted(run["config"].items())}
        writer.add_text("config", "| option | value |\n|---|---|\n" + "\n".join(
            f"| {k} | {v} |" for k, v in config.items()), end)
        writer.add_hparams(config, {f"hparam/{k}": v for k, v in last.items()} or
                           {"hparam/iterations": float(end)}, run_name=".")
    finally:
        writer.close()
    return directory


def export(runs: list[dict], out: str, samples_dir: str) -> list[str]:
    """Every run into ``out/<run name>`` (sample grids from ``samples_dir``, where analyze
    wrote them); returns the directories."""
    return [export_run(run, os.path.join(out, run["name"]),
                       os.path.join(samples_dir, f"samples_{run['name']}.png"))
            for run in runs]
