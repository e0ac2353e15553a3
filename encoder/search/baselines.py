"""Evaluation baselines: the raw pixels and their PCA (fitted on the gallery), as Methods.

``search.py evaluate --methods raw pca`` compares the learned codes and the hashes with them: an
encoder that does not beat PCA with 128 components is not worth its training.
"""

from __future__ import annotations

import numpy as np

from encoder.search.base import Method

PCA_COMPONENTS = 128


def pixels(images: np.ndarray) -> np.ndarray:
    """(N,S,S) uint8 -> (N,S*S) float32 in [0,1]."""
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255)


def pca_fit(x: np.ndarray, n_components: int = PCA_COMPONENTS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """PCA of (N,D) data: (mean (D,), components (D,k)) by randomized SVD (torch.pca_lowrank)."""
    import torch  # only PCA evaluation needs it

    k = min(n_components, *x.shape)
    t = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    mean = t.mean(0)
    torch.manual_seed(seed)
    # oversampled (k + 32 directions) and 8 power iterations: the k leading directions come out
    # as exact SVD's to a relative error far below what changes a nearest neighbour
    _, _, v = torch.pca_lowrank(t - mean, q=min(k + 32, *x.shape), center=False, niter=8)
    return mean.numpy(), v[:, :k].numpy()


def pca_project(x: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """(N,D) -> (N,k) float32 coordinates in the fitted components."""
    return ((np.asarray(x, np.float32) - mean) @ components).astype(np.float32)


class RawMethod(Method):
    """The pixels themselves, (N,S*S) float32 in [0,1] (evaluation baseline)."""

    name = "raw"

    def features(self, images, sources) -> np.ndarray:
        return pixels(images)


class PcaMethod(Method):
    """PCA of the pixels with ``n_components`` components, fitted on the gallery (evaluation baseline)."""

    name = "pca"

    def __init__(self, n_components: int = PCA_COMPONENTS):
        self.n_components, self.pca = n_components, None

    def fit(self, images, sources) -> PcaMethod:
        self.pca = pca_fit(pixels(images), self.n_components)
        return self

    def features(self, images, sources) -> np.ndarray:
        if self.pca is None:
            raise ValueError("pca: fit() on the gallery first")
        return pca_project(pixels(images), *self.pca)
