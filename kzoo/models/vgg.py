"""VGG (Simonyan & Zisserman 2014), configurations A, B, D and E, with or without BN.

Layer names and order follow keras.applications (`block1_conv1`, ...,
`fc1`, `fc2`, `predictions`), so its ImageNet weight files load as they are.
"""

from __future__ import annotations

import keras
from keras import layers

from kzoo.models import _common
from kzoo.models._registry import Family, register_model

# Convolutions per block; every block ends in a 2x2 max pool.
VGG_CONVS_PER_BLOCK = {
    "vgg11": (1, 1, 2, 2, 2),  # configuration A
    "vgg13": (2, 2, 2, 2, 2),  # B
    "vgg16": (2, 2, 3, 3, 3),  # D
    "vgg19": (2, 2, 4, 4, 4),  # E
}
VGG_WIDTHS = (64, 128, 256, 512, 512)


def build_vgg(
    variant: str,
    *,
    dropout: float = 0.5,
    sequential: bool = False,
    include_top: bool = True,
    weights: str | None = None,
    input_tensor=None,
    input_shape=None,
    pooling: str | None = None,
    num_classes: int | None = None,
    classes: int | None = None,
    classifier_activation="softmax",
    name: str | None = None,
    features_only: bool = False,
    out_indices=None,
) -> keras.Model:
    """Builds a VGG network; a `_bn` suffix adds BatchNormalization after each conv.

    Args:
        variant: Registered model name, e.g. "vgg16" or "vgg16_bn".
        dropout: Dropout rate after fc1 and fc2 (the paper's 0.5; inactive at
            inference, so outputs match keras.applications').
        sequential: Return a `keras.Sequential` with the same layers.
        include_top: Keep the three dense layers.
        weights: None, "imagenet" (vgg16, vgg19), or the path to a weights file.
        input_tensor: Optional Keras tensor to use as the input.
        input_shape: (height, width, channels); default (224, 224, 3); at least
            32x32. With ImageNet weights and include_top=True, only 224x224x3.
        pooling: With include_top=False: None, "avg" or "max" global pooling.
        num_classes: Number of classes (default 1000); `classes` is an alias.
        classifier_activation: Activation of the last layer; None for logits.
        name: Model name; defaults to the variant.
        features_only: Return the five block outputs (stride 2, 4, 8, 16, 32).
        out_indices: Which blocks to return with features_only.

    Returns:
        A `keras.Model`.
    """
    opts = _common.resolve_options(
        variant,
        include_top=include_top, weights=weights, input_tensor=input_tensor,
        input_shape=input_shape, pooling=pooling, num_classes=num_classes,
        classes=classes, classifier_activation=classifier_activation, name=name,
        features_only=features_only, out_indices=out_indices, flatten_head=True,
    )
    batch_norm = variant.endswith("_bn")
    trunk, stage_ends = [], []
    for block, (convs, width) in enumerate(
        zip(VGG_CONVS_PER_BLOCK[variant.removesuffix("_bn")], VGG_WIDTHS), start=1
    ):
        prefix = f"block{block}"
        for conv in range(1, convs + 1):
            if batch_norm:
                trunk += [
                    layers.Conv2D(width, 3, padding="same", name=f"{prefix}_conv{conv}"),
                    # torchvision's BN settings, so its vgg*_bn weights can be ported.
                    layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{prefix}_bn{conv}"),
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


VGG = Family(
    name="vgg",
    paper="Simonyan & Zisserman 2014, Very Deep Convolutional Networks for "
    "Large-Scale Image Recognition",
    builder=build_vgg,
    default_input=(224, 224, 3),
    min_size=32,
    stage_strides=(2, 4, 8, 16, 32),
)


@register_model(VGG)
def vgg11(**kwargs) -> keras.Model:
    """VGG-11 (configuration A): 8 convs + 3 dense, 132,863,336 parameters."""
    return build_vgg("vgg11", **kwargs)


@register_model(VGG)
def vgg13(**kwargs) -> keras.Model:
    """VGG-13 (configuration B): 10 convs + 3 dense, 133,047,848 parameters."""
    return build_vgg("vgg13", **kwargs)


@register_model(VGG)
def vgg16(**kwargs) -> keras.Model:
    """VGG-16 (configuration D), as keras.applications.VGG16; ImageNet weights."""
    return build_vgg("vgg16", **kwargs)


@register_model(VGG)
def vgg19(**kwargs) -> keras.Model:
    """VGG-19 (configuration E), as keras.applications.VGG19; ImageNet weights."""
    return build_vgg("vgg19", **kwargs)


@register_model(VGG)
def vgg11_bn(**kwargs) -> keras.Model:
    """VGG-11 with BatchNormalization after every convolution."""
    return build_vgg("vgg11_bn", **kwargs)


@register_model(VGG)
def vgg13_bn(**kwargs) -> keras.Model:
    """VGG-13 with BatchNormalization after every convolution."""
    return build_vgg("vgg13_bn", **kwargs)


@register_model(VGG)
def vgg16_bn(**kwargs) -> keras.Model:
    """VGG-16 with BatchNormalization after every convolution."""
    return build_vgg("vgg16_bn", **kwargs)


@register_model(VGG)
def vgg19_bn(**kwargs) -> keras.Model:
    """VGG-19 with BatchNormalization after every convolution."""
    return build_vgg("vgg19_bn", **kwargs)
