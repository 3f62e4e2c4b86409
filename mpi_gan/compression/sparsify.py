"""Pure selection functions shared by the sparse compressors. Inputs are 1-D tensors."""
from __future__ import annotations

import torch


def selection_count(numel: int, ratio: float | None, count: int | None) -> int:
    """How many of ``numel`` elements to send: ``count``, else max(1, int(ratio * numel))."""
    if numel == 0:
        return 0
    k = count if count is not None else max(1, int(ratio * numel))
    return min(k, numel)


SAMPLED_TOPK_MIN = 1 << 16  # below this many elements a plain torch.topk is as fast


def topk_indices(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted indices of the ``k`` largest magnitudes (ties at the boundary: any of them).

    Large sparse selections first keep the candidates above a threshold estimated
    from a strided sample (expected 1.5 k of them), then take the exact top k
    among those; if fewer than k candidates pass, the full top-k runs instead,
    so the result is always exact.
    """
    n = flat.numel()
    if k >= n:
        return torch.arange(n, device=flat.device)
    mags = flat.abs()
    if n >= SAMPLED_TOPK_MIN and k <= n // 16:
        # enough samples that about 256 of them lie above the k-th largest magnitude
        stride = max(1, n // max(4096, 256 * n // k))
        sample = mags[::stride]
        rank = min(len(sample), int(1.5 * k * len(sample) / n) + 1)
        threshold = torch.topk(sample, rank, sorted=False).values.min()
        candidates = torch.nonzero(mags >= threshold).view(-1)
        if len(candidates) >= k:
            best = torch.topk(mags[candidates], k, sorted=False).indices
            return candidates[best].sort().values
    return torch.topk(mags, k, sorted=False).indices.sort().values


def random_indices(numel: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` distinct indices drawn uniformly from ``generator``, sorted."""
    return torch.randperm(numel, generator=generator)[:k].sort().values


def bin_maxima(values: torch.Tensor, bin_size: int) -> torch.Tensor:
    """max |values| over consecutive bins of ``bin_size`` (the last bin may be shorter)."""
    n = values.numel()
    bins = -(-n // bin_size)
    padded = torch.zeros(bins * bin_size, dtype=values.dtype, device=values.device)
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
