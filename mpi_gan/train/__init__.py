"""The training skeleton every algorithm plugs into (``loop.Trainer``)."""
from .loop import Algorithm, Context, RunResult, Trainer, run_algorithm

__all__ = ["Algorithm", "Context", "RunResult", "Trainer", "run_algorithm"]
