"""Digit canvases: a segmentation task made from any labelled digits (MNIST, scikit-learn's), offline.

Each canvas holds a few digits at random places; each pixel of a digit's ink
is labelled with its digit's class + 1, everything else 0 (background): 11
classes for ten digits. `bench/segmentation.py` and the recipe's `--quick`
run train and measure on them.
"""

from __future__ import annotations

import numpy as np

INK = 0.5  # A digit's pixel is labelled where its ink reaches this (of 1).


def digit_canvases(images, labels, count: int, *, size: int = 64, digits=(1, 3), seed: int = 0):
    """Makes `count` canvases and their masks from digit images.

    Args:
        images: (n, height, width) or (n, height, width, 1) digits, uint8 0-255 or floats in [0, 1].
        labels: (n,) their classes, 0 to 9.
        count: Canvases to make.
        size: Their height and width (at least the digits').
        digits: The fewest and most digits per canvas.
        seed: Repeats the same canvases.

    Returns:
        `(canvases, masks)`: uint8 (count, size, size, 1) and int32 (count, size, size) with ids 0 (background)
        and digit + 1.
    """
    images = np.asarray(images)
    images = images[..., 0] if images.ndim == 4 else images
    images = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    height, width = images.shape[1:]
    if size < max(height, width):
        raise ValueError(f"size={size} is smaller than the digits ({height}x{width}); give size >= {max(height, width)}.")
    rng = np.random.default_rng(seed)
    canvases = np.zeros((count, size, size), np.float32)
    masks = np.zeros((count, size, size), np.int32)
    for canvas, mask in zip(canvases, masks):
        for index in rng.integers(0, len(images), rng.integers(digits[0], digits[1] + 1)):
            top, left = rng.integers(0, size - height + 1), rng.integers(0, size - width + 1)
            digit = images[index]
            window = (slice(top, top + height), slice(left, left + width))
            canvas[window] = np.maximum(canvas[window], digit)
            mask[window] = np.where(digit >= INK, int(labels[index]) + 1, mask[window])
    return np.round(canvases[..., None] * 255).astype(np.uint8), masks


CLASS_NAMES = ("background",) + tuple(str(digit) for digit in range(10))
