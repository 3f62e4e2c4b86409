"""Errors every layer may raise, and how an exception is read: its chain, and its type as
a reader knows it. The lowest layer: imports nothing of the project."""
from __future__ import annotations

from collections.abc import Iterator


EXIT_USAGE = 2  # every rank's exit status after a bad command line or a failed set-up


def error_line(message: str) -> str:
    """The one line a user reads about a bad command line or a failed set-up."""
    return f"mpi_gan: error: {message}"


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which and why."""


def exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc``, then its cause (or else its context), and so on, each exception once."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def type_name(exc: BaseException) -> str:
    """An exception's type as a reader knows it: ``OSError`` for a built-in,
    ``zlib.error``, ``gzip.BadGzipFile`` or ``pickle.UnpicklingError`` (public module and
    qualified name: a C accelerator's ``_pickle`` reads as ``pickle``) for any other."""
    kind = type(exc).__qualname__
    module = type(exc).__module__
    return kind if module in ("builtins", "__main__") else f"{module.lstrip('_')}.{kind}"
