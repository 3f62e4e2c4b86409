"""MD-GAN's message kinds; the skeleton adds its own (checkpoint, restore)."""
from ...comm.kinds import SKELETON_KINDS

KINDS = (
    "batch_g",     # server -> worker: generated batch X_g (feedback is computed on it)
    "batch_d",     # server -> worker: generated batch X_d (D trains on it)
    "labels",      # server -> worker: ACGAN class labels of X_g then X_d (int64)
    "feedback",    # worker -> server: error feedback F_n = dloss/dX_g
    "losses",      # worker -> server: (D loss, G loss) of the iteration, float32
    "swap",        # worker -> worker: discriminator (and optionally Adam state)
)

ALL_KINDS = KINDS + SKELETON_KINDS  # as counted by the transport, in this order

# --staleness-bound S > 0: every batch_g message begins with the server's command, G's
# version, the step index and an argument (int64 each)
HEADER = 32
