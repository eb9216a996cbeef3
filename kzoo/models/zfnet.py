"""ZFNet (Zeiler & Fergus 2013, Fig. 3): AlexNet with a 7x7/2 first layer, a 5x5/2 second, and contrast normalisation."""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from kzoo.layers import LocalResponseNormalization
from kzoo.models import _common, alexnet
from kzoo.models._builder import register_family
from kzoo.models._registry import Family


@dataclass(frozen=True)
class ZFNetSpec:
    """The docstring line (one ZFNet; the layout is in `build_zfnet`)."""

    doc: str


ZFNET_SPECS = {
    "zfnet": ZFNetSpec("ZFNet (Zeiler & Fergus 2013), 62,357,608 parameters at 224x224x3 / 1000 classes."),
}


def _ceil_pool(name: str) -> list:
    """3x3/2 max pool with ceil rounding (55 -> 27 would floor; Fig. 3 has 110 -> 55, 26 -> 13).

    One extra row and column of zeros: the input follows a ReLU, so a zero
    never wins over the values it pads.
    """
    return [layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pad"),
            layers.MaxPooling2D(3, strides=2, name=name)]


def build_zfnet(opts: _common.Options, spec: ZFNetSpec, *, dropout: float = 0.5,
                sequential: bool = False) -> keras.Model:
    """Builds ZFNet: 96@7x7/2, pool, normalise, 256@5x5/2, pool, normalise, 384, 384, 256 @3x3, pool, 4096, 4096.

    At 224x224 the maps are 110, 55, 26, 13, 13, 13 and 6 pixels wide, as
    in the paper's Fig. 3 (a 1-pixel pad before the first convolution).
    Contrast normalisation is `kzoo.layers.LocalResponseNormalization` with
    AlexNet's constants (radius 2, k=2, alpha=1e-4, beta=0.75).

    Args:
        opts: The resolved common arguments.
        spec: The model's row of `ZFNET_SPECS`.
        dropout: Dropout rate before each 4096-unit dense layer.
        sequential: Return a `keras.Sequential` with the same layers (not
            with features_only or input_tensor).
    """
    trunk = [
        layers.ZeroPadding2D(1, name="conv1_pad"),
        layers.Conv2D(96, 7, strides=2, activation="relu", name="conv1"),
        *_ceil_pool("pool1"),
        LocalResponseNormalization(name="norm1"),
        layers.Conv2D(256, 5, strides=2, activation="relu", name="conv2"),
        *_ceil_pool("pool2"),
        LocalResponseNormalization(name="norm2"),
        layers.Conv2D(384, 3, padding="same", activation="relu", name="conv3"),
        layers.Conv2D(384, 3, padding="same", activation="relu", name="conv4"),
        layers.Conv2D(256, 3, padding="same", activation="relu", name="conv5"),
        layers.MaxPooling2D(3, strides=2, name="pool5"),
    ]
    return _common.linear_model(opts, trunk, stage_ends=(1, 4, 5, 11, 12), head=alexnet.head(opts, dropout),
                                sequential=sequential)


ZFNET = Family("zfnet", build_zfnet, paper=(
    "Zeiler & Fergus 2013, Visualizing and Understanding Convolutional Networks"),
    default_input=(224, 224, 3), min_size=63, stage_strides=(2, 4, 8, 16, 32), flatten_head=True)
globals().update(register_family(ZFNET, ZFNET_SPECS))
