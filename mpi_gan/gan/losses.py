"""GAN mathematics shared by every algorithm, as pure functions.

Latent batches, the discriminator and generator losses (Goodfellow et al.; the
paper's B~ term and the usual non-saturating form; ACGAN class terms), one
discriminator step, the error feedback dloss/dx of MD-GAN, and the Adam
optimizer every G and D uses. Shapes: b = batch size, images (b, C, H, W),
logits (b, 1) or (b, 1 + classes), column 0 the real/fake logit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .adam import Adam
from ..seeding import generator


# -------------------------------------------------------------- latents
def latent_batch(latent_dim: int, classes: int, batch: int, seed: int, *stream: object
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A latent batch from the stream named ``stream`` (e.g. iteration, batch index):
    (z (b, latent_dim) float32, labels (b,) int64 or None).

    ``classes`` > 0 (ACGAN): the last ``classes`` entries of z are the one-hot
    class and the labels are uniform over 0..classes-1; the rest is standard
    normal noise. ``classes`` = 0: z is all noise, no labels.
    """
    g = generator(seed, "latent", *stream)
    if not classes:
        return torch.randn(batch, latent_dim, generator=g), None
    noise = torch.randn(batch, latent_dim - classes, generator=g)
    labels = torch.randint(0, classes, (batch,), generator=g)
    return torch.cat([noise, F.one_hot(labels, classes).to(noise.dtype)], dim=1), labels


# --------------------------------------------------------------- losses
def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor,
                       labels_real: torch.Tensor | None, labels_fake: torch.Tensor | None
                       ) -> torch.Tensor:
    """D's loss (to descend): -(A~(X_r) + B~(X_g)), natural log, plus ACGAN class terms.

    logits_*: (b, 1) or (b, 11); column 0 is the real/fake logit.
    """
    ones = torch.ones_like(logits_real[:, 0])
    loss = (F.binary_cross_entropy_with_logits(logits_real[:, 0], ones)
            + F.binary_cross_entropy_with_logits(logits_fake[:, 0],
                                               torch.zeros_like(logits_fake[:, 0])))
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
def discriminator_step(disc: nn.Module, optimizer: Adam,
                       x_real: torch.Tensor, y_real: torch.Tensor | None,
                       x_fake: torch.Tensor, y_fake: torch.Tensor | None) -> float:
    """One optimizer step (Adam in every algorithm) of D on (X_r, X_d); returns the loss
    before the step."""
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


def make_adam(module: nn.Module, lr: float, beta1: float, beta2: float,
              skip_nonfinite: bool = False) -> Adam:
    """The Adam optimizer used for G and every D (gan/adam.py: torch's single-tensor Adam,
    the same kernels everywhere); ``skip_nonfinite``: ``--on-nonfinite skip``."""
    return Adam(module.parameters(), lr=lr, betas=(beta1, beta2),
                skip_nonfinite=skip_nonfinite)


def gan_step(g: nn.Module, d: nn.Module, opt_g: Adam,
             opt_d: Adam, x_real: torch.Tensor, y_real: torch.Tensor | None,
             z: torch.Tensor, y_fake: torch.Tensor | None, disc_steps: int,
             saturating: bool) -> tuple[float, float]:
    """One local iteration of a full GAN (FL-GAN workers, the standalone GAN).

    G makes one batch X = G(z) (b, C, H, W); D takes ``disc_steps`` Adam steps on
    (X_r, X) as in MD-GAN's workers, then G one Adam step on the mean generator loss
    of X under the updated D. Returns (mean D loss, G loss) before the steps.
    """
    g.train()
    x_fake = g(z)
    d_losses = [discriminator_step(d, opt_d, x_real, y_real, x_fake.detach(), y_fake)
                for _ in range(disc_steps)]
    opt_g.zero_grad(set_to_none=True)
    loss = generator_loss_per_sample(d(x_fake), y_fake, saturating).mean()
    loss.backward()
    opt_g.step()
    return sum(d_losses) / len(d_losses), float(loss.detach())
