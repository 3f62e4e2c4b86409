"""Mode-coverage scores of generated points against a known mixture of Gaussians (the
toy benchmarks ring and grid; unrolled GAN, VEEGAN, PacGAN).

A generated point is *high quality* when it lies within 3 standard deviations (Euclidean
distance <= 3 std) of some centre; it then belongs to its nearest centre. A mode is
*covered* when at least 1% of all generated points belong to it. The KL divergence is
that of the mode histogram of the high-quality points from the uniform distribution over
the K modes, sum_k p_k log(K p_k) (natural log; 0 for a perfect spread, log K when every
high-quality point sits on one mode, and log K also when there is no high-quality point).
"""
from __future__ import annotations

import numpy as np

MODE_SCORES = ("modes", "high_quality", "mode_kl")
WITHIN_STD = 3.0
COVERED_SHARE = 0.01


def mode_histogram(points: np.ndarray, centres: np.ndarray, std: float) -> np.ndarray:
    """int64 (K,): how many of ``points`` (n, 2) are high quality and nearest to each of
    ``centres`` (K, 2)."""
    points = np.asarray(points, dtype=np.float64)
    distances = np.linalg.norm(points[:, None, :] - centres[None, :, :], axis=-1)  # (n, K)
    nearest = distances.argmin(axis=1)
    good = distances[np.arange(len(points)), nearest] <= WITHIN_STD * std
    return np.bincount(nearest[good], minlength=len(centres)).astype(np.int64)


def mode_scores(points: np.ndarray, centres: np.ndarray, std: float) -> dict[str, float]:
    """{modes: modes covered (0..K), high_quality: share of high-quality points (0..1),
    mode_kl: KL(mode histogram || uniform) in nats} of ``points`` (n, 2), n >= 1."""
    counts = mode_histogram(points, centres, std)
    n, k = len(points), len(centres)
    good = int(counts.sum())
    if good:
        p = counts[counts > 0] / good
        kl = float(np.sum(p * np.log(k * p)))
    else:
        kl = float(np.log(k))
    return {"modes": float(np.sum(counts >= COVERED_SHARE * n)),
            "high_quality": good / n, "mode_kl": kl}
