"""LeNet-5 (LeCun et al. 1998): two conv/pool stages and three dense layers."""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from kzoo.models import _common
from kzoo.models._builder import register_family
from kzoo.models._registry import Family


@dataclass(frozen=True)
class LeNetSpec:
    """Filters of the two 5x5 convolutions, units of the two hidden dense layers, and the docstring line."""

    conv_filters: tuple[int, int]
    dense_units: tuple[int, int]
    doc: str


LENET_SPECS = {
    "lenet5": LeNetSpec((6, 16), (120, 84), "LeNet-5 for 28x28x1 digits, 10 classes, 61,706 parameters."),
}


def build_lenet(opts: _common.Options, spec: LeNetSpec, *, classic: bool = False,
                sequential: bool = False) -> keras.Model:
    """Builds LeNet-5: conv 6@5x5, pool, conv 16@5x5, pool, dense 120, 84, classes.

    The first convolution is padded "same", so 28x28 MNIST digits give the
    paper's 32x32 geometry (61,706 parameters for 10 classes).

    Args:
        opts: The resolved common arguments.
        spec: The model's row of `LENET_SPECS`.
        classic: The paper's tanh and average pooling; the default is ReLU and
            max pooling, which trains faster.
        sequential: Return a `keras.Sequential` with the same layers (not
            with features_only or input_tensor).
    """
    activation = "tanh" if classic else "relu"
    pool = layers.AveragePooling2D if classic else layers.MaxPooling2D
    first, second = spec.conv_filters
    trunk = [
        layers.Conv2D(first, 5, padding="same", activation=activation, name="conv1"),
        pool(2, name="pool1"),
        layers.Conv2D(second, 5, activation=activation, name="conv2"),
        pool(2, name="pool2"),
    ]
    if opts.include_top:
        head = [
            layers.Flatten(name="flatten"),
            layers.Dense(spec.dense_units[0], activation=activation, name="fc1"),
            layers.Dense(spec.dense_units[1], activation=activation, name="fc2"),
            _common.classifier(opts),
        ]
    else:
        head = _common.pooling_layers(opts.pooling)
    return _common.linear_model(opts, trunk, stage_ends=(1, 3), head=head, sequential=sequential)


LENET = Family("lenet", build_lenet, paper=(
    "LeCun et al. 1998, Gradient-Based Learning Applied to Document Recognition"),
    default_input=(28, 28, 1), min_size=12, stage_strides=(2, 4), flatten_head=True, default_classes=10)
globals().update(register_family(LENET, LENET_SPECS))
