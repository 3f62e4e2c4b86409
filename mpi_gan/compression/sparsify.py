"""Pure selection functions shared by the sparse compressors. Inputs are 1-D tensors.

On the CPU (float32 or float64) they run the compiled kernels of ``sparsify_kernels`` (one pass
over memory); on other devices or dtypes, torch operations with the same result.
"""
from __future__ import annotations

import numpy as np
import torch

from .lazy import kernels

KERNEL_DTYPES = (torch.float32, torch.float64)


def _kernels():
    return kernels("sparsify")


def on_kernel(t: torch.Tensor) -> bool:
    """Whether the compiled CPU kernels take ``t`` (a CPU float32/float64 tensor)."""
    return t.device.type == "cpu" and t.dtype in KERNEL_DTYPES


def selection_count(numel: int, ratio: float | None, count: int | None) -> int:
    """How many of ``numel`` elements to send: ``count``, else max(1, int(ratio * numel))."""
    if numel == 0:
        return 0
    k = count if count is not None else max(1, int(ratio * numel))
    return min(k, numel)


SAMPLED_TOPK_MIN = 1 << 16  # below this many elements a plain torch.topk is as fast


def topk_indices(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted int64 indices of the ``k`` largest magnitudes of 1-D ``flat`` (``topk_select``'s)."""
    return topk_select(flat, k)[0]


def topk_select(flat: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted int64 indices, their values) of the ``k`` largest magnitudes of 1-D ``flat``.

    A threshold from a sample (about 256 sampled values above the k-th largest) keeps
    about 1.5 k candidates in one pass, and the exact k-th magnitude is found among them;
    if fewer than k pass, the full top-k runs instead, so the result is always exact.
    CPU: compiled kernels (a sample of 16-element runs, one cache line each; the values
    are kept with the candidates, so no gather follows; ties at the boundary go to the
    lowest indices). Other devices: torch operations with an element-strided sample;
    ties at the boundary: any of them.
    """
    n = flat.numel()
    if k >= n:
        return torch.arange(n, device=flat.device), flat.clone()
    sampled = n >= SAMPLED_TOPK_MIN and k <= n // 16
    if on_kernel(flat):
        idx, values = _topk_cpu(flat.contiguous().numpy(), k, sampled)
        return torch.from_numpy(idx), torch.from_numpy(values)
    idx = _topk_torch(flat, k, sampled)
    return idx, flat[idx]


def _topk_torch(flat: torch.Tensor, k: int, sampled: bool) -> torch.Tensor:
    """The torch form of ``topk_select``'s indices (any device; 0 < k < len(flat))."""
    n = flat.numel()
    mags = flat.abs()
    if sampled:
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


def _kth_largest(values: np.ndarray, k: int):
    return np.partition(values, len(values) - k)[len(values) - k]


def _topk_cpu(x: np.ndarray, k: int, sampled: bool) -> tuple[np.ndarray, np.ndarray]:
    """The CPU form of ``topk_select`` on a numpy array (0 < k < len(x))."""
    kern = _kernels()
    if sampled:
        n = len(x)
        sample = kern.strided_sample(x, max(16, 16 * n // max(4096, 256 * n // k)))
        threshold = _kth_largest(sample, min(len(sample), int(1.5 * k * len(sample) / n) + 1))
        idx = np.empty(2 * k + 1024, np.int64)
        vals = np.empty(2 * k + 1024, x.dtype)
        m = kern.values_at_least(x, threshold, idx, vals)
        if k <= m <= len(idx):
            return kern.keep_best(idx[:m], vals[:m], _kth_largest(np.abs(vals[:m]), k), k)
    return kern.keep_best(np.arange(len(x)), x, _kth_largest(np.abs(x), k), k)


def random_indices(numel: int, k: int, seed: int) -> torch.Tensor:
    """``k`` distinct indices of [0, numel) drawn uniformly from ``seed`` (SplitMix64,
    the same on every machine), sorted, int64 on the CPU."""
    return torch.from_numpy(_kernels().random_indices(numel, k, seed))


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
    nothing. Returns (sorted indices, per-bin max |G|). (Torch operations, any device;
    ``accumulate_and_select`` is the one-pass CPU form.)
    """
    gmax = bin_maxima(accumulated, bin_size)
    threshold = gmax.repeat_interleave(bin_size)[:accumulated.numel()]
    mask = (lookahead.abs() >= threshold) & (threshold > 0)
    return torch.nonzero(mask).view(-1), gmax


def accumulate_and_select(residual: torch.Tensor, g: torch.Tensor, bin_size: int,
                          scratch: torch.Tensor) -> tuple[torch.Tensor, float]:
    """In place, CPU: residual <- G = residual + g; returns (the indices ``bin_selection``
    would choose, the mean of the bins' max |G|). ``scratch``: int64, len >= len(g); the
    indices returned are a view of it (valid until it is used again)."""
    count, total, bins = _kernels().bins_select(g.numpy(), residual.numpy(), bin_size,
                                               scratch.numpy())
    return scratch[:count], (total / bins if bins else 0.0)


def packs_in_wire(g: torch.Tensor, residual: torch.Tensor | None, bin_size: int) -> bool:
    """Whether ``accumulate_select_pack`` takes this gradient: CPU float32 (the residual
    too), bins a multiple of 64 elements."""
    return (g.device.type == "cpu" and g.dtype == torch.float32 and bin_size % 64 == 0
            and (residual is None or (residual.device.type == "cpu"
                                      and residual.dtype == torch.float32)))


def accumulate_select_pack(residual: torch.Tensor, g: torch.Tensor, bin_size: int,
                           head: int) -> tuple[np.ndarray, np.ndarray, int, float]:
    """``accumulate_and_select`` then ``send_from_residual`` (exact values) in one pass
    (``sparsify_kernels.bins_bitmap_select``; where ``packs_in_wire``), writing the wire form.

    Returns (words, wire, count, scale): the selection as a bitmap (uint64 words, bit i of
    the flat tensor set iff i is sent); a new uint8 buffer with the ``count`` sent values
    as float32 from byte ``head + ceil(n / 8)`` (room for a header of ``head`` bytes and a
    bitmap before them); the mean of the bins' max |G|."""
    n = g.numel()
    start = head + (n + 7) // 8
    wire = np.empty(start + 4 * n + 64, np.uint8)  # 64: the packing writes 16 lanes
    words = np.empty(-(-n // 64), np.uint64)
    count, total, bins = _kernels().bins_bitmap_select(g.numpy(), residual.numpy(), bin_size,
                                                      words, wire, start)
    return words, wire, count, (total / bins if bins else 0.0)


def bitmap_indices(words: np.ndarray, numel: int, count: int) -> torch.Tensor:
    """The ``count`` set bits of the first ``numel`` bits of uint64 ``words``, as sorted
    int64 indices."""
    idx, ok = kernels("indexcodec").bitmap_decode(words.view(np.uint8)[:(numel + 7) // 8], count)
    assert ok, "the selection's bitmap and its count disagree"
    return torch.from_numpy(idx)


def send_from_residual(residual: torch.Tensor, idx: torch.Tensor, sign: bool,
                       scale: float) -> torch.Tensor:
    """In place, CPU: the values sent at ``idx`` (G_i, or +-scale by the sign of G_i) and
    R_i -= sent_i (one pass over the sent entries)."""
    scale = residual.new_tensor(scale).item()  # rounded to the residual's dtype
    return torch.from_numpy(_kernels().bins_send(residual.numpy(), idx.numpy(), sign, scale))
