"""The training skeleton every algorithm plugs into: the shared loop (``loop.Trainer``),
one subclass per execution model (``synchronous``, ``asynchronous``), the roles they
expect (``roles``), the entry points' body (``entry``)."""
from .algorithm import Algorithm, Context, RunResult
from .entry import run_algorithm, run_main, trainer_of

__all__ = ["Algorithm", "Context", "RunResult", "run_algorithm", "run_main", "trainer_of"]
