"""Reading run files and checkpoints: configuration, generator, tables, traffic, cost.

A run is given as a run file (``run.h5``), its directory, or a checkpoint
(``ckpt_<iteration>.h5``); all hold /config, /metrics, /traffic and /cost (a checkpoint
of format 5 its tables in row segments beside it, ``io/rows.py``), and
the generator (run files: /generator/model; checkpoints: rank 0's state).
Only HDF5 datasets are read (no pickle).
"""
from __future__ import annotations

import contextlib
import os

import h5py
import numpy as np
import torch

from ..algorithms import REGISTRY
from ..config import GanConfig
from ..data import spec_of
from ..io import integrity
from ..io.checkpoint import stored_tables
from ..io.runlog import EVENT_TABLES, read_traffic
from ..io.shards import ShardError
from ..models import make_generator

# run-file format attribute -> algorithm name (checkpoints store the name directly)
ALGORITHMS = {entry.run_format: name for name, entry in REGISTRY.items()}
# the run file's generator (the average with --g-ema); in a checkpoint the average if the
# run keeps one, else rank 0's G (FL-GAN and standalone: g/, MD-GAN: model/)
GENERATOR_GROUPS = ("generator/model", "state/rank_0/g_ema/model", "state/rank_0/g/model",
                    "state/rank_0/model")


class RunFileError(ValueError):
    """A path is not a readable run file, run directory or checkpoint."""


def resolve(path: str) -> str:
    """The HDF5 file of a run argument: a file as given, a directory's run.h5."""
    candidate = os.path.join(path, "run.h5") if os.path.isdir(path) else path
    if not os.path.isfile(candidate):
        raise RunFileError(f"{path}: no run file or checkpoint there")
    return candidate


def _open(path: str) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise RunFileError(f"{path} is not a readable HDF5 file: {exc}") from None


@contextlib.contextmanager
def _reading(path: str, what: str):
    """Turn an HDF5 read error while reading ``what`` of ``path`` (a failed checksum, a
    truncated file) into a one-line RunFileError."""
    try:
        yield
    except (OSError, KeyError) as exc:  # HDF5 says a damaged metadata block with KeyError
        if not isinstance(exc, OSError) and not integrity.is_checksum_failure(exc):
            raise
        unfinished = "did not finish" in str(exc)
        why = ("fails its checksum: the run file's last update did not finish (its job was "
               "stopped while writing it)" if unfinished else
               "fails its checksum: the file was damaged after it was written"
               if integrity.is_checksum_failure(exc) else f"cannot be read ({exc})")
        raise RunFileError(f"{path}: its {what} {why}") from None


def algorithm_of(f: h5py.File) -> str:
    if "algorithm" in f.attrs:
        return str(f.attrs["algorithm"])
    return ALGORITHMS.get(str(f.attrs.get("format", "")), "unknown")


def load_generator(path: str) -> tuple[torch.nn.Module, GanConfig]:
    """G (eval mode) and the run's configuration from a run file or a checkpoint."""
    with _open(path) as f:
        if "config" not in f:
            raise RunFileError(f"{path} has no /config: not an mpi-gan run file or checkpoint")
        with _reading(path, "configuration"):
            integrity.check_attrs(f["config"], path)
        cfg = GanConfig.from_attrs(f["config"].attrs)
        group = next((f[p] for p in GENERATOR_GROUPS if p in f), None)
        if group is None or algorithm_of(f) == "asgd":
            raise RunFileError(f"{path} holds no generator (algorithm {algorithm_of(f)})")
        with _reading(path, "generator"):
            state = {k: torch.from_numpy(np.array(integrity.read(v))) for k, v in group.items()}
    g = make_generator(cfg.model, cfg.latent_dim, cfg.seed, spec_of(cfg).shape)
    g.load_state_dict(state)
    return g.eval(), cfg


def load_trained_generator(path: str) -> tuple[torch.nn.Module, GanConfig, int]:
    """G (eval mode), the run's configuration and the iteration G was stored at, from a run
    file or a checkpoint; RunFileError, in one line, for what cannot be used: no generator,
    a damaged one, the untrained generator of iteration 0 (a run file before its first
    checkpoint), or one with non-finite parameters (a run that diverged)."""
    try:
        g, cfg = load_generator(path)
    except RunFileError as exc:
        if "its generator" in str(exc) and not os.path.basename(path).startswith("ckpt_"):
            raise RunFileError(f"{exc}; use one of the run's checkpoints "
                               "(checkpoints/ckpt_*.h5) instead") from None
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # a damaged generator
        raise RunFileError(f"{path}: cannot load its generator: {exc}") from None
    with _open(path) as f:
        iteration = int(f.attrs.get("iteration", 0))
    if iteration == 0:
        raise RunFileError(f"{path} holds the untrained generator of iteration 0 (its run has "
                           "written no checkpoint yet): nothing to use; try again after the "
                           "run's first checkpoint (--checkpoint-every)")
    bad = [name for name, value in g.state_dict().items()
           if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise RunFileError(f"{path}: the generator of iteration {iteration} has non-finite "
                           f"values (NaN or inf) in {bad[0]}{more}: its run diverged; use an "
                           "earlier checkpoint or train again with smaller learning rates")
    return g, cfg, iteration


def config_of(f: h5py.File) -> dict:
    """A run file's or checkpoint's configuration attributes, by name, as Python values
    (text decoded, numpy scalars as Python scalars), without the attributes' digest."""
    return {k: (v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v)
            for k, v in f["config"].attrs.items() if k != integrity.ATTRS_DIGEST}


def read_run(path: str) -> dict:
    """Everything the analysis uses from one run: name, algorithm, config attrs, iteration,
    finished, metrics and scores tables (column -> array), traffic (``kinds``, and
    ``traffic``: an ``io.traffic.Traffic`` of the links used, from either layout), cost
    datasets, and stored offline evaluations."""
    path = resolve(path)
    with _open(path) as f, _reading(path, "metrics, traffic or cost"):
        if "config" not in f or "traffic" not in f:
            raise RunFileError(f"{path} is not an mpi-gan run file or checkpoint")
        traffic = read_traffic(f)
        try:
            tables = stored_tables(path, f, ("metrics", "scores", *EVENT_TABLES))
        except ShardError as exc:
            raise RunFileError(str(exc)) from None
        run = {
            "path": path, "algorithm": algorithm_of(f),
            "name": os.path.basename(os.path.dirname(os.path.abspath(path)))
            if os.path.basename(path) == "run.h5" else os.path.splitext(os.path.basename(path))[0],
            "config": config_of(f),
            "iteration": int(f.attrs.get("iteration", 0)),
            "finished": int(f.attrs.get("finished", f.attrs.get("complete", 0))),
            "world": int(f.attrs["world_size"]),
            "metrics": tables.get("metrics", {}), "scores": tables.get("scores", {}),
            # events: workers lost, resumes on another world size, launches (absent from
            # files written before each table)
            **{name: tables.get(name, {}) for name in EVENT_TABLES},
            "kinds": traffic.kinds, "traffic": traffic,
            "cost": {k: integrity.read(f[f"cost/{k}"]) for k in f["cost"]} if "cost" in f else {},
            "evaluation": dict(f["evaluation"].attrs) if "evaluation" in f else {},
            # where each rank ran (absent from files written before /ranks)
            "ranks": {k: integrity.read(f[f"ranks/{k}"]) for k in f["ranks"]}
            if "ranks" in f else {},
        }
    return run
