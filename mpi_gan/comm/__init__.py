"""MPI plumbing: the tensor transport with its traffic counters, and launch/abort helpers."""
