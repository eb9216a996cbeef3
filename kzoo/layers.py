"""kzoo's own Keras layers, where Keras has none: registered, so `.keras` files that use them load.

`keras.saving.load_model` finds them once this module is imported; importing
any kzoo model (`from kzoo import zfnet`) does that.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kzoo")
class LocalResponseNormalization(keras.layers.Layer):
    """Normalisation across neighbouring channels (Krizhevsky et al. 2012, section 3.3; ZFNet's contrast normalisation).

    `b_c = a_c / (bias + alpha * sum of a_j^2 over the depth_radius channels on each side of c) ** beta`,
    as `tf.nn.local_response_normalization` computes it. Keras has no such
    layer; this one is built from ops every backend and the TFLite converter
    take (pad, slice, add, power), so it needs no TensorFlow-only op.

    Args:
        depth_radius: Channels on each side that count (the window is 2r + 1).
        bias, alpha, beta: The formula's constants (the paper's k, alpha, beta).
    """

    def __init__(self, depth_radius: int = 2, bias: float = 2.0, alpha: float = 1e-4, beta: float = 0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta

    def call(self, inputs):
        radius, channels = self.depth_radius, inputs.shape[-1]
        squared = ops.pad(ops.square(inputs), [[0, 0], [0, 0], [0, 0], [radius, radius]])
        total = squared[..., 0:channels]
        for offset in range(1, 2 * radius + 1):
            total = total + squared[..., offset:offset + channels]
        return inputs / ops.power(self.bias + self.alpha * total, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "depth_radius": self.depth_radius, "bias": self.bias,
                "alpha": self.alpha, "beta": self.beta}


@keras.saving.register_keras_serializable(package="kzoo")
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras' BatchNormalization, with the batch statistics taken in one pass under mixed precision.

    The same layer, weights, config and inference as Keras'; only training
    under a float16 or bfloat16 policy differs. Keras takes the mean and then
    the variance around it (`ops.moments`: two passes over the activations,
    and more in the gradient); this takes the mean and the mean square
    together, as Flax's `BatchNorm` does, so a compiler (XLA) reads each
    activation once for both, forwards and backwards. They are summed in
    float32 after shifting by the moving mean (a constant: the gradients are
    the same), which keeps `E[x^2] - E[x]^2` from cancelling once the moving
    mean follows the batches. With bfloat16 activations the gradients differ
    from the exact ones as much as Keras' do (0.42 of their norm on a random
    ResNet-18, measured against float64); in float32 the one pass would
    differ 4 to 6 times more than Keras' two (measured: 4e-3 against 1e-3),
    so float32 keeps Keras' path, as do masks and `synchronized=True`. The
    tf_keras bridge (TFMOT) rebuilds it as tf_keras' BatchNormalization.
    """

    def _moments(self, inputs, mask):
        reduced = keras.backend.standardize_dtype(self.compute_dtype) in ("float16", "bfloat16")
        if not reduced or mask is not None or self.synchronized:
            return super()._moments(inputs, mask)
        broadcast = [1] * len(inputs.shape)
        broadcast[self.axis] = inputs.shape[self.axis]
        shift = ops.reshape(ops.stop_gradient(ops.cast(self.moving_mean, inputs.dtype)), broadcast)
        shifted = inputs - shift
        mean = ops.mean(shifted, axis=self._reduction_axes)
        mean_square = ops.mean(ops.square(shifted), axis=self._reduction_axes)
        variance = ops.maximum(mean_square - ops.square(mean), 0.0)
        return mean + ops.reshape(shift, (-1,)), variance
