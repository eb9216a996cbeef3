"""LeNet-5 (LeCun et al. 1998): two conv/pool stages and three dense layers."""

from __future__ import annotations

import keras
from keras import layers

from kzoo.models import _common
from kzoo.models._registry import Family, register_model


def build_lenet(
    variant: str,
    *,
    classic: bool = False,
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
    """Builds LeNet-5: conv 6@5x5, pool, conv 16@5x5, pool, dense 120, 84, classes.

    The first convolution is padded "same", so 28x28 MNIST digits give the
    paper's 32x32 geometry (61,706 parameters for 10 classes).

    Args:
        variant: Registered model name ("lenet5").
        classic: The paper's tanh and average pooling; the default is ReLU and
            max pooling, which trains faster.
        sequential: Return a `keras.Sequential` with the same layers.
        include_top: Keep the three dense layers; otherwise end at the last pool.
        weights: None, or the path to a weights file (.weights.h5, .keras, .h5).
        input_tensor: Optional Keras tensor to use as the input.
        input_shape: (height, width, channels); default (28, 28, 1); at least 12x12.
        pooling: With include_top=False: None, "avg" or "max" global pooling.
        num_classes: Number of classes (default 10); `classes` is an alias.
        classifier_activation: Activation of the last layer; None for logits.
        name: Model name; defaults to the variant.
        features_only: Return the two stage outputs (stride 2 and 4).
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
    activation = "tanh" if classic else "relu"
    pool = layers.AveragePooling2D if classic else layers.MaxPooling2D
    trunk = [
        layers.Conv2D(6, 5, padding="same", activation=activation, name="conv1"),
        pool(2, name="pool1"),
        layers.Conv2D(16, 5, activation=activation, name="conv2"),
        pool(2, name="pool2"),
    ]
    if opts.include_top:
        head = [
            layers.Flatten(name="flatten"),
            layers.Dense(120, activation=activation, name="fc1"),
            layers.Dense(84, activation=activation, name="fc2"),
            _common.classifier(opts),
        ]
    else:
        head = _common.pooling_layers(opts.pooling)
    return _common.linear_model(opts, trunk, stage_ends=(1, 3), head=head, sequential=sequential)


LENET = Family(
    name="lenet",
    paper="LeCun et al. 1998, Gradient-Based Learning Applied to Document Recognition",
    builder=build_lenet,
    default_input=(28, 28, 1),
    min_size=12,
    stage_strides=(2, 4),
)


@register_model(LENET, default_classes=10)
def lenet5(**kwargs) -> keras.Model:
    """LeNet-5 for 28x28x1 digits, 10 classes, 61,706 parameters."""
    return build_lenet("lenet5", **kwargs)
