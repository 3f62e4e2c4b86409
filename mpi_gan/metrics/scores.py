"""The scores' statistics, as pure functions of numpy arrays (float64 inside).

* ``inception_score``: exp(E_x KL(p(y|x) || p(y))) over class probabilities
  (Salimans et al. 2016). With an MNIST classifier's softmax it is the MD-GAN
  paper's "MNIST score": between 1 (every sample the same class, or every
  prediction uniform) and the number of classes (confident predictions,
  balanced over the classes).
* ``frechet_distance``: the Frechet (2-Wasserstein) distance between two
  Gaussians, |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al.
  2017); FID is it between the Gaussian fits (``gaussian_stats``) of two
  feature sets.
"""
from __future__ import annotations

import numpy as np


def inception_score(probs: np.ndarray, splits: int = 1) -> float:
    """Mean over ``splits`` equal parts of exp(mean_x KL(p(y|x) || p(y))).

    probs: (n, classes) rows of class probabilities (each summing to 1).
    The paper's protocol scores 500 samples in one part (``splits=1``).
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(p) < splits or splits < 1:
        raise ValueError(f"probs must be (n, classes) with n >= splits >= 1, got {p.shape}, "
                         f"splits={splits}")
    scores = []
    for part in np.array_split(p, splits):
        marginal = part.mean(axis=0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(marginal)), 0.0)
        scores.append(float(np.exp(kl.sum(axis=1).mean())))
    return float(np.mean(scores))


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (d,), covariance (d, d)) of features (n, d), n >= 2, float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"features must be (n >= 2, d), got {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)) for means (d,), covariances (d, d).

    tr((S1 S2)^(1/2)) = tr((R S2 R)^(1/2)) with R = S1^(1/2): a symmetric
    eigenproblem, stable for the rank-deficient covariances of few samples.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched Gaussians: means {mu1.shape}, {mu2.shape}; covariances "
                         f"{s1.shape}, {s2.shape}")
    root = _psd_sqrt(s1)
    cross = np.linalg.eigvalsh((root @ s2 @ root + (root @ s2 @ root).T) / 2)
    trace_sqrt = np.sqrt(np.clip(cross, 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt, 0.0))


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between the Gaussian fits of two feature sets (n_a, d), (n_b, d)."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))
