"""HDF5 checkpoints, one format for every algorithm: each rank's state in its own shard,
written in parallel, and a manifest written last by rank 0; validated on resume.

The manifest ``<out>/checkpoints/ckpt_<iteration:08d>.h5`` (format version 5):
  attrs: format, format_version, algorithm, iteration, world_size, complete
  every dataset chunked with a Fletcher-32 checksum (io/integrity.py):
  ``read_checkpoint`` verifies all of them before a run resumes from the file
  /config, /traffic, /data, /cost         as in the run file (runlog.write_common)
  /rows/...                               the segment files holding the metric tables'
                                          rows (io/rows.py), with their sizes and digests,
                                          and each table's length
  /shards/{rank,bytes,blake2b}            each shard's world rank, size and digest;
                                          attribute ``directory``: where the shards are
  /state/rank_<r>                         external link to rank r's shard's /state: its full
                                          state as named tensors (io/state.py: model/,
                                          adam/, rng/, channel/, ...)
The shards are ``io/shards.py``'s. A checkpoint is complete only once its manifest
exists, and usable only if every shard it lists has its size and digest: a rank killed
while writing its shard leaves no manifest, and the previous checkpoint is the newest.
Rank 0 holds and writes only its own state, the manifest and the rows its tables gained
since the last checkpoint, whatever the world size.

Formats 2, 3 and 4 stay readable: 4 has the shards but the whole tables inside the
manifest (/metrics, /scores, ...); 2 and 3 are one file written by rank 0, with
``/state/rank_<r>`` groups inside it (2 without checksums). ``Checkpoint`` reads the small parts eagerly and a
rank's state only when asked (``rank_state``, ``source``).
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

from . import integrity, rows, shards
from .atomic import atomic_h5
from .lock import ensure_held
from .runlog import RunRecord, read_table, read_traffic, write_common
from .shards import ShardError, ShardRecord, read_entries, write_entries  # noqa: F401
from .traffic import Traffic

FORMAT = "mpi-gan-checkpoint"
FORMAT_VERSION = 5
# 2 and 3: every rank's state inside the one file (2: written without checksums); 4:
# whole tables inside the manifest
READABLE_VERSIONS = (2, 3, 4, 5)
SHARDED = 4  # the first version whose states are in shards
ROW_SEGMENTS = 5  # the first version whose tables are in row segments
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
    traffic: Traffic
    passed_over: tuple[str, ...] = ()  # why newer checkpoints were refused (resolve_resume)
    version: int = FORMAT_VERSION
    shard_directory: str = ""  # the shards' directory (format 4), relative to the manifest
    shards: dict[int, ShardRecord] = dataclasses.field(default_factory=dict)
    segments: list = dataclasses.field(default_factory=list)  # its row segments (format 5)

    def ranks(self) -> list[int]:
        """The world ranks whose state the checkpoint holds."""
        if self.version >= SHARDED:
            return sorted(self.shards)
        with h5py.File(self.path, "r") as f:
            return sorted(int(n.split("_")[1]) for n in f["state"])

    def source(self, rank: int) -> "StateSource | None":
        """Where rank ``rank``'s state lies (None if the checkpoint holds none)."""
        if self.version < SHARDED:
            return StateSource(self.path, f"state/rank_{rank}", None) \
                if rank in self.ranks() else None
        record = self.shards.get(rank)
        if record is None:
            return None
        return StateSource(shard_path(self.path, self.shard_directory, rank), "state", record)

    def rank_state(self, rank: int) -> dict[str, torch.Tensor]:
        """Rank ``rank``'s named tensors ({} if it had none), its shard verified first."""
        source = self.source(rank)
        if source is None:
            return {}
        source.verify(self.path)
        return source.read()


def shard_path(manifest: str, directory: str, rank: int) -> str:
    """Rank ``rank``'s shard of the manifest ``manifest`` whose shards are in ``directory``."""
    return os.path.join(os.path.dirname(manifest), directory, shards.shard_name(rank))


@dataclass(frozen=True)
class StateSource:
    """Where one rank's state of a checkpoint lies: the HDF5 file ``path`` and the group
    ``group`` in it; ``record``: what the manifest says of the file (a shard), None for
    the single file of formats 2 and 3 (``read_checkpoint`` verified all of it)."""

    path: str
    group: str
    record: ShardRecord | None
    whole: bool = True  # False: a new worker's copy of another's (train/elastic.py)

    def verify(self, manifest: str) -> None:
        """CheckpointError unless the shard is there, whole and as its manifest says."""
        if self.record is not None:
            try:
                shards.verify(self.path, self.record, manifest)
            except ShardError as exc:
                raise CheckpointError(str(exc)) from None

    def read(self) -> dict[str, torch.Tensor]:
        """The state's named tensors (each dataset's checksum checked)."""
        try:
            with h5py.File(self.path, "r") as f:
                return read_entries(f[self.group])
        except integrity.ChecksumError as exc:
            raise CheckpointError(f"checkpoint {exc}: refused") from exc
        except (OSError, KeyError, ValueError) as exc:
            raise CheckpointError(f"cannot read the state in {self.path}: {exc}") from exc


def checkpoint_path(out: str, iteration: int) -> str:
    return os.path.join(out, "checkpoints", f"ckpt_{iteration:08d}.h5")


def write_checkpoint(path: str, record: RunRecord, algorithm: str, iteration: int,
                     directory: str, records: list[ShardRecord], traffic, extras=None) -> None:
    """Write a checkpoint's manifest atomically (temporary file, fsync, rename), once every
    rank's shard is in ``directory`` (relative to ``path``); a full disk raises
    DiskFullError, the earlier checkpoints kept; LockLost (nothing written) if this process
    lost the run directory's lock. The shard directories of an earlier checkpoint of the
    same iteration that this one replaces go with the next ``prune_checkpoints``.

    First the tables' new rows go into the row segment named ``directory`` (io/rows.py);
    once the manifest names it, ``record.segments`` is the manifest's list and the tables
    are marked as held by it. records: each shard's record; traffic: the run's counters.
    """
    ensure_held()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    segments = rows.write_segment(os.path.dirname(path), directory, record.tables,
                                  record.segments)
    with atomic_h5(path) as f:
        f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION,
                        "algorithm": algorithm, "iteration": iteration,
                        "world_size": record.world_size})
        shards.write_table(f, directory, records)
        rows.write_index(f, segments, record.tables)
        write_common(f, record, traffic, extras, tables=False)
        f.attrs["complete"] = 1  # last: a file without it is not a checkpoint
        integrity.seal(f)
    record.segments = segments
    rows.mark_written(record.tables)


def write_local_checkpoint(path: str, record: RunRecord, algorithm: str, iteration: int,
                           states, traffic, extras=None, token: int = 0) -> None:
    """A whole checkpoint written by this one process (single-process tools and tests):
    each (rank, named tensors) of ``states`` into its shard, then the manifest; ``token``
    names the shard directory (``shards.directory_name``)."""
    directory = shards.directory_name(iteration, token)
    where = os.path.join(os.path.dirname(path), directory)
    records = [shards.write_shard(where, rank, iteration, algorithm, entries)
               for rank, entries in states]
    write_checkpoint(path, record, algorithm, iteration, directory, records, traffic, extras)


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
            if version >= 3:
                integrity.verify(f, path)  # the manifest's own datasets (links not followed)
            directory, records = shards.read_table(f) if version >= SHARDED else ("", {})
            ranks = sorted(records) if version >= SHARDED else \
                sorted(int(n.split("_")[1]) for n in f["state"])
            if not set(ranks) <= set(range(world)):
                raise CheckpointError(f"{path}: state of ranks {ranks} does not match its "
                                      f"world size {world}")
            for rank, record in records.items():  # cheap: each rank verifies its own shard
                shards.check_size(shard_path(path, directory, rank), record, path)
            traffic = read_traffic(f)
            stored = stored_tables(path, f, (*table_paths, *optional_tables))
            missing = [p for p in table_paths if p not in stored]
            if missing:
                raise CheckpointError(f"{path} lacks the table(s) {missing}")
            return Checkpoint(
                path=path, algorithm=algorithm, config=config_class.from_attrs(f["config"].attrs),
                iteration=int(f.attrs["iteration"]), world_size=world,
                tables={p: stored[p] for p in (*table_paths, *optional_tables) if p in stored},
                kinds=traffic.kinds, traffic=traffic, version=version,
                shard_directory=directory, shards=records,
                segments=rows.read_index(f)[0] if version >= ROW_SEGMENTS else [])
    except CheckpointError:
        raise
    except ShardError as exc:
        raise CheckpointError(str(exc)) from exc
    except integrity.ChecksumError as exc:
        raise CheckpointError(f"checkpoint {exc}: refused (the file was damaged after it "
                              "was written)") \
            from exc
    except (OSError, KeyError, ValueError, IndexError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt or truncated ({exc})") \
            from exc


def stored_tables(path: str, f, paths) -> dict[str, dict[str, np.ndarray]]:
    """Those of the metric tables ``paths`` that the open checkpoint ``f`` (at ``path``)
    holds, table path -> column -> array, verified: from its row segments (format 5), or
    from the manifest itself (older formats)."""
    if int(f.attrs.get("format_version", 0)) >= ROW_SEGMENTS:
        return {p: t for p, t in rows.read_tables(path, f).items() if p in paths}
    return {p: read_table(f, p) for p in paths if p in f}


def checkpoint_iteration(path: str) -> int:
    """The iteration in a checkpoint file's name (``ckpt_<iteration:08d>.h5``)."""
    return int(_NAME.search(path).group(1))


def list_checkpoints(run_dir: str) -> list[str]:
    """Checkpoint files of a run directory, oldest first."""
    paths = glob.glob(os.path.join(run_dir, "checkpoints", "ckpt_*.h5"))
    return sorted(p for p in paths if _NAME.search(p))


def named_directories(run_dir: str) -> tuple[set[str], set[str], set[int] | None]:
    """(the shard directories and the row segments that the HDF5 files in
    ``run_dir/checkpoints`` name, whatever a file is called: a manifest a user renamed keeps
    its shards and rows; the iterations of the ``ckpt_<iteration>.h5`` files that cannot be
    read, whose directories must be kept, or None if a file of another name cannot be
    read: then nothing may be removed)."""
    named, segments, unreadable = set(), set(), set()
    for path in glob.glob(os.path.join(run_dir, "checkpoints", "*.h5")):
        try:
            with h5py.File(path, "r") as f:
                if "shards" in f:
                    named.add(str(f["shards"].attrs["directory"]))
                segments |= rows.named(f)
        except (OSError, KeyError, ValueError):
            if not _NAME.search(path):
                return named, segments, None
            unreadable.add(checkpoint_iteration(path))
    return named, segments, unreadable


def remove_unnamed(run_dir: str) -> None:
    """Delete the shard directories and row segments of ``run_dir`` that no manifest
    names (every segment stays while a manifest cannot be read: it may name any)."""
    directories, segments, unreadable = named_directories(run_dir)
    shards.remove_orphans(run_dir, directories, unreadable)
    if unreadable == set():
        rows.remove_orphans(run_dir, segments)


def resolve_resume(path: str, reader, refused: dict[str, str] | None = None):
    """The checkpoint named by ``--resume``: a file, or a run directory's newest valid one
    (its ``passed_over`` says why each newer one was refused: damaged, truncated).

    ``reader`` parses one file (``read_checkpoint`` bound to an algorithm); ``refused``:
    checkpoints already found unusable (path -> why: a shard failed its checksum), passed
    over in a directory and an error when named.
    """
    refused = refused or {}
    if os.path.isdir(path):
        candidates = list_checkpoints(path)
        if not candidates:
            raise CheckpointError(f"--resume {path!r}: no checkpoints/ckpt_*.h5 in that directory")
        errors = []
        for candidate in reversed(candidates):
            if candidate in refused:
                errors.append(refused[candidate])
                continue
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
    if path in refused:
        raise CheckpointError(refused[path])
    return reader(path)


def mismatched_fields(stored, current) -> list[str]:
    """Names of math-relevant fields whose values differ between two configurations (the
    dataclass fields not in ``current.RESUMABLE``)."""
    return [f.name for f in dataclasses.fields(current) if f.name not in current.RESUMABLE
            and getattr(stored, f.name) != getattr(current, f.name)]


def check_compatible(ckpt, cfg, world_size: int, elastic: bool = False) -> None:
    """CheckpointError unless ``ckpt`` can continue under ``cfg`` on ``world_size`` ranks
    (``elastic``: the algorithm resumes on another world size too)."""
    if ckpt.world_size != world_size and not elastic:
        raise CheckpointError(f"{ckpt.path} was written by {ckpt.world_size} ranks, this run has "
                              f"{world_size}: resume with mpiexec -n {ckpt.world_size} "
                              f"({ckpt.algorithm} resumes only on the world size it was "
                              "written with; MD-GAN also on another)")
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


def resolve_auto(cfg, reader, refused=None):
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
    ckpt = resolve_resume(cfg.out, reader, refused)
    if ckpt.iteration >= cfg.iterations:
        raise CheckpointError(f"--resume auto: --out {cfg.out!r} holds a finished run "
                              f"({ckpt.path} is at iteration {ckpt.iteration}, --iterations "
                              f"{cfg.iterations}): nothing to do; raise --iterations to continue "
                              "it or choose another --out")
    return ckpt


def load_resume(cfg, world_size: int, reader, refused: dict[str, str] | None = None,
                elastic: bool = False):
    """Rank 0 at start-up: the checkpoint to continue from (None for a fresh run), after
    checking that it fits this run and that ``--out`` holds no other run to overwrite.

    ``--resume auto`` resumes ``--out``'s own run if it has one (``resolve_auto``); a
    ``run.h5`` with no checkpoint beside it (a run stopped before its first checkpoint)
    is then started again from scratch. ``refused``: as ``resolve_resume``'s; ``elastic``:
    as ``check_compatible``'s."""
    auto = cfg.resume == AUTO
    if auto:
        ckpt = resolve_auto(cfg, reader, refused)
    else:
        ckpt = resolve_resume(cfg.resume, reader, refused) if cfg.resume else None
    if ckpt is not None:
        check_compatible(ckpt, cfg, world_size, elastic)
    if not auto:
        check_out_is_free(cfg.out, ckpt.path if ckpt else None)
    remove_stale_temporaries(cfg.out)
    return ckpt


def remove_stale_temporaries(out: str) -> None:
    """Delete the temporary files (``*.h5.tmp-<pid>``) a writer killed mid-write left in
    ``out``, ``out/checkpoints`` and its shard and row directories, and the shard
    directories and row segments no manifest names (a launch killed before its manifest): this run owns ``out``, nothing
    else writes there."""
    for pattern in ("*.h5.tmp-*", os.path.join("checkpoints", "*.h5.tmp-*"),
                    os.path.join("checkpoints", "*", "*.h5.tmp-*")):
        for path in glob.glob(os.path.join(out, pattern)):
            os.unlink(path)
    remove_unnamed(out)


def prune_checkpoints(run_dir: str, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints of a run directory, each manifest
    first, then the shard directories and row segments no manifest names (theirs, those
    of a checkpoint another of the same iteration replaced, and segments a newer one
    absorbed)."""
    for path in list_checkpoints(run_dir)[:-keep]:
        os.unlink(path)
    remove_unnamed(run_dir)
