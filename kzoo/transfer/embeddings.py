"""Embeddings from a pretrained backbone: a feature extractor, features for arrays or datasets, a linear probe."""

from __future__ import annotations

import keras
import numpy as np

from kzoo.data import checks
from kzoo.transfer.model import HEAD_PREFIX, feature_extractor


def features(backbone, data, *, weights="imagenet", input_shape=None, pooling: str = "avg",
             preprocessing="auto"):
    """Pooled embeddings of images, for linear probes and nearest-neighbour search.

    Args:
        backbone: A registry name (built with `feature_extractor` and the
            other arguments), a model from `build` (its `head_pool` output),
            or any Keras model (its output).
        data: A batched dataset of images or of `(images, labels)`, an
            array of images, or a tuple `(images, labels)` of arrays; images
            in [0, 1] or uint8 0-255, as `kzoo.data.checks` takes them.
        weights, input_shape, pooling, preprocessing: For a registry name, as in `build`.

    Returns:
        The embeddings, shape (images, dimensions), float32; for labelled
        data, the tuple `(embeddings, labels)` with integer labels, read in
        the same pass (so a shuffling dataset stays aligned).

    Raises:
        ValueError: For images that do not fit the backbone or lie outside
            the contract, and labels that are not class ids.
    """
    extractor = _extractor_for(backbone, weights, input_shape, pooling, preprocessing)
    embeddings, labels = [], []
    for images, batch_labels in checks.batches(data, "data"):
        checks.fits_model(images.shape[1:], extractor.inputs[0].shape[1:], "data")
        many = len(images) > 256  # A whole array: predict in batches.
        embedded = extractor.predict(images, batch_size=256, verbose=0) if many else extractor.predict_on_batch(images)
        embeddings.append(np.asarray(embedded, dtype="float32"))
        if batch_labels is not None:
            labels.append(batch_labels)
    embeddings = np.concatenate(embeddings)
    return (embeddings, np.concatenate(labels).astype("int64")) if labels else embeddings


def linear_probe(backbone, train, test, *, weights="imagenet", input_shape=None, pooling: str = "avg",
                 preprocessing="auto", regularization: float = 1.0) -> dict:
    """Fits a logistic regression on frozen embeddings: the standard measure of a backbone's features.

    Args:
        backbone, weights, input_shape, pooling, preprocessing: As in `features`.
        train, test: Labelled batched datasets, or `(images, labels)` arrays.
        regularization: Inverse L2 strength (scikit-learn's `C`).

    Returns:
        `{"accuracy", "train_accuracy", "num_train", "num_test", "dimensions",
        "classifier"}`; the classifier is a fitted scikit-learn pipeline
        (standardisation, logistic regression) on the embeddings.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    extractor = _extractor_for(backbone, weights, input_shape, pooling, preprocessing)
    train_x, train_y = features(extractor, train)
    test_x, test_y = features(extractor, test)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=regularization, max_iter=2000))
    classifier.fit(train_x, train_y)
    return {
        "accuracy": float(classifier.score(test_x, test_y)),
        "train_accuracy": float(classifier.score(train_x, train_y)),
        "num_train": len(train_y),
        "num_test": len(test_y),
        "dimensions": int(train_x.shape[1]),
        "classifier": classifier,
    }


def _extractor_for(backbone, weights, input_shape, pooling, preprocessing) -> keras.Model:
    if not isinstance(backbone, keras.Model):
        return feature_extractor(backbone, weights=weights, input_shape=input_shape, pooling=pooling,
                                 preprocessing=preprocessing)
    names = {layer.name for layer in backbone.layers}
    if f"{HEAD_PREFIX}pool" in names and f"{HEAD_PREFIX}predictions" in names:
        return keras.Model(backbone.input, backbone.get_layer(f"{HEAD_PREFIX}pool").output)
    return backbone
