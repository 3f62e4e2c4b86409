"""Adam (Kingma and Ba), the update of ``torch.optim.Adam(foreach=False)`` bit for bit,
without ``torch.optim``.

Why not ``torch.optim.Adam``: its ``step`` imports ``torch._dynamo`` on first use,
about 1.9 s of CPU per process; with 16 ranks on 2 cores that alone is 20 s of a
run's start-up (measured: ``import torch, torch._dynamo`` under ``mpiexec -n 16``
takes 42 s against 23 s for ``import torch``). The math below is torch's
single-tensor Adam (torch/optim/adam.py, ``_single_tensor_adam``, no weight decay,
no amsgrad); ``tests/unit/test_gan.py`` checks it against torch's to the last bit.

State per parameter, as torch keeps it: ``step`` (float32 scalar on the CPU),
``exp_avg`` and ``exp_avg_sq`` (the parameter's shape and device), created on the
parameter's first step.
"""
from __future__ import annotations

import torch


class Adam:
    """``Adam(params, lr, betas, eps)``: ``step()`` after ``backward()``; ``zero_grad()``;
    ``state``: parameter -> {"step", "exp_avg", "exp_avg_sq"}.

    ``skip_nonfinite``: a step whose gradients hold a NaN or an infinity is not taken
    (parameters and moments unchanged, as torch.amp's GradScaler does); ``skipped`` counts
    those steps."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, skip_nonfinite: bool = False):
        self.params = list(params)
        self.skip_nonfinite, self.skipped = skip_nonfinite, 0
        self.lr, self.eps = float(lr), float(eps)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()

    def gradients_finite(self) -> bool:
        """Whether every gradient is free of NaN and infinity."""
        flags = [torch.isfinite(p.grad).all() for p in self.params if p.grad is not None]
        return bool(torch.stack(flags).all()) if flags else True  # one device sync

    @torch.no_grad()
    def step(self) -> bool:
        """One update of every parameter that has a gradient; False (nothing changed) if
        ``skip_nonfinite`` and a gradient is not finite."""
        if self.skip_nonfinite and not self.gradients_finite():
            self.skipped += 1
            return False
        beta1, beta2, lr, eps = self.beta1, self.beta2, self.lr, self.eps
        for p in self.params:
            if p.grad is None:
                continue
            state = self.state.get(p)
            if state is None:
                state = self.state[p] = {
                    "step": torch.tensor(0.0, dtype=torch.float32),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
            grad, exp_avg, exp_avg_sq = p.grad, state["exp_avg"], state["exp_avg_sq"]
            state["step"] += 1
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step = state["step"].item()
            bias_correction1 = 1 - beta1 ** step
            bias_correction2 = 1 - beta2 ** step
            step_size = lr / bias_correction1
            denom = (exp_avg_sq.sqrt() / bias_correction2 ** 0.5).add_(eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)
        return True
