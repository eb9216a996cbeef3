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
