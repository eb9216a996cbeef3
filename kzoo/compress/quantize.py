"""Quantization-aware training (QAT, and PQAT / CQAT that keep pruned zeros or clusters) and weight clustering.

Both run TFMOT on the model's tf_keras twin. A QAT model stays in tf_keras
(its fake-quantization wrappers have no Keras 3 form): hand it to
`kzoo.export.to_tflite`, which converts it to int8 without calibration data.
"""

from __future__ import annotations

import warnings

from kzoo.compress import _tune
from kzoo.tf_keras_bridge import to_keras, to_tf_keras
from kzoo._training_core import outputs_probabilities


def quantize_aware(model, train, *, epochs=1, preserve_sparsity=False, preserve_clusters=False,
                   validation=None, learning_rate=1e-4, verbose=0):
    """Fine-tunes with simulated int8 quantization (TFMOT's default 8-bit scheme).

    Conv-BatchNorm-ReLU are folded, residual `Add`s and global pooling are
    quantized as TFLite runs them. Layers TFMOT cannot quantize (e.g.
    `Rescaling`) stay in float; they are listed in a warning and by
    `float_layers(qat_model)`.

    Args:
        model: A built Keras 3 model (or a tf_keras one).
        train: Finite batched `(images, labels)` dataset.
        epochs: Fine-tuning epochs (0 only inserts the fake-quantization).
        preserve_sparsity: Keep the zeros of a pruned model (PQAT,
            `Default8BitPrunePreserveQuantizeScheme`).
        preserve_clusters: Keep the shared values of a clustered model (CQAT,
            `Default8BitClusterPreserveQuantizeScheme`); with
            `preserve_sparsity` too, its zeros as well.
        validation: Optional validation dataset.
        learning_rate: Adam's learning rate (QAT fine-tunes gently).
        verbose: Keras' progress-bar setting.

    Returns:
        The quantization-aware tf_keras model.
    """
    tfmot = _tune.import_tfmot()
    import tf_keras
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry,
    )

    twin = model if isinstance(model, tf_keras.Model) else to_tf_keras(model)
    from_logits = not outputs_probabilities(twin)
    registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()

    def quantizable(layer):
        # BatchNormalization after a convolution is folded into it by quantize_apply.
        return registry.supports(layer) or isinstance(layer, tf_keras.layers.BatchNormalization)

    def annotate(layer):
        return tfmot.quantization.keras.quantize_annotate_layer(layer) if quantizable(layer) else layer

    with tfmot.quantization.keras.quantize_scope():
        annotated = tf_keras.models.clone_model(twin, clone_function=annotate)
        quantized = tfmot.quantization.keras.quantize_apply(annotated, scheme=_scheme(preserve_sparsity,
                                                                                      preserve_clusters))
    left_float = float_layers(quantized)
    if left_float:
        warnings.warn(f"QAT left these layers in float (TFMOT cannot quantize them): {left_float}.", stacklevel=2)
    _tune.fine_tune(quantized, train, from_logits=from_logits, epochs=epochs, learning_rate=learning_rate,
                    validation=validation, verbose=verbose)
    return quantized


def _scheme(preserve_sparsity, preserve_clusters):
    tfmot = _tune.import_tfmot()

    combine = tfmot.experimental.combine
    if preserve_clusters:
        return combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=preserve_sparsity)
    if preserve_sparsity:
        return combine.Default8BitPrunePreserveQuantizeScheme()
    return tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()


def float_layers(qat_model) -> list[str]:
    """Names of the layers of a QAT model that compute in float (not wrapped for quantization)."""
    _tune.import_tfmot()
    from tensorflow_model_optimization.python.core.quantization.keras import quantize_layer, quantize_wrapper

    quantizing = (quantize_wrapper.QuantizeWrapper, quantize_layer.QuantizeLayer)
    return [layer.name for layer in qat_model.layers if _has_compute(layer) and not isinstance(layer, quantizing)]


def cluster(model, train, *, clusters=16, epochs=1, exclude=(), validation=None, learning_rate=1e-4, verbose=0):
    """Weight clustering: each Conv/Dense kernel keeps `clusters` distinct values (TFMOT).

    Args:
        model: A built Keras 3 model.
        train: Finite batched `(images, labels)` dataset for fine-tuning.
        clusters: Distinct values per kernel (16 is TFMOT's common choice; 2 to 256).
        epochs: Fine-tuning epochs, moving the centroids.
        exclude: Names of layers left unclustered.
        validation, learning_rate, verbose: As in `prune`.

    Returns:
        A Keras 3 model whose kernels hold at most `clusters` values each.
    """
    tfmot = _tune.import_tfmot()
    import tf_keras

    if isinstance(clusters, bool) or not isinstance(clusters, int) or not 2 <= clusters <= 256:
        raise ValueError(f"clusters={clusters!r} must be an integer from 2 to 256, e.g. 16.")
    twin = to_tf_keras(model)
    centroids = tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS

    def wrap(layer):
        if layer.name in exclude or not isinstance(layer, (tf_keras.layers.Conv2D, tf_keras.layers.Dense)):
            return layer
        return tfmot.clustering.keras.cluster_weights(layer, number_of_clusters=clusters,
                                                      cluster_centroids_init=centroids)

    wrapped = tf_keras.models.clone_model(twin, clone_function=wrap)
    _tune.fine_tune(wrapped, train, from_logits=not outputs_probabilities(model), epochs=epochs,
                    learning_rate=learning_rate, validation=validation, verbose=verbose)
    return to_keras(tfmot.clustering.keras.strip_clustering(wrapped))


def _has_compute(layer) -> bool:
    return type(layer).__name__ not in ("InputLayer", "Dropout")
