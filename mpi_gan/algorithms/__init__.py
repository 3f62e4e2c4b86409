"""One sub-package per training algorithm: its roles, message kinds, reference and traffic model."""
