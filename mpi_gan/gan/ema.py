"""An exponential moving average of the generator's weights (Yazici et al., "The Unusual
Effectiveness of Averaging in GAN Training", ICLR 2019; the G_ema of ProGAN, StyleGAN and
BigGAN): the average is what is scored, published in the run file and sampled from,
while the generator itself trains as before (the average never feeds back into training).
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def make_average(generator: nn.Module) -> nn.Module:
    """A copy of ``generator`` (same device, weights and buffers) that takes no gradient."""
    average = copy.deepcopy(generator)
    for p in average.parameters():
        p.requires_grad_(False)
    return average


def update_average(average: nn.Module, generator: nn.Module, decay: float) -> None:
    """After a step of G: every parameter a <- decay * a + (1 - decay) * w, in place;
    buffers (BatchNorm statistics) are copied from G as they are."""
    with torch.no_grad():
        for a, w in zip(average.parameters(), generator.parameters()):
            a.mul_(decay).add_(w, alpha=1.0 - decay)
        for a, w in zip(average.buffers(), generator.buffers()):
            a.copy_(w)
