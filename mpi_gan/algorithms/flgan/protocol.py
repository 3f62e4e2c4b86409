"""FL-GAN's message kinds and round schedule; the skeleton adds checkpoint and restore."""
from __future__ import annotations

from ...data import epoch_iterations
from ...comm.kinds import SKELETON_KINDS

KINDS = (
    "upload",   # worker -> server, every round: G and D as one flat float32 vector
    "average",  # server -> worker, every round: the FedAvg of all uploads, same layout
    "losses",   # worker -> server, every round: (mean D loss, mean G loss) of the round
)
ALL_KINDS = KINDS + SKELETON_KINDS  # as counted by the transport, in this order


def round_period(cfg, mean_shard: int) -> int:
    """Iterations per round: --round-every, else --round-epochs local epochs (>= 1)."""
    return cfg.round_every or max(1, epoch_iterations(cfg.round_epochs, mean_shard,
                                                      cfg.batch_size))


def round_after(iteration: int, period: int) -> bool:
    """Whether a round ends after 0-based ``iteration``. Rounds do not depend on
    ``--iterations``, so a run resumed with a larger target continues exactly as if it
    had never stopped; iterations after the last round are not in the server's G."""
    return (iteration + 1) % period == 0
