"""MD-GAN's mathematics as pure functions (Hardy et al., IPDPS 2019, Algorithm 1).

Shared by the MPI roles (server.py, worker.py) and the single-process reference
(reference.py), each with its own unit tests. Shapes: b = batch size,
d = 1*28*28 sample size, N = number of workers, K = generated batches.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import NUM_CLASSES
from .seeding import generator


# ------------------------------------------------------------ batch plan
def generated_batches(k: int) -> int:
    """K, the number of batches the server generates per iteration: max(k, 2).

    With k = 1 the paper's two batches per worker could not be distinct, so at
    least 2 are generated (k = 1 and k = 2 therefore behave alike).
    """
    return max(k, 2)


def batch_assignment(worker: int, batches: int) -> tuple[int, int]:
    """(g, d): 0-based indices of X_n^(g) and X_n^(d) for worker n (1..N) among K batches.

    The paper's rule X_n^(g) = X^((n mod K)+1), X_n^(d) = X^(((n+1) mod K)+1)
    written 0-based; g != d whenever K >= 2.
    """
    return worker % batches, (worker + 1) % batches


def derangement(seed: int, swap_index: int, workers: int) -> list[int] | None:
    """Swap partners for the ``swap_index``-th swap: ``dest[n-1]`` is where worker n sends D.

    A uniformly random derangement of 1..N (nobody keeps its own D), the same on
    every rank because it is drawn from a stream derived from the run seed.
    None when N < 2 (no partner exists).
    """
    if workers < 2:
        return None
    g = generator(seed, "swap", swap_index)
    while True:  # rejection sampling: about e tries on average
        perm = torch.randperm(workers, generator=g)
        if not bool((perm == torch.arange(workers)).any()):
            return [int(p) + 1 for p in perm]


def swap_source(dest: list[int], worker: int) -> int:
    """The worker whose D arrives at ``worker`` under the permutation ``dest``."""
    return dest.index(worker) + 1


def swap_period(swap_epochs: int, shard_size: int, batch_size: int) -> int:
    """Iterations between swaps: E local epochs of m // b iterations (0: never)."""
    return swap_epochs * (shard_size // batch_size)


def swap_after(iteration: int, period: int) -> int | None:
    """The swap index performed after 0-based ``iteration``, or None."""
    if period > 0 and (iteration + 1) % period == 0:
        return (iteration + 1) // period
    return None


# -------------------------------------------------------------- latents
def latent_batch(latent_dim: int, acgan: bool, batch: int, seed: int, iteration: int,
                 index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Z_j for batch ``index`` of ``iteration``: (z (b, latent_dim), labels (b,) or None).

    With ACGAN the last 10 entries of z are the one-hot class and the labels are
    uniform over 0..9; the rest is standard normal noise.
    """
    g = generator(seed, "latent", iteration, index)
    if not acgan:
        return torch.randn(batch, latent_dim, generator=g), None
    noise = torch.randn(batch, latent_dim - NUM_CLASSES, generator=g)
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=g)
    return torch.cat([noise, F.one_hot(labels, NUM_CLASSES).to(noise.dtype)], dim=1), labels


# --------------------------------------------------------------- losses
def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor,
                       labels_real: torch.Tensor | None, labels_fake: torch.Tensor | None
                       ) -> torch.Tensor:
    """D's loss (to descend): -(A~(X_r) + B~(X_g)), natural log, plus ACGAN class terms.

    logits_*: (b, 1) or (b, 11); column 0 is the real/fake logit.
    """
    ones = torch.ones_like(logits_real[:, 0])
    loss = (F.binary_cross_entropy_with_logits(logits_real[:, 0], ones)
            + F.binary_cross_entropy_with_logits(logits_fake[:, 0], torch.zeros_like(ones)))
    if labels_real is not None:
        loss = loss + F.cross_entropy(logits_real[:, 1:], labels_real) \
            + F.cross_entropy(logits_fake[:, 1:], labels_fake)
    return loss


def generator_loss_per_sample(logits_fake: torch.Tensor, labels_fake: torch.Tensor | None,
                              saturating: bool) -> torch.Tensor:
    """Per-sample generator loss, shape (b,): G descends its mean.

    saturating: log(1 - D(x)) = -softplus(s) (the paper's B~ term);
    non-saturating: -log D(x) = softplus(-s). ACGAN adds the class cross-entropy.
    """
    s = logits_fake[:, 0]
    loss = -F.softplus(s) if saturating else F.softplus(-s)
    if labels_fake is not None:
        loss = loss + F.cross_entropy(logits_fake[:, 1:], labels_fake, reduction="none")
    return loss


# ------------------------------------------------------------ worker math
def discriminator_step(disc: nn.Module, optimizer: torch.optim.Optimizer,
                       x_real: torch.Tensor, y_real: torch.Tensor | None,
                       x_fake: torch.Tensor, y_fake: torch.Tensor | None) -> float:
    """One Adam step of D on (X_r, X_d); returns the loss before the step."""
    optimizer.zero_grad(set_to_none=True)
    loss = discriminator_loss(disc(x_real), disc(x_fake), y_real, y_fake)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def error_feedback(disc: nn.Module, x_g: torch.Tensor, y_g: torch.Tensor | None,
                   saturating: bool) -> tuple[torch.Tensor, float]:
    """F_n: e_i = d loss(x_i) / d x_i for every generated sample, shape of ``x_g``.

    ``loss(x_i)`` is the per-sample generator loss; the gradient of the *sum*
    is taken (D's minibatch layers couple samples, so cross terms are included)
    and the server applies the 1 / (N b) averaging. D's parameters get no
    gradient. Returns (F_n, mean generator loss).
    """
    x = x_g.detach().requires_grad_(True)
    losses = generator_loss_per_sample(disc(x), y_g, saturating)
    (feedback,) = torch.autograd.grad(losses.sum(), x)
    return feedback, float(losses.detach().mean())


# ------------------------------------------------------------ server math
def feedback_gradients(feedbacks: list[torch.Tensor], assignments: list[int],
                       batches: int, scale: float) -> list[torch.Tensor | None]:
    """Upstream gradient of each generated batch: scale * sum of the feedback sent for it.

    ``feedbacks[i]`` came from the worker whose X_g is batch ``assignments[i]``;
    summed in list order (worker order), so the result is reproducible.
    Batches nobody gave feedback on get None.
    """
    grads: list[torch.Tensor | None] = [None] * batches
    for fb, j in zip(feedbacks, assignments):
        grads[j] = fb.clone() if grads[j] is None else grads[j].add_(fb)
    return [g.mul_(scale) if g is not None else None for g in grads]


def generator_step(optimizer: torch.optim.Optimizer, generated: list[torch.Tensor],
                   grads: list[torch.Tensor | None]) -> None:
    """One backward pass of G with the feedback as upstream gradient, then one Adam step.

    Implements dw_j = 1/(N b) sum_n sum_i e_n,i . dx_i/dw_j (the scale is in ``grads``).
    """
    optimizer.zero_grad(set_to_none=True)
    pairs = [(x, g) for x, g in zip(generated, grads) if g is not None]
    torch.autograd.backward([x for x, _ in pairs], grad_tensors=[g for _, g in pairs])
    optimizer.step()


def make_adam(module: nn.Module, lr: float, beta1: float, beta2: float) -> torch.optim.Adam:
    """The Adam optimizer used for G and every D (foreach off: same kernels everywhere)."""
    return torch.optim.Adam(module.parameters(), lr=lr, betas=(beta1, beta2), foreach=False)
