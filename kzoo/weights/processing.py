"""ImageNet pre- and post-processing: `preprocess_input` from `records.PREPROCESSING`, `decode_predictions`."""

from __future__ import annotations

import json

import keras
import numpy as np

from kzoo.weights.loading import fetch
from kzoo.weights.records import CATEGORIES, PREPROCESSING, get_record


def preprocess_input(x, model_name: str, weights: str = "imagenet"):
    """Prepares RGB images in [0, 255] the way a model's pretrained weights expect.

    Args:
        x: Float array or tensor of shape (..., height, width, 3), RGB, 0-255.
        model_name: Registered model name, e.g. "resnet50".
        weights: The weights tag the model was loaded with.

    Returns:
        The preprocessed batch ("caffe": BGR, mean-subtracted; "tf": scaled to
        [-1, 1]; "torch": scaled to [0, 1] and normalised per channel).
    """
    steps = PREPROCESSING[get_record(model_name, weights).preprocessing]
    order, mean, std = list(steps.order), np.array(steps.mean, "float32"), np.array(steps.std, "float32")
    if isinstance(x, np.ndarray) or not hasattr(x, "shape"):  # NumPy in, NumPy out, as keras.applications'.
        x = np.asarray(x, "float32")
        return (x[..., order] - mean) / std
    return keras.ops.divide(keras.ops.subtract(keras.ops.take(keras.ops.cast(x, "float32"), order, axis=-1), mean), std)


def decode_predictions(preds, top: int = 5, categories: str = "imagenet1k"):
    """Turns ImageNet class probabilities into `(wnid, label, score)` lists.

    The class index is fetched like a weights file (cached in `$KERAS_HOME/models`).

    Args:
        preds: Array of shape (samples, 1000).
        top: How many classes to return per sample.
        categories: The label set.

    Returns:
        One list of `(wnid, label, score)` tuples per sample, best first.

    Raises:
        ValueError: If `preds` is not (samples, number of categories).
    """
    preds = np.asarray(preds)
    with open(fetch(CATEGORIES[categories])) as f:
        index = json.load(f)
    if preds.ndim != 2 or preds.shape[1] != len(index):
        raise ValueError(
            f"decode_predictions needs a batch of shape (samples, {len(index)}); got "
            f"{preds.shape}. Pass the output of a model built with include_top=True."
        )
    return [
        [(*index[str(i)], float(row[i])) for i in np.argsort(row)[::-1][:top]]
        for row in preds
    ]
