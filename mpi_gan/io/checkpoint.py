"""HDF5 checkpoints, one format for every algorithm: written by rank 0, validated on resume.

File ``<out>/checkpoints/ckpt_<iteration:08d>.h5``:
  attrs: format, format_version, algorithm, iteration, world_size, complete
  every dataset chunked with a Fletcher-32 checksum (io/integrity.py; format version 3):
  ``read_checkpoint`` verifies all of them before a run resumes from the file
  /config, /metrics..., /traffic, /data   as in the run file (runlog.write_common)
  /state/rank_<r>/<name>                  rank r's full state as named tensors
                                          (io/state.py: model/, adam/, rng/, channel/, ...)
Rank 0 writes its own state, then receives and writes the workers' one by one,
so it never holds every worker's state at once. ``Checkpoint`` reads the small
parts eagerly and a rank's state only when asked (``rank_state``).
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
from dataclasses import dataclass

import h5py
import numpy as np
import torch

from . import integrity
from .atomic import atomic_h5
from .lock import ensure_held
from .runlog import RunRecord, read_table, read_traffic, write_common

FORMAT = "mpi-gan-checkpoint"
FORMAT_VERSION = 3
READABLE_VERSIONS = (2, 3)  # version 2: the same layout, written without checksums
_NAME = re.compile(r"ckpt_(\d{8})\.h5$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not match this run."""


@dataclass
class Checkpoint:
    path: str
    algorithm: str
    config: object
    iteration: int
    world_size: int
    tables: dict[str, dict[str, np.ndarray]]
    kinds: tuple[str, ...]
    traffic_bytes: np.ndarray
    traffic_messages: np.ndarray
    passed_over: tuple[str, ...] = ()  # why newer checkpoints were refused (resolve_resume)

    def rank_state(self, rank: int) -> dict[str, torch.Tensor]:
        """Rank ``rank``'s named tensors ({} if it had none)."""
        try:
            with h5py.File(self.path, "r") as f:
                group = f.get(f"state/rank_{rank}")
                return read_entries(group) if group is not None else {}
        except (OSError, KeyError, ValueError) as exc:
            raise CheckpointError(f"cannot read rank {rank}'s state from {self.path}: {exc}") \
                from exc


def checkpoint_path(out: str, iteration: int) -> str:
    return os.path.join(out, "checkpoints", f"ckpt_{iteration:08d}.h5")


def write_entries(group, entries) -> None:
    """Named tensors as checksummed datasets of ``group`` (names may contain '/')."""
    for name, tensor in entries:
        integrity.create(group, name, tensor.detach().cpu().numpy())


def read_entries(group) -> dict[str, torch.Tensor]:
    """The datasets under ``group`` as tensors, named by their paths below it."""
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name] = torch.from_numpy(np.array(integrity.read(obj)))
    group.visititems(visit)
    return out


def write_checkpoint(path: str, record: RunRecord, algorithm: str, iteration: int, states,
                     traffic, extras=None) -> None:
    """Write one checkpoint atomically (temporary file, fsync, rename); a full disk raises
    DiskFullError, the earlier checkpoints kept; LockLost (nothing written) if this process
    lost the run directory's lock.

    states: iterable of (rank, named tensors), consumed one at a time (a generator
    can receive each worker's state only when it is written); traffic: (bytes,
    messages) int64 (len(kinds), world, world), or a function returning them,
    called once every state is written.
    """
    ensure_held()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    run_dir = os.path.dirname(os.path.dirname(path))
    previous = [os.path.getsize(p) for p in list_checkpoints(run_dir)]
    with atomic_h5(path, size_hint=max(previous, default=0)) as f:
        f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION,
                        "algorithm": algorithm, "iteration": iteration,
                        "world_size": record.world_size})
        for rank, entries in states:
            write_entries(f.create_group(f"state/rank_{rank}"), entries)
        if callable(traffic):
            traffic = traffic()
        write_common(f, record, *traffic, extras)
        f.attrs["complete"] = 1  # last: a file without it is not a checkpoint
        integrity.seal(f)


def read_checkpoint(path: str, algorithm: str, config_class, table_paths,
                    optional_tables=()) -> Checkpoint:
    """Read and structurally check a checkpoint of ``algorithm``; CheckpointError if unusable.

    ``table_paths`` must be there; ``optional_tables`` are read if there (a checkpoint
    written before a table existed still resumes)."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT or int(f.attrs.get("complete", 0)) != 1:
                raise CheckpointError(f"{path} is not a complete mpi-gan checkpoint")
            version = int(f.attrs["format_version"])
            if version not in READABLE_VERSIONS:
                raise CheckpointError(f"{path}: unsupported checkpoint format version {version}")
            if f.attrs["algorithm"] != algorithm:
                raise CheckpointError(f"{path} is a checkpoint of {f.attrs['algorithm']}, "
                                      f"not of {algorithm}")
            world = int(f.attrs["world_size"])
            ranks = sorted(int(n.split("_")[1]) for n in f["state"])
            if not set(ranks) <= set(range(world)):
                raise CheckpointError(f"{path}: state of ranks {ranks} does not match its "
                                      f"world size {world}")
            if version >= 3:
                integrity.verify(f, path)
            kinds, traffic_bytes, traffic_messages = read_traffic(f)
            return Checkpoint(
                path=path, algorithm=algorithm, config=config_class.from_attrs(f["config"].attrs),
                iteration=int(f.attrs["iteration"]), world_size=world,
                tables={p: read_table(f, p) for p in (*table_paths, *optional_tables)
                        if p in table_paths or p in f}, kinds=kinds,
                traffic_bytes=traffic_bytes, traffic_messages=traffic_messages)
    except CheckpointError:
        raise
    except integrity.ChecksumError as exc:
        raise CheckpointError(f"checkpoint {exc}: refused (the file was damaged after it "
                              "was written)") \
            from exc
    except (OSError, KeyError, ValueError, IndexError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt or truncated ({exc})") \
            from exc


def checkpoint_iteration(path: str) -> int:
    """The iteration in a checkpoint file's name (``ckpt_<iteration:08d>.h5``)."""
    return int(_NAME.search(path).group(1))


def list_checkpoints(run_dir: str) -> list[str]:
    """Checkpoint files of a run directory, oldest first."""
    paths = glob.glob(os.path.join(run_dir, "checkpoints", "ckpt_*.h5"))
    return sorted(p for p in paths if _NAME.search(p))


def resolve_resume(path: str, reader):
    """The checkpoint named by ``--resume``: a file, or a run directory's newest valid one
    (its ``passed_over`` says why each newer one was refused: damaged, truncated).

    ``reader`` parses one file (``read_checkpoint`` bound to an algorithm).
    """
    if os.path.isdir(path):
        candidates = list_checkpoints(path)
        if not candidates:
            raise CheckpointError(f"--resume {path!r}: no checkpoints/ckpt_*.h5 in that directory")
        errors = []
        for candidate in reversed(candidates):
            try:
                ckpt = reader(candidate)
            except CheckpointError as exc:
                errors.append(str(exc))
                continue
            if errors:
                ckpt.passed_over = tuple(errors)
            return ckpt
        raise CheckpointError(f"--resume {path!r}: no valid checkpoint: " + "; ".join(errors))
    if not os.path.isfile(path):
        raise CheckpointError(f"--resume {path!r}: no such file or directory")
    return reader(path)


def mismatched_fields(stored, current) -> list[str]:
    """Names of math-relevant fields whose values differ between two configurations (the
    dataclass fields not in ``current.RESUMABLE``)."""
    return [f.name for f in dataclasses.fields(current) if f.name not in current.RESUMABLE
            and getattr(stored, f.name) != getattr(current, f.name)]


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


AUTO = "auto"


def run_file_progress(out: str) -> tuple[int, bool] | None:
    """(iteration, finished) of ``out``'s run.h5, None if there is none; CheckpointError
    if it cannot be read."""
    path = os.path.join(out, "run.h5")
    if not os.path.exists(path):
        return None
    try:
        with h5py.File(path, "r") as f:
            return int(f.attrs["iteration"]), bool(f.attrs["finished"])
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(f"cannot read the run file {path}: {exc}") from exc


def resolve_auto(cfg, reader):
    """``--resume auto``: ``--out``'s newest valid checkpoint if it holds an unfinished run,
    None (a fresh start) if it holds neither checkpoint nor progress; CheckpointError if
    its run is finished (the run file says so, or its checkpoint has reached
    ``--iterations``), and if its run file has progress but every checkpoint is gone
    (``--resume auto`` never replaces a run it cannot continue)."""
    progress = run_file_progress(cfg.out)
    if progress is not None and progress[1] and progress[0] >= cfg.iterations:
        raise CheckpointError(f"--resume auto: --out {cfg.out!r} holds a finished run "
                              f"(run.h5 finished at iteration {progress[0]}, --iterations "
                              f"{cfg.iterations}): nothing to do; raise --iterations to continue "
                              "it or choose another --out")
    if not list_checkpoints(cfg.out):
        if progress is not None and progress[0] > 0:
            raise CheckpointError(
                f"--resume auto: --out {cfg.out!r} holds a run at iteration {progress[0]} "
                f"({'finished' if progress[1] else 'unfinished'}) whose checkpoints are all "
                "gone, so it cannot be continued: choose another --out, or move its run.h5 "
                "away to start it over")
        return None
    ckpt = resolve_resume(cfg.out, reader)
    if ckpt.iteration >= cfg.iterations:
        raise CheckpointError(f"--resume auto: --out {cfg.out!r} holds a finished run "
                              f"({ckpt.path} is at iteration {ckpt.iteration}, --iterations "
                              f"{cfg.iterations}): nothing to do; raise --iterations to continue "
                              "it or choose another --out")
    return ckpt


def load_resume(cfg, world_size: int, reader):
    """Rank 0 at start-up: the checkpoint to continue from (None for a fresh run), after
    checking that it fits this run and that ``--out`` holds no other run to overwrite.

    ``--resume auto`` resumes ``--out``'s own run if it has one (``resolve_auto``); a
    ``run.h5`` with no checkpoint beside it (a run stopped before its first checkpoint)
    is then started again from scratch."""
    auto = cfg.resume == AUTO
    if auto:
        ckpt = resolve_auto(cfg, reader)
    else:
        ckpt = resolve_resume(cfg.resume, reader) if cfg.resume else None
    if ckpt is not None:
        check_compatible(ckpt, cfg, world_size)
    if not auto:
        check_out_is_free(cfg.out, ckpt.path if ckpt else None)
    remove_stale_temporaries(cfg.out)
    return ckpt


def remove_stale_temporaries(out: str) -> None:
    """Delete the temporary files (``*.h5.tmp-<pid>``) a writer killed mid-write left in
    ``out`` and ``out/checkpoints``: this run owns ``out``, nothing else writes there."""
    for pattern in ("*.h5.tmp-*", os.path.join("checkpoints", "*.h5.tmp-*")):
        for path in glob.glob(os.path.join(out, pattern)):
            os.unlink(path)


def prune_checkpoints(run_dir: str, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints of a run directory."""
    for path in list_checkpoints(run_dir)[:-keep]:
        os.unlink(path)
