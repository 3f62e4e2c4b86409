"""Pure selection functions shared by the sparse compressors. Inputs are 1-D tensors."""
from __future__ import annotations

import torch


def selection_count(numel: int, ratio: float | None, count: int | None) -> int:
    """How many of ``numel`` elements to send: ``count``, else max(1, int(ratio * numel))."""
    if numel == 0:
        return 0
    k = count if count is not None else max(1, int(ratio * numel))
    return min(k, numel)


def topk_indices(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted indices of the ``k`` largest magnitudes (ties: torch.topk's choice)."""
    if k >= flat.numel():
        return torch.arange(flat.numel())
    return torch.topk(flat.abs(), k, sorted=False).indices.sort().values


def random_indices(numel: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` distinct indices drawn uniformly from ``generator``, sorted."""
    return torch.randperm(numel, generator=generator)[:k].sort().values


def bin_maxima(values: torch.Tensor, bin_size: int) -> torch.Tensor:
    """max |values| over consecutive bins of ``bin_size`` (the last bin may be shorter)."""
    n = values.numel()
    bins = -(-n // bin_size)
    padded = torch.zeros(bins * bin_size, dtype=values.dtype)
    padded[:n] = values.abs()
    return padded.view(bins, bin_size).max(dim=1).values


def bin_selection(accumulated: torch.Tensor, lookahead: torch.Tensor, bin_size: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """AdaComp (Chen et al. 2018) selection: send i iff |H_i| >= max |G| over i's bin.

    accumulated G = R + g, lookahead H = G + g, 1-D. Bins whose max |G| is 0 send
    nothing. Returns (sorted indices, per-bin max |G|).
    """
    gmax = bin_maxima(accumulated, bin_size)
    threshold = gmax.repeat_interleave(bin_size)[:accumulated.numel()]
    mask = (lookahead.abs() >= threshold) & (threshold > 0)
    return torch.nonzero(mask).view(-1), gmax
