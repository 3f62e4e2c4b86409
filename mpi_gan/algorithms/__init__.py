"""One sub-package per training algorithm: its configuration (``config.py``), roles,
message kinds, single-process reference and traffic model, and its ``Algorithm``
(``main.py``). The registry below is the one place that lists them: adding an algorithm is
its folder and one line here (and, for ``python -m mpi_gan.<name>``, a five-line entry
module beside the others)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Registered:
    """What the rest of the package knows of an algorithm without importing it."""

    name: str          # the checkpoints' 'algorithm' attribute, the log prefix
    config_class: str  # its configuration class, in algorithms/<name>/config.py
    run_format: str    # the run file's 'format' attribute

    def configuration(self) -> type:
        """The configuration class (imports ``algorithms/<name>/config.py`` only)."""
        return getattr(self._config_module(), self.config_class)

    def validator(self):
        """The configuration's check, ``validate(cfg, world_size)`` (ConfigError)."""
        return self._config_module().validate

    def parser(self):
        """The command line's reader, ``parse_args(argv, quiet=False)`` -> configuration."""
        return self._config_module().parse_args

    def _config_module(self):
        return importlib.import_module(f"{__name__}.{self.name}.config")


REGISTRY: dict[str, Registered] = {a.name: a for a in (
    Registered("mdgan", "MdganConfig", "mpi-gan-mdgan-run"),
    Registered("flgan", "FlganConfig", "mpi-gan-flgan-run"),
    Registered("standalone", "StandaloneConfig", "mpi-gan-standalone-run"),
    Registered("asgd", "AsgdConfig", "mpi-gan-asgd-run"),
)}
