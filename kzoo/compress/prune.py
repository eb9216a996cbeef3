"""Magnitude pruning with TFMOT on Keras 3 models, and a sparsity report.

The model crosses the bridge to tf_keras, `prune_low_magnitude` wraps its
Conv2D and Dense layers, `UpdatePruningStep` drives the schedule while it
fine-tunes, `strip_pruning` removes the wrappers, and it comes back to Keras 3.
"""

from __future__ import annotations

import gzip
import io

import numpy as np

from kzoo.compress import _tune
from kzoo.tf_keras_bridge import to_keras, to_tf_keras
from kzoo._training_core import outputs_probabilities

SCHEDULES = ("polynomial", "constant")
STRUCTURES = (None, "2:4")


def prune(model, train, *, target_sparsity=0.8, epochs=2, schedule="polynomial", structure=None,
          exclude=(), validation=None, learning_rate=1e-3, verbose=0):
    """Prunes the smallest weights away while fine-tuning (TFMOT magnitude pruning).

    Args:
        model: A built Keras 3 model (any the bridge translates).
        train: Finite batched `(images, labels)` dataset for fine-tuning.
        target_sparsity: Fraction of each pruned kernel set to zero, in [0, 1).
        epochs: Fine-tuning epochs (at least 1). A "polynomial" schedule
            reaches the target after two thirds of the steps; the rest recover.
        schedule: "polynomial" (TFMOT's PolynomialDecay from 0) or "constant".
        structure: None (any weights) or "2:4" (two of every four along the
            input channels, the pattern sparse tensor cores run; the sparsity is 50%).
        exclude: Names of layers left dense (e.g. the classifier).
        validation: Optional validation dataset.
        learning_rate: Adam's learning rate for the fine-tuning.
        verbose: Keras' progress-bar setting.

    Returns:
        A Keras 3 model with the pruned weights (the zeros are real zeros;
        `sparsity_report` counts them).

    Raises:
        ValueError: For a bad argument, or an `exclude` name the model lacks.
    """
    tfmot = _tune.import_tfmot()

    if not 0.0 <= target_sparsity < 1.0:
        raise ValueError(f"target_sparsity={target_sparsity!r} must be in [0, 1), e.g. 0.8 for 80% zeros.")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r} is not one of {SCHEDULES}.")
    if structure not in STRUCTURES:
        raise ValueError(f"structure={structure!r} is not one of {STRUCTURES}.")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r} must be a positive integer: pruning happens while fine-tuning.")
    _check_names(model, exclude)
    steps = _tune.steps_in(train) * epochs
    if structure == "2:4":
        pruning_schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1)
    else:
        pruning_schedule = _schedule(tfmot, schedule, target_sparsity, steps)
    twin = to_tf_keras(model)
    prunable = (tfmot.sparsity.keras.PrunableLayer,)

    def wrap(layer):
        if layer.name in exclude or not _prunable(layer, prunable):
            return layer
        return tfmot.sparsity.keras.prune_low_magnitude(
            layer, pruning_schedule=pruning_schedule, sparsity_m_by_n=(2, 4) if structure else None
        )

    import tf_keras

    # clone_function gets the twin's own layers (with their weights) and wraps them.
    wrapped = tf_keras.models.clone_model(twin, clone_function=wrap)
    _tune.fine_tune(
        wrapped, train, from_logits=not outputs_probabilities(model), epochs=epochs, learning_rate=learning_rate,
        validation=validation, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()], verbose=verbose,
    )
    return to_keras(tfmot.sparsity.keras.strip_pruning(wrapped))


def _schedule(tfmot, schedule, target, steps):
    # TFMOT prunes every `frequency` steps up to `end_step`; end on a multiple of
    # the frequency, so the last update reaches the target exactly.
    frequency = max(1, steps // 30)
    end_step = max(frequency, (2 * steps // 3) // frequency * frequency)
    if schedule == "constant":
        return tfmot.sparsity.keras.ConstantSparsity(target, begin_step=0, frequency=frequency)
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=target, begin_step=0, end_step=end_step, frequency=frequency
    )


def _prunable(layer, prunable) -> bool:
    _tune.import_tfmot()
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    return isinstance(layer, prunable) or (
        prune_registry.PruneRegistry.supports(layer) and bool(prune_registry.PruneRegistry._weight_names(layer))
    )


def _check_names(model, names):
    if isinstance(names, str):
        raise ValueError(f"exclude={names!r} must be a list of layer names, e.g. [{names!r}].")
    known = {layer.name for layer in model.layers}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"No layers named {unknown} in model {model.name!r}; its layers: {sorted(known)}.")


def sparsity_report(model) -> dict:
    """Zeros per kernel and in total, and the gzip size of the weights (dense and as they are).

    Args:
        model: A Keras 3 or tf_keras model.

    Returns:
        `{"layers": {name: sparsity}, "sparsity": fraction of kernel weights
        that are zero, "weights_bytes", "gzip_bytes"}`; only Conv and Dense
        kernels count, as those are what pruning prunes.
    """
    layers, zeros, total, arrays = {}, 0, 0, []
    for layer in model.layers:
        for weight in layer.weights:
            value = np.asarray(weight.numpy() if hasattr(weight, "numpy") else weight)
            arrays.append(value)
            if _is_kernel(weight):
                layer_zeros = int(np.sum(value == 0))
                layers[layer.name] = round(layer_zeros / value.size, 4)
                zeros, total = zeros + layer_zeros, total + value.size
    raw = b"".join(a.astype(np.float32).tobytes() for a in arrays)
    return {
        "layers": layers,
        "sparsity": round(zeros / total, 4) if total else 0.0,
        "weights_bytes": len(raw),
        "gzip_bytes": gzip_size(raw),
    }


def _is_kernel(weight) -> bool:
    name = getattr(weight, "path", None) or weight.name
    return name.split("/")[-1].split(":")[0] in ("kernel", "depthwise_kernel")


def gzip_size(payload: bytes) -> int:
    """Bytes after gzip at the highest level (how a sparse file shrinks in an app download)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9, mtime=0) as f:
        f.write(payload)
    return len(buffer.getvalue())
