"""HDF5 outputs: atomic writes, checkpoints, run files with metric tables, packed state."""
