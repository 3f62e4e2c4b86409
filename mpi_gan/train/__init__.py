"""The training skeleton every algorithm plugs into (``loop.Trainer``)."""
from .loop import Algorithm, Context, RunResult, Trainer, run_algorithm, run_main

__all__ = ["Algorithm", "Context", "RunResult", "Trainer", "run_algorithm", "run_main"]
