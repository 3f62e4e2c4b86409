"""Command-line value types shared by every entry point (argparse ``type=`` callables).

Plain Python, no imports beyond argparse: an entry point can check its arguments before
it loads torch or MPI. Each raises ``argparse.ArgumentTypeError`` with the reason, which
argparse prints as one usage error (exit status 2).
"""
from __future__ import annotations

import argparse


INT64_MAX = 2 ** 63 - 1  # run files and checkpoints store every option as a 64-bit integer


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every entry point's help: each option's default after its help, unless it has none
    to show (None, an empty text, a flag's False) or its help already says it
    ("(default: ..."); docstring markup (double backquotes) left out of help texts and
    descriptions."""

    def _get_help_string(self, action):
        text = (action.help or "").replace("``", "")
        default = action.default
        none = default is None or default is False or default is argparse.SUPPRESS or \
            (isinstance(default, str) and default == "")
        if none or not action.option_strings or "(default" in text or "%(default)" in text:
            return text
        return f"{text} (default: %(default)s)"

    def _format_text(self, text):
        return super()._format_text(text.replace("``", ""))


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one ``<name>: error: ...`` line with a pointer to
    ``--help`` (exit status 2), not the whole usage."""

    def __init__(self, *args, error_name: str = "mpi_gan", **kwargs):
        super().__init__(*args, **kwargs)
        self.error_name = error_name

    def error(self, message):
        self.exit(2, f"{self.error_name}: error: {message} (see: {self.prog} --help)\n")


def integer(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"must fit a 64-bit integer (at most {INT64_MAX}), "
                                         f"got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    value = _number(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def rank_factor(text: str) -> str:
    """``RANK:FACTOR`` (a rank >= 1, a finite factor >= 1), normalised to ``RANK:FACTOR``
    with the factor as ``%g``: one entry of a straggler list (``slow_factors``)."""
    rank, sep, factor = text.partition(":")
    try:
        if not sep:
            raise ValueError
        number, value = int(rank), float(factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be RANK:FACTOR (e.g. 1:4), got {text!r}") \
            from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"RANK must be a worker's rank (>= 1), got {text!r}")
    if not 1 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"FACTOR must be a finite number >= 1, got {text!r}")
    return f"{number}:{value:g}"


def slow_factors(text: str) -> dict[int, float]:
    """{rank: factor} of a stored straggler list ``RANK:FACTOR[,RANK:FACTOR...]`` ('' for
    none); ValueError for a malformed entry or a rank given twice."""
    factors: dict[int, float] = {}
    for entry in filter(None, text.split(",")):
        try:
            rank, factor = rank_factor(entry).split(":")
        except argparse.ArgumentTypeError as exc:
            raise ValueError(str(exc)) from None
        if int(rank) in factors:
            raise ValueError(f"rank {rank} is given twice")
        factors[int(rank)] = float(factor)
    return factors
