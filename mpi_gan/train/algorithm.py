"""What an algorithm plugs into the training loops: ``Algorithm`` (its hooks), the
``Context`` its roles are built from, the ``RunResult`` every rank ends with.

A new algorithm is a folder under ``algorithms/`` with its configuration
(``config.py``), its roles (declared in ``train/roles.py``: synchronous, or an
asynchronous server and workers), an ``Algorithm`` subclass naming them, and one line in
``algorithms/__init__.py``'s registry.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from mpi4py import MPI

from ..comm.transport import Transport
from ..data import plan_data
from ..io.checkpoint import read_checkpoint
from ..io.runlog import EVENT_TABLES, Metrics


@dataclass
class Context:
    """What a role is built from: the configuration, the communicator's shape, the
    device, the logger, the data the algorithm loaded for this rank."""

    cfg: object
    comm: MPI.Comm
    rank: int
    size: int
    device: torch.device
    log: object
    data: object = None
    transport: Transport | None = None
    start: int = 0
    lost: set = field(default_factory=set)  # world ranks of workers that died

    @property
    def workers(self) -> list[int]:
        """World ranks of the workers alive."""
        return [n for n in range(1, self.size) if n not in self.lost]


@dataclass
class RunResult:
    """What a rank ends with: its role, on rank 0 the output paths, and the stop signal
    all ranks agreed on (0 if the run went to its end)."""

    role: object
    run_file: str | None = None
    checkpoint: str | None = None
    stopped: int = 0
    iteration: int = 0
    start: int = 0
    lost: tuple = ()  # world ranks that died during the run (``--fault-tolerant``)


class Algorithm:
    """What an algorithm plugs into the skeleton; subclasses override the hooks.

    ``registered``: the algorithm's registry entry (``algorithms.REGISTRY``), from which a
    subclass takes its ``name``, ``run_format``, ``config_class`` and ``check``."""

    registered = None
    name = ""                 # checkpoint 'algorithm' attribute, log prefix
    run_format = ""           # run file 'format' attribute
    config_class = None
    kinds: tuple[str, ...] = ()
    model_group = "model"     # run-file group of the model rank 0 publishes
    synchronous = True
    evaluates = False         # rank 0's role holds a generator to score (``generator``)
    fault_tolerant = False    # can go on without dead workers (``--fault-tolerant``)
    elastic = False           # resumes on another number of workers (train/elastic.py)
    # asynchronous: the workers time their steps with the loop's ``measure`` (their cost
    # travels with their checkpoint reports, as synchronous workers' does)
    measures_asynchronous_steps = False
    copied_state: tuple[str, ...] = ()  # what a new worker copies of an old one (prefixes)

    check = None              # check(cfg, world_size) raises ConfigError

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        entry = cls.__dict__.get("registered")
        if entry is not None:
            cls.name, cls.run_format = entry.name, entry.run_format
            cls.config_class = entry.configuration()
            cls.check = staticmethod(entry.validator())

    def validate(self, cfg, world_size: int) -> None:
        type(self).check(cfg, world_size)

    def is_synchronous(self, cfg) -> bool:
        """Whether ``cfg`` runs in the synchronous loop (``synchronous``, unless the
        algorithm has both kinds)."""
        return self.synchronous

    def load_data(self, ctx: Context):
        """This rank's data (runs inside the agreed set-up: raise DataError on bad data):
        by default the shard split of a server + workers run (``data.plan_data``)."""
        return plan_data(ctx.cfg, ctx.size - 1, ctx.rank)

    def make_role(self, ctx: Context):
        raise NotImplementedError

    def worker_template(self, ctx: Context) -> list[tuple[str, torch.Tensor]]:
        """Named tensors shaped like a worker's state (RNG excluded), the same for every
        worker; [] if workers keep no state."""
        return []

    def tables(self, ctx: Context) -> dict[str, Metrics]:
        """Rank 0's metric tables by group path (rows come from its role's ``step``)."""
        return {}

    def extras(self, ctx: Context) -> dict[str, np.ndarray]:
        """Extra datasets (path -> array) for the run file and checkpoints: by default
        each worker's shard size and label histogram."""
        return ctx.data.extras()

    def summary(self, result: RunResult) -> list[str]:
        """Lines rank 0 prints when the run is done."""
        return []

    def table_paths(self) -> tuple[str, ...]:
        return ("metrics",)

    def generator(self, role) -> torch.nn.Module:
        """The generator rank 0's role holds (scored every ``--eval-every`` iterations)."""
        return role.g

    def reader(self, path: str):
        return read_checkpoint(path, self.name, self.config_class, self.table_paths(),
                               ("scores", *EVENT_TABLES) if self.evaluates else EVENT_TABLES)
