"""MPI plumbing: the tensor transport with its traffic counters, the message kinds every
algorithm shares, stop signals, ULFM."""
