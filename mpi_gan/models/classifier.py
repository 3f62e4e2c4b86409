"""The AdaComp paper's classifier, and accuracy on a test set."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AdaCompCNN(nn.Module):
    """(b, C, H, W) -> logits (b, classes); MNIST: 421,642 parameters.

    conv 3x3x32 -> maxpool 2 -> conv 3x3x64 -> maxpool 2 -> FC 64*(H/4)*(W/4) -> 128
    -> FC classes, ReLU activations, 'same' padding.
    """

    def __init__(self, shape: tuple[int, int, int] = (1, 28, 28), classes: int = 10):
        super().__init__()
        c, h, w = shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(64 * (h // 4) * (w // 4), 128), nn.ReLU(),
                                        nn.Linear(128, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             chunk: int = 1000) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on images (n, C, H, W), labels (n,)."""
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for start in range(0, len(labels), chunk):
            x, y = images[start:start + chunk], labels[start:start + chunk]
            logits = model(x)
            correct += int((logits.argmax(1) == y).sum())
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
    return correct / len(labels), loss / len(labels)


class ScoreCNN(nn.Module):
    """The score classifier (metrics.classifier): (b, C, H, W) -> logits (b, classes).

    conv 3x3x16 -> maxpool 2 -> conv 3x3x32 -> maxpool 2 -> FC 128 (the FID features,
    ``features``) -> dropout 0.3 -> FC classes; ReLU, 'same' padding. MNIST: 206,922
    parameters, about a minute of CPU training to 99% test accuracy.
    """

    def __init__(self, shape: tuple[int, int, int] = (1, 28, 28), classes: int = 10,
                 width: int = 16):
        super().__init__()
        c, h, w = shape
        self.body = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(2 * width * (h // 4) * (w // 4), 128), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(128, classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (b, 128)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
