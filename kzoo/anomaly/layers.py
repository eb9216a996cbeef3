"""The detectors' own Keras layers: a memory bank's nearest-neighbour distance and per-position Mahalanobis distance.

Keras has neither. Both hold what `fit` learned as non-trainable weights, so
one `.keras` file carries the whole detector, and both compute with matrix
products and reductions every backend and the TFLite converter take: the
squared distance is `|x|^2 - 2 x.y + |y|^2`, never a pairwise difference
tensor.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kzoo")
class NearestNeighbourScore(keras.layers.Layer):
    """Distance from each feature vector to its nearest entries of a memory bank.

    Input `(batch, ..., dim)`; output `(batch, ...)`: the mean Euclidean
    distance to the `neighbours` nearest bank entries (1 for PatchCore's patch
    score, 2 for DN2's kNN). With `reweight=True` (PatchCore, Roth et al.
    2022, eq. 7) it also returns the image score: the largest patch score,
    scaled by `1 - softmax` of that patch's distances to the bank entries
    nearest its own nearest entry, as anomalib computes it.

    Args:
        bank_size, dim: The bank's shape (filled by `set_bank`).
        neighbours: Bank entries averaged (kNN) or, with `reweight`, the
            support set of the reweighting.
        reweight: Also return PatchCore's image score.
        chunk: Bank entries compared at once, to bound memory.
    """

    def __init__(self, bank_size: int, dim: int, neighbours: int = 1, reweight: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.bank_size, self.dim, self.neighbours, self.reweight = bank_size, dim, neighbours, reweight
        self.bank = self.add_weight(shape=(bank_size, dim), initializer="zeros", trainable=False, name="bank")

    def set_bank(self, bank):
        self.bank.assign(bank)

    def call(self, features):
        shape = ops.shape(features)
        flat = ops.reshape(features, (-1, self.dim))
        squared = (ops.sum(flat * flat, axis=1, keepdims=True) - 2.0 * ops.matmul(flat, ops.transpose(self.bank))
                   + ops.sum(self.bank * self.bank, axis=1)[None, :])
        squared = ops.maximum(squared, 0.0)
        k = max(self.neighbours if not self.reweight else 1, 1)
        nearest, index = ops.top_k(-squared, k=k)
        distance = ops.mean(ops.sqrt(-nearest), axis=1)
        patch_scores = ops.reshape(distance, shape[:-1])
        if not self.reweight:
            return patch_scores
        return patch_scores, self._reweighted(flat, squared, index[:, 0], shape)

    def _reweighted(self, flat, squared, nearest_index, shape):
        batch = shape[0]
        per_image = ops.reshape(ops.sqrt(ops.min(squared, axis=1)), (batch, -1))
        # The most anomalous patch of each image (top_k, not argmax: Keras' TF argmax uses bitwise ops for -0.0,
        # which TFLite lacks).
        worst_score, worst = ops.top_k(per_image, k=1)
        score, worst = worst_score[:, 0], worst[:, 0]
        positions = ops.cast(worst, "int32") + ops.arange(batch, dtype="int32") * ops.shape(per_image)[1]
        worst_features = ops.take(flat, positions, axis=0)  # (batch, dim)
        anchors = ops.take(self.bank, ops.take(nearest_index, positions, axis=0), axis=0)
        anchor_to_bank = (ops.sum(anchors * anchors, axis=1, keepdims=True)
                          - 2.0 * ops.matmul(anchors, ops.transpose(self.bank)) + ops.sum(self.bank * self.bank, axis=1)[None, :])
        _, support = ops.top_k(-anchor_to_bank, k=self.neighbours)  # (batch, neighbours)
        support_features = ops.take(self.bank, support, axis=0)  # (batch, neighbours, dim)
        distances = ops.sqrt(ops.maximum(ops.sum(ops.square(support_features - worst_features[:, None, :]), axis=2), 0.0))
        weight = 1.0 - ops.softmax(distances, axis=1)[:, 0]
        return weight * score

    def get_config(self):
        return {**super().get_config(), "bank_size": self.bank_size, "dim": self.dim,
                "neighbours": self.neighbours, "reweight": self.reweight}


@keras.saving.register_keras_serializable(package="kzoo")
class MahalanobisScore(keras.layers.Layer):
    """PaDiM's score: at every position, the Mahalanobis distance to that position's Gaussian.

    Input `(batch, height, width, dim)`; output `(batch, height, width)`:
    `sqrt((x - mean)^T inverse_covariance (x - mean))` with the mean and the
    inverse of (covariance + 0.01 I) learned per position by `fit`.
    """

    def __init__(self, height: int, width: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.height, self.width, self.dim = height, width, dim
        positions = height * width
        self.mean = self.add_weight(shape=(positions, dim), initializer="zeros", trainable=False, name="mean")
        self.inverse_covariance = self.add_weight(shape=(positions, dim, dim), initializer="zeros",
                                                  trainable=False, name="inverse_covariance")

    def set_gaussians(self, mean, inverse_covariance):
        self.mean.assign(mean)
        self.inverse_covariance.assign(inverse_covariance)

    def call(self, features):
        positions = self.height * self.width
        centred = ops.reshape(features, (-1, positions, self.dim)) - self.mean[None]
        centred = ops.transpose(centred, (1, 0, 2))  # (positions, batch, dim)
        projected = ops.matmul(centred, self.inverse_covariance)
        squared = ops.maximum(ops.sum(projected * centred, axis=2), 0.0)
        return ops.reshape(ops.transpose(ops.sqrt(squared), (1, 0)), (-1, self.height, self.width))

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width, "dim": self.dim}
