"""Message kinds every algorithm's traffic holds besides its own: the training loop's
(checkpoint: a worker's report of its written shard to rank 0; restore: rank 0 sent each
worker its state on a resume before checkpoints were sharded (format 4), and counts
nothing since: each rank reads its own shard; the kind stays so that the counters of
older checkpoints line up). An algorithm's transport counts ``its KINDS +
SKELETON_KINDS``, in that order."""
SKELETON_KINDS = ("checkpoint", "restore")
