"""Message kinds every algorithm's traffic holds besides its own: the training loop's
(checkpoint: a worker's state to rank 0; restore: rank 0 sends each worker its state on a
resume). An algorithm's transport counts ``its KINDS + SKELETON_KINDS``, in that order."""
SKELETON_KINDS = ("checkpoint", "restore")
