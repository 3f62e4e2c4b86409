"""Single-process replay of an asynchronous SGD run, given the order its pushes arrived in.

Asynchrony makes the push order depend on timing; everything else is
determined by the seed. Replaying the recorded order (worker and pulled version
of every push) must reproduce the server's staleness values and parameters
exactly (tests/mpi/test_asgd.py).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from .config import AsgdConfig
from ...data import plan_data
from .main import make_model
from .protocol import decode_push, layer_offsets, make_channel
from .staleness import apply_parts, staleness
from .worker import AsgdWorker

def replay(cfg: AsgdConfig, world_size: int, workers: np.ndarray, t_pulls: np.ndarray
           ) -> dict[str, np.ndarray | torch.Tensor]:
    """Apply pushes in the recorded order; returns theta and per-push sent/tau_max/tau_sum."""
    model = make_model(cfg)
    theta = parameters_to_vector(model.parameters()).detach().clone()
    touches = torch.zeros_like(theta, dtype=torch.int64)
    layers = layer_offsets(model)
    # theta and touch counts at every version some push was computed on
    wanted = set(t_pulls.tolist())
    snapshots = {0: (theta.clone(), touches.clone())}
    roles, steps = {}, {}
    for w in range(1, world_size):
        shard = plan_data(cfg, world_size - 1, w).shard
        roles[w] = AsgdWorker(None, make_model(cfg), shard,
                              make_channel(cfg.compress, cfg.residual), cfg.batch_size, cfg.seed, w)
        steps[w] = 0
    out = {"sent": [], "tau_max": [], "tau_sum": []}
    for version, (w, t_pull) in enumerate(zip(workers.tolist(), t_pulls.tolist())):
        if t_pull not in snapshots:
            raise ValueError(f"push {version + 1}: version {t_pull} was never current")
        pulled_theta, at_pull = snapshots[t_pull]
        role = roles[w]
        vector_to_parameters(pulled_theta, role.model.parameters())
        message = role.push_message(t_pull, role.gradient(steps[w]))
        steps[w] += 1
        _, parts = decode_push(message, layers)
        sent, tau_max, tau_sum = apply_parts(
            theta, touches, lambda layer, where: staleness(touches, at_pull, where), parts,
            cfg.lr, cfg.staleness == "adacomp")
        out["sent"].append(sent)
        out["tau_max"].append(tau_max)
        out["tau_sum"].append(tau_sum)
        if version + 1 in wanted:
            snapshots[version + 1] = (theta.clone(), touches.clone())
    result = {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}
    result["theta"] = theta
    return result
