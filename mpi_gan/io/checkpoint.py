"""HDF5 checkpoints: written atomically by rank 0, validated before a resume.

File ``<out>/checkpoints/ckpt_<iteration:08d>.h5``:
  attrs: format, format_version, iteration, world_size, complete
  /config, /metrics, /traffic         as in the run file (runlog.write_common)
  /generator/model/<key>, /generator/adam/<i>/{step,exp_avg,exp_avg_sq}
  /discriminators/worker_<n>/model/..., /adam/...   the D held by worker n
  /rng/rank_<r>                       torch CPU RNG state of rank r (uint8)
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

import h5py
import numpy as np
import torch

from .atomic import atomic_h5
from ..config import Config, mismatched_fields
from .runlog import Metrics, read_table, read_traffic, write_common

FORMAT = "mpi-gan-mdgan-checkpoint"
FORMAT_VERSION = 1
_NAME = re.compile(r"ckpt_(\d{8})\.h5$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not match this run."""


@dataclass
class Checkpoint:
    path: str
    config: Config
    iteration: int
    world_size: int
    generator: dict[str, torch.Tensor]            # model/* and adam/* entries
    discriminators: dict[int, dict[str, torch.Tensor]]
    rng: dict[int, torch.Tensor]
    metrics: dict[str, np.ndarray]
    traffic_bytes: np.ndarray
    traffic_messages: np.ndarray


def checkpoint_path(out: str, iteration: int) -> str:
    return os.path.join(out, "checkpoints", f"ckpt_{iteration:08d}.h5")


def write_entries(group, entries: list[tuple[str, torch.Tensor]]) -> None:
    for name, tensor in entries:
        group.create_dataset(name, data=tensor.detach().cpu().numpy())


def read_entries(group) -> dict[str, torch.Tensor]:
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = torch.from_numpy(np.array(obj[()]))
    group.visititems(visit)
    return out


def write_checkpoint(path: str, cfg: Config, iteration: int, world_size: int,
                     generator: list[tuple[str, torch.Tensor]],
                     discriminators: dict[int, list[tuple[str, torch.Tensor]]],
                     rng: dict[int, torch.Tensor], metrics: Metrics,
                     traffic_bytes: np.ndarray, traffic_messages: np.ndarray) -> None:
    """Write one checkpoint atomically (temporary file, fsync, rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_h5(path) as f:
        f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION,
                        "iteration": iteration, "world_size": world_size})
        write_common(f, cfg, {"metrics": metrics}, traffic_bytes, traffic_messages)
        write_entries(f.create_group("generator"), generator)
        discs = f.create_group("discriminators")
        for n, entries in sorted(discriminators.items()):
            write_entries(discs.create_group(f"worker_{n}"), entries)
        rng_group = f.create_group("rng")
        for r, state in sorted(rng.items()):
            rng_group.create_dataset(f"rank_{r}", data=state.numpy())
        f.attrs["complete"] = 1  # last: a file without it is not a checkpoint


def read_checkpoint(path: str) -> Checkpoint:
    """Read and structurally check a checkpoint; CheckpointError if unusable."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT or int(f.attrs.get("complete", 0)) != 1:
                raise CheckpointError(f"{path} is not a complete mpi-gan MD-GAN checkpoint")
            if int(f.attrs["format_version"]) != FORMAT_VERSION:
                raise CheckpointError(f"{path}: unsupported checkpoint format version "
                                      f"{f.attrs['format_version']}")
            world = int(f.attrs["world_size"])
            discs = {int(name.split("_")[1]): read_entries(f["discriminators"][name])
                     for name in f["discriminators"]}
            if sorted(discs) != list(range(1, world)):
                raise CheckpointError(f"{path}: discriminators of workers {sorted(discs)} do not "
                                      f"match its world size {world}")
            traffic_bytes, traffic_messages = read_traffic(f)
            return Checkpoint(
                path=path, config=Config.from_attrs(f["config"].attrs),
                iteration=int(f.attrs["iteration"]), world_size=world,
                generator=read_entries(f["generator"]), discriminators=discs,
                rng={int(n.split("_")[1]): torch.from_numpy(f["rng"][n][()]) for n in f["rng"]},
                metrics=read_table(f), traffic_bytes=traffic_bytes,
                traffic_messages=traffic_messages)
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, IndexError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt or truncated ({exc})") \
            from exc


def list_checkpoints(run_dir: str) -> list[str]:
    """Checkpoint files of a run directory, oldest first."""
    paths = glob.glob(os.path.join(run_dir, "checkpoints", "ckpt_*.h5"))
    return sorted(p for p in paths if _NAME.search(p))


def resolve_resume(path: str, reader=None):
    """The checkpoint named by ``--resume``: a file, or a run directory's newest valid one.

    ``reader`` parses one file (default: MD-GAN's ``read_checkpoint``).
    """
    reader = reader or read_checkpoint
    if os.path.isdir(path):
        candidates = list_checkpoints(path)
        if not candidates:
            raise CheckpointError(f"--resume {path!r}: no checkpoints/ckpt_*.h5 in that directory")
        errors = []
        for candidate in reversed(candidates):
            try:
                return reader(candidate)
            except CheckpointError as exc:
                errors.append(str(exc))
        raise CheckpointError(f"--resume {path!r}: no valid checkpoint: " + "; ".join(errors))
    if not os.path.isfile(path):
        raise CheckpointError(f"--resume {path!r}: no such file or directory")
    return reader(path)


def check_compatible(ckpt, cfg, world_size: int) -> None:
    """CheckpointError unless ``ckpt`` can continue under ``cfg`` on ``world_size`` ranks."""
    if ckpt.world_size != world_size:
        raise CheckpointError(f"{ckpt.path} was written by {ckpt.world_size} ranks, this run has "
                              f"{world_size}: resume with mpiexec -n {ckpt.world_size}")
    diff = mismatched_fields(ckpt.config, cfg)
    if diff:
        details = ", ".join(f"--{d.replace('_', '-')} {getattr(ckpt.config, d)!r} in checkpoint "
                            f"vs {getattr(cfg, d)!r} now" for d in diff)
        raise CheckpointError(f"{ckpt.path} does not match this run: {details}")
    if ckpt.iteration >= cfg.iterations:
        raise CheckpointError(f"{ckpt.path} is at iteration {ckpt.iteration}, already >= "
                              f"--iterations {cfg.iterations}: raise --iterations to continue")


def check_out_is_free(out: str, resume_path: str | None) -> None:
    """CheckpointError if ``out`` already holds a run that this run would overwrite.

    Continuing the run that lives in ``out`` (resuming from one of its
    checkpoints) is allowed; anything else must choose another ``--out``.
    """
    existing = os.path.exists(os.path.join(out, "run.h5")) or bool(list_checkpoints(out))
    if not existing:
        return
    if resume_path is not None:
        ckpt_dir = os.path.realpath(os.path.dirname(resume_path))
        if ckpt_dir == os.path.realpath(os.path.join(out, "checkpoints")):
            return
    raise CheckpointError(f"--out {out!r} already holds a run (run.h5 or checkpoints/): "
                          f"choose another --out, or --resume {out} to continue it")


def load_resume(cfg, world_size: int, reader=None):
    """Rank 0 at start-up: the checkpoint to continue from (None for a fresh run), after
    checking that it fits this run and that ``--out`` holds no other run to overwrite."""
    ckpt = resolve_resume(cfg.resume, reader) if cfg.resume else None
    if ckpt is not None:
        check_compatible(ckpt, cfg, world_size)
    check_out_is_free(cfg.out, ckpt.path if ckpt else None)
    return ckpt


def prune_checkpoints(run_dir: str, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints of a run directory."""
    for path in list_checkpoints(run_dir)[:-keep]:
        os.unlink(path)
