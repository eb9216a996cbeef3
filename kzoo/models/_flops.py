"""Multiply-add count of a built Keras model, for `model_info` and the README table.

Keras has no FLOP counter, and TensorFlow's graph profiler works only on the
TensorFlow backend and needs graph-mode tracing, so kzoo counts from layer
shapes. It counts the multiply-adds of convolutions and dense layers, the
convention behind the ResNet paper's "FLOPs" and torchvision's "GFLOPS" column
(ResNet-50: 3.8-4.1 G). Normalisation, pooling and activations are left out.
"""

from __future__ import annotations

import math

import keras


def count_macs(model: keras.Model) -> int:
    """Multiply-adds of one forward pass of one image.

    Args:
        model: A built Keras model with static spatial input shapes; nested
            models are counted through.

    Returns:
        The number of multiply-adds.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_macs(layer)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            total += _positions(layer.output.shape) * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            in_channels = layer.input.shape[-1] // layer.groups
            total += _positions(layer.output.shape) * kh * kw * in_channels
        elif isinstance(layer, keras.layers.Dense):
            total += _positions(layer.output.shape) * layer.input.shape[-1]
    return int(total)


def _positions(shape) -> int:
    """Number of output values per image: every dimension but the batch."""
    return math.prod(shape[1:])
