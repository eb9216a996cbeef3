"""Greedy k-centre coreset selection (PatchCore's memory-bank subsampling), bounded in memory and time.

anomalib does this in torch over the full feature dimension, and its users
report hours-long or hung runs on CPUs; here the features are first
projected to 128 dimensions (a Gaussian random projection, as PatchCore's
paper does with its sparse one), and each step updates the minimum distances
in float32 over chunks of patches, so memory stays O(patches x 128).
scikit-learn has random projections but no k-centre greedy selection, hence
this module.
"""

from __future__ import annotations

import numpy as np

PROJECTED_DIM = 128
CHUNK = 65536


def greedy_k_center(features: np.ndarray, count: int, *, seed: int = 0, projected_dim: int = PROJECTED_DIM) -> np.ndarray:
    """Indices of `count` rows of `features` that cover them: each next pick is the row farthest from those picked.

    Args:
        features: `(n, dim)` array.
        count: Rows to keep (all when `count >= n`).
        seed: Seeds the projection and the first pick: a seed repeats the selection exactly.
        projected_dim: Dimension of the random projection the distances are measured in.

    Returns:
        Sorted int64 indices.
    """
    features = np.asarray(features, dtype="float32")
    n = len(features)
    if count >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if features.shape[1] > projected_dim:
        projection = rng.normal(0, 1 / np.sqrt(projected_dim), (features.shape[1], projected_dim)).astype("float32")
        features = features @ projection
    squared_norms = np.einsum("nd,nd->n", features, features)
    picked = np.empty(count, dtype=np.int64)
    picked[0] = rng.integers(n)
    nearest = np.full(n, np.inf, dtype="float32")
    for step in range(count):
        centre = features[picked[step]]
        for start in range(0, n, CHUNK):
            block = slice(start, start + CHUNK)
            distance = squared_norms[block] - 2.0 * features[block] @ centre + squared_norms[picked[step]]
            np.minimum(nearest[block], distance, out=nearest[block])
        if step + 1 < count:
            picked[step + 1] = int(np.argmax(nearest))
    return np.sort(picked)
