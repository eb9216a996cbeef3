"""NumPy `(images, labels)` arrays as a `keras.utils.PyDataset`: how `training.fit` batches arrays off TensorFlow.

On the TensorFlow backend arrays go through `kzoo.data.from_arrays` (tf.data);
JAX and PyTorch take this instead, so training needs no TensorFlow. The
arrays are checked once, as `from_arrays` checks them, and reshuffled every
epoch from `seed`.
"""

from __future__ import annotations

import copy

import keras
import numpy as np

from kzoo.data import checks


class ArrayBatches(keras.utils.PyDataset):
    """Batches of checked `(images, labels)` arrays, float32 images in [0, 1] and int32 class ids.

    Args:
        images: (n, height, width[, channels]) uint8 0-255 or floats in [0, 1].
        labels: Class ids, shape (n,).
        batch_size: Images per batch (the last batch may be smaller).
        shuffle: Reshuffle the order every epoch.
        seed: Seeds the shuffling (two runs with the same seed see the same batches).
        num_classes: Class ids must be below it; default `max(labels) + 1`.
        one_hot: Give one-hot float32 labels (label smoothing needs them).

    Raises:
        ValueError: As `kzoo.data.from_arrays`, for arrays that are not images and class ids.
    """

    def __init__(self, images, labels, *, batch_size: int = 32, shuffle: bool = True, seed: int | None = None,
                 num_classes: int | None = None, one_hot: bool = False):
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer.")
        self.images, self.labels = checks.image_label_arrays(images, labels, "training.fit",
                                                             num_classes=num_classes)
        self.num_classes = num_classes or int(self.labels.max()) + 1
        self.batch_size, self.shuffle, self.one_hot = batch_size, shuffle, one_hot
        self._random = np.random.default_rng(seed)
        self._order = self._random.permutation(len(self.images)) if shuffle else np.arange(len(self.images))

    def with_one_hot(self) -> ArrayBatches:
        """The same batches (same order and seed state) with one-hot labels."""
        twin = copy.copy(self)
        twin.one_hot = True
        return twin

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index):
        rows = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        images = self.images[rows]
        images = images.astype("float32") / 255.0 if images.dtype == np.uint8 else images.astype("float32")
        labels = self.labels[rows].astype("int32")
        if self.one_hot:
            labels = np.eye(self.num_classes, dtype="float32")[labels]
        return images, labels

    def on_epoch_end(self):
        if self.shuffle:
            self._order = self._random.permutation(len(self.images))
