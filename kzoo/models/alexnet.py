"""AlexNet (Krizhevsky et al. 2012), the single-tower layout torchvision uses."""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from kzoo.models import _common
from kzoo.models._builder import register_family
from kzoo.models._registry import Family


@dataclass(frozen=True)
class AlexNetSpec:
    """The docstring line (one AlexNet; the layout is in `build_alexnet`)."""

    doc: str


ALEXNET_SPECS = {
    "alexnet": AlexNetSpec("AlexNet, single tower, 61,100,840 parameters at 224x224x3 / 1000 classes."),
}


def build_alexnet(opts: _common.Options, spec: AlexNetSpec, *, dropout: float = 0.5,
                  sequential: bool = False) -> keras.Model:
    """Builds AlexNet: convs 64-192-384-256-256, dense 4096-4096 with dropout.

    Padding follows torchvision (explicit 2-pixel pad before the stride-4
    convolution), so a 224x224 input ends in a 6x6x256 map and the model has
    61,100,840 parameters for 1000 classes. Other sizes change only the
    first dense layer, as with keras.applications' VGG.

    Args:
        opts: The resolved common arguments.
        spec: The model's row of `ALEXNET_SPECS`.
        dropout: Dropout rate before each 4096-unit dense layer.
        sequential: Return a `keras.Sequential` with the same layers (not
            with features_only or input_tensor).
    """
    trunk = [
        layers.ZeroPadding2D(2, name="conv1_pad"),
        layers.Conv2D(64, 11, strides=4, activation="relu", name="conv1"),
        layers.MaxPooling2D(3, strides=2, name="pool1"),
        layers.Conv2D(192, 5, padding="same", activation="relu", name="conv2"),
        layers.MaxPooling2D(3, strides=2, name="pool2"),
        layers.Conv2D(384, 3, padding="same", activation="relu", name="conv3"),
        layers.Conv2D(256, 3, padding="same", activation="relu", name="conv4"),
        layers.Conv2D(256, 3, padding="same", activation="relu", name="conv5"),
        layers.MaxPooling2D(3, strides=2, name="pool5"),
    ]
    return _common.linear_model(opts, trunk, stage_ends=(2, 4, 8), head=head(opts, dropout), sequential=sequential)


def head(opts: _common.Options, dropout: float) -> list:
    """AlexNet's classifier (also ZFNet's): flatten, dropout, 4096, dropout, 4096, classes; or the pooling."""
    if not opts.include_top:
        return _common.pooling_layers(opts.pooling)
    return [
        layers.Flatten(name="flatten"),
        layers.Dropout(dropout, name="fc6_dropout"),
        layers.Dense(4096, activation="relu", name="fc6"),
        layers.Dropout(dropout, name="fc7_dropout"),
        layers.Dense(4096, activation="relu", name="fc7"),
        _common.classifier(opts),
    ]


ALEXNET = Family("alexnet", build_alexnet, paper=(
    "Krizhevsky et al. 2012, ImageNet Classification with Deep CNNs; "
    "single-tower layout of Krizhevsky 2014, One weird trick"),
    default_input=(224, 224, 3), min_size=63, stage_strides=(8, 16, 32), flatten_head=True)
globals().update(register_family(ALEXNET, ALEXNET_SPECS))
