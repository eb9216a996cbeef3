"""Which Keras backend runs kzoo, and the one clear error for the parts that need TensorFlow.

The builders, weights, registry, `model_info`, `transfer` and `training.fit`
on arrays or a `keras.utils.PyDataset` are plain Keras and run on every
backend (TensorFlow, JAX, PyTorch), also where TensorFlow is not installed.
tf.data pipelines (`kzoo.data`) need TensorFlow installed and feed any
backend; TFLite export, TFMOT compression, tf.distribute strategies and the
attacks' in-graph crafting need Keras' TensorFlow backend. Those modules ask
here when they are first used.
"""

from __future__ import annotations

import keras


class TensorFlowRequiredError(ImportError):
    """A part of kzoo that needs TensorFlow (installed, or as Keras' backend) was used without it."""


def name() -> str:
    """The Keras backend of this process: "tensorflow", "jax", "torch" or "numpy"."""
    return keras.backend.backend()


def tensorflow(feature: str, *, backend: bool = False):
    """Imports TensorFlow for `feature`, or raises the error that says what it needs.

    Args:
        feature: What the user called, in their terms (e.g. "kzoo.export.to_tflite").
        backend: The feature also needs Keras' TensorFlow backend (it runs
            TensorFlow on the model's own tensors and variables).

    Returns:
        The `tensorflow` module.

    Raises:
        TensorFlowRequiredError: Without TensorFlow, or on another backend when `backend`.
    """
    if backend and name() != "tensorflow":
        raise TensorFlowRequiredError(
            f"{feature} needs Keras' TensorFlow backend, and this process runs {name()!r}. Start Python with "
            "KERAS_BACKEND=tensorflow (pip install 'kzoo[tensorflow]'); the builders, weights, transfer and "
            "training.fit on arrays run on every backend.")
    try:
        import tensorflow as tf
    except ImportError as error:
        raise TensorFlowRequiredError(
            f"{feature} needs TensorFlow, which cannot be imported here ({error}): pip install "
            f"'kzoo[tensorflow]'. On {name()!r} without it, train from NumPy arrays or a keras.utils.PyDataset."
        ) from error
    return tf


def accelerator() -> str:
    """"gpu", "tpu" or "cpu": what JAX or PyTorch computes on by default ("cpu" on other backends; on TensorFlow,
    `kzoo.distribute` asks tf.config and its strategies)."""
    if name() == "jax":
        import jax

        return {"cuda": "gpu", "rocm": "gpu"}.get(jax.default_backend(), jax.default_backend())
    if name() == "torch":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    return "cpu"
