"""AlexNet (Krizhevsky et al. 2012), the single-tower layout torchvision uses."""

from __future__ import annotations

import keras
from keras import layers

from kzoo.models import _common
from kzoo.models._registry import Family, register_model


def build_alexnet(
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
    """Builds AlexNet: convs 64-192-384-256-256, dense 4096-4096 with dropout.

    Padding follows torchvision (explicit 2-pixel pad before the stride-4
    convolution), so a 224x224 input ends in a 6x6x256 map and the model has
    61,100,840 parameters for 1000 classes. Other sizes change only the
    first dense layer, as with keras.applications' VGG.

    Args:
        variant: Registered model name ("alexnet").
        dropout: Dropout rate before each 4096-unit dense layer.
        sequential: Return a `keras.Sequential` with the same layers.
        include_top: Keep the dense classifier.
        weights: None, or the path to a weights file.
        input_tensor: Optional Keras tensor to use as the input.
        input_shape: (height, width, channels); default (224, 224, 3); at least 63x63.
        pooling: With include_top=False: None, "avg" or "max" global pooling.
        num_classes: Number of classes (default 1000); `classes` is an alias.
        classifier_activation: Activation of the last layer; None for logits.
        name: Model name; defaults to the variant.
        features_only: Return the three pooled stage outputs (stride 8, 16, 32).
        out_indices: Which stages to return with features_only.

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
    if opts.include_top:
        head = [
            layers.Flatten(name="flatten"),
            layers.Dropout(dropout, name="fc6_dropout"),
            layers.Dense(4096, activation="relu", name="fc6"),
            layers.Dropout(dropout, name="fc7_dropout"),
            layers.Dense(4096, activation="relu", name="fc7"),
            _common.classifier(opts),
        ]
    else:
        head = _common.pooling_layers(opts.pooling)
    return _common.linear_model(opts, trunk, stage_ends=(2, 4, 8), head=head, sequential=sequential)


ALEXNET = Family(
    name="alexnet",
    paper="Krizhevsky et al. 2012, ImageNet Classification with Deep CNNs; "
    "single-tower layout of Krizhevsky 2014, One weird trick",
    builder=build_alexnet,
    default_input=(224, 224, 3),
    min_size=63,
    stage_strides=(8, 16, 32),
)


@register_model(ALEXNET)
def alexnet(**kwargs) -> keras.Model:
    """AlexNet, single tower, 61,100,840 parameters at 224x224x3 / 1000 classes."""
    return build_alexnet("alexnet", **kwargs)
