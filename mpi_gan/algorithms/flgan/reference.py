"""Single-process FL-GAN (no MPI), the MPI run's equivalence reference: the N local GANs
step in turn, and at every round their G and D are averaged exactly as the server does."""
from __future__ import annotations

from .config import FlganConfig
from ...data import plan_data
from ...gan.fedavg import fedavg, flatten, load_flat
from ...config import local_settings
from ...gan.local import LocalGAN
from .protocol import round_after, round_period


def run_reference(cfg: FlganConfig, world_size: int):
    """Train ``cfg.iterations`` iterations; returns (averaged (G, D), {n: LocalGAN})."""
    workers = world_size - 1
    plans = {n: plan_data(cfg, workers, n) for n in range(1, workers + 1)}
    shape = plans[1].spec.shape
    settings = local_settings(cfg)
    locals_ = {n: LocalGAN(settings, shape, p.shard, n) for n, p in plans.items()}
    average = LocalGAN(settings, shape, None, 0)  # the server's models
    period = round_period(cfg, plans[1].mean_shard)
    weights = [float(s) for s in plans[1].shard_sizes]
    for t in range(cfg.iterations):
        for n in sorted(locals_):
            locals_[n].step(t)
        if round_after(t, period):
            mean = fedavg([flatten([locals_[n].g, locals_[n].d]) for n in sorted(locals_)],
                          weights)
            for gan in (average, *locals_.values()):
                load_flat([gan.g, gan.d], mean)
    return (average.g, average.d), locals_
