"""VGG (Simonyan & Zisserman 2014), configurations A, B, D and E, with or without BN.

Layer names and order follow keras.applications (`block1_conv1`, ...,
`fc1`, `fc2`, `predictions`), so its ImageNet weight files load as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from kzoo.layers import BatchNormalization
from kzoo.models import _common
from kzoo.models._builder import register_family
from kzoo.models._registry import Family


@dataclass(frozen=True)
class VGGSpec:
    """Convolutions per block (every block ends in a 2x2 max pool), BatchNorm or not, and the docstring line."""

    convs_per_block: tuple[int, ...]
    batch_norm: bool
    doc: str


VGG_SPECS = {
    "vgg11": VGGSpec((1, 1, 2, 2, 2), False, "VGG-11 (configuration A), 132,863,336 parameters."),
    "vgg13": VGGSpec((2, 2, 2, 2, 2), False, "VGG-13 (configuration B), 133,047,848 parameters."),
    "vgg16": VGGSpec((2, 2, 3, 3, 3), False, "VGG-16 (configuration D), as keras.applications.VGG16; ImageNet weights."),
    "vgg19": VGGSpec((2, 2, 4, 4, 4), False, "VGG-19 (configuration E), as keras.applications.VGG19; ImageNet weights."),
    "vgg11_bn": VGGSpec((1, 1, 2, 2, 2), True, "VGG-11 with BatchNormalization after each convolution (torchvision's vgg11_bn)."),
    "vgg13_bn": VGGSpec((2, 2, 2, 2, 2), True, "VGG-13 with BatchNormalization after each convolution (torchvision's vgg13_bn)."),
    "vgg16_bn": VGGSpec((2, 2, 3, 3, 3), True, "VGG-16 with BatchNormalization after each convolution (torchvision's vgg16_bn)."),
    "vgg19_bn": VGGSpec((2, 2, 4, 4, 4), True, "VGG-19 with BatchNormalization after each convolution (torchvision's vgg19_bn)."),
}
VGG_WIDTHS = (64, 128, 256, 512, 512)


def build_vgg(opts: _common.Options, spec: VGGSpec, *, dropout: float = 0.5, sequential: bool = False) -> keras.Model:
    """Builds a VGG network from its spec row.

    Args:
        opts: The resolved common arguments.
        spec: The model's row of `VGG_SPECS`.
        dropout: Dropout rate after fc1 and fc2 (the paper's 0.5; inactive at
            inference, so outputs match keras.applications').
        sequential: Return a `keras.Sequential` with the same layers (not
            with features_only or input_tensor).
    """
    trunk, stage_ends = [], []
    for block, (convs, width) in enumerate(zip(spec.convs_per_block, VGG_WIDTHS), start=1):
        prefix = f"block{block}"
        for conv in range(1, convs + 1):
            if spec.batch_norm:
                trunk += [
                    layers.Conv2D(width, 3, padding="same", name=f"{prefix}_conv{conv}"),
                    # torchvision's BN settings, so its vgg*_bn weights can be ported.
                    BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{prefix}_bn{conv}"),
                    layers.ReLU(name=f"{prefix}_relu{conv}"),
                ]
            else:
                trunk.append(
                    layers.Conv2D(width, 3, padding="same", activation="relu", name=f"{prefix}_conv{conv}")
                )
        trunk.append(layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool"))
        stage_ends.append(len(trunk) - 1)
    if opts.include_top:
        head = [
            layers.Flatten(name="flatten"),
            layers.Dense(4096, activation="relu", name="fc1"),
            layers.Dropout(dropout, name="fc1_dropout"),
            layers.Dense(4096, activation="relu", name="fc2"),
            layers.Dropout(dropout, name="fc2_dropout"),
            _common.classifier(opts),
        ]
    else:
        head = _common.pooling_layers(opts.pooling)
    return _common.linear_model(opts, trunk, stage_ends, head, sequential)


VGG = Family("vgg", build_vgg, paper=(
    "Simonyan & Zisserman 2014, Very Deep Convolutional Networks for Large-Scale Image Recognition"),
    default_input=(224, 224, 3), min_size=32, stage_strides=(2, 4, 8, 16, 32), flatten_head=True)
globals().update(register_family(VGG, VGG_SPECS))
