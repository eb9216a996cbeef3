"""GoogLeNet (Szegedy et al. 2014) in torchvision's layout, so its ImageNet weights convert.

torchvision's GoogLeNet adds BatchNorm (epsilon 1e-3) after every
convolution (which then has no bias), rounds its max pools up (ceil mode),
and builds each inception module's "5x5" branch with a 3x3 kernel
(pytorch/vision#906); its weights depend on all three, so kzoo does the
same. Layer names follow torchvision's modules (`inception3a_branch2_1_conv`
is `inception3a.branch2.1.conv`).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from kzoo.layers import BatchNormalization
from kzoo.models import _common
from kzoo.models._builder import register_family
from kzoo.models._registry import Family

# Inception modules: (name, 1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool projection), torchvision's table;
# None marks the max pools between them.
INCEPTIONS = (
    ("inception3a", 64, 96, 128, 16, 32, 32),
    ("inception3b", 128, 128, 192, 32, 96, 64),
    None,
    ("inception4a", 192, 96, 208, 16, 48, 64),
    ("inception4b", 160, 112, 224, 24, 64, 64),
    ("inception4c", 128, 128, 256, 24, 64, 64),
    ("inception4d", 112, 144, 288, 32, 64, 64),
    ("inception4e", 256, 160, 320, 32, 128, 128),
    None,
    ("inception5a", 256, 160, 320, 32, 128, 128),
    ("inception5b", 384, 192, 384, 48, 128, 128),
)


@dataclass(frozen=True)
class GoogLeNetSpec:
    """The docstring line (one GoogLeNet; the layout is `INCEPTIONS` and `build_googlenet`)."""

    doc: str


GOOGLENET_SPECS = {
    "googlenet": GoogLeNetSpec("GoogLeNet (Inception v1), torchvision layout: 6,624,904 trainable parameters."),
}


def build_googlenet(opts: _common.Options, spec: GoogLeNetSpec, *, aux_logits: bool = False,
                    dropout: float = 0.2, dropout_aux: float = 0.7) -> keras.Model:
    """Builds GoogLeNet: a 7x7/2 stem, 3x3 convs, nine inception modules, global pooling, dropout, classifier.

    Args:
        opts: The resolved common arguments.
        spec: The model's row of `GOOGLENET_SPECS`.
        aux_logits: With include_top, add the two auxiliary classifiers (after
            inception4a and 4d) as extra outputs, `[main, aux1, aux2]`, for
            training as in the paper (weight them 0.3 in the loss); 13,004,888
            trainable parameters then.
        dropout: Dropout rate before the classifier.
        dropout_aux: Dropout rate in the auxiliary classifiers.
    """
    if aux_logits and not opts.include_top:
        raise ValueError("aux_logits=True needs include_top=True: the auxiliary heads are classifiers.")
    inputs, x = _common.model_input(opts)
    x = _conv(x, 64, 7, "conv1", stride=2)
    stages = [x]
    x = _ceil_max_pool(x, 3, "maxpool1")
    x = _conv(x, 64, 1, "conv2")
    x = _conv(x, 192, 3, "conv3")
    stages.append(x)
    x = _ceil_max_pool(x, 3, "maxpool2")
    aux = []
    pools = iter(("maxpool3", "maxpool4"))
    for row in INCEPTIONS:
        if row is None:
            stages.append(x)
            pool = next(pools)
            x = _ceil_max_pool(x, 3 if pool == "maxpool3" else 2, pool)
            continue
        x = _inception(x, *row)
        if aux_logits and row[0] in ("inception4a", "inception4d"):
            aux.append(_auxiliary(x, f"aux{len(aux) + 1}", opts, dropout_aux))
    stages.append(x)
    if opts.include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(dropout, name="dropout")(x)
        x = _common.classifier(opts)(x)
        x = [x, *aux] if aux else x
    else:
        for layer in _common.pooling_layers(opts.pooling):
            x = layer(x)
    return _common.assemble(opts, inputs, x, stages)


def _conv(x, filters, kernel, name, stride=1):
    """torchvision's BasicConv2d: convolution without bias (torch's symmetric padding), BN (eps 1e-3), ReLU."""
    if kernel > 1 and stride > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        x = layers.Conv2D(filters, kernel, strides=stride, use_bias=False, name=f"{name}_conv")(x)
    else:
        x = layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = BatchNormalization(epsilon=1e-3, momentum=0.9, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _ceil_max_pool(x, size, name):
    """Max pool (stride 2) rounding up as torch's ceil_mode: one row and column of zeros at the end.

    The input follows a ReLU, so a zero never wins over the values it pads;
    for 3x3 and 2x2 windows at stride 2 one extra pixel gives exactly ceil mode.
    """
    x = layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pad")(x)
    return layers.MaxPooling2D(size, strides=2, name=name)(x)


def _inception(x, name, ch1x1, ch3x3_reduce, ch3x3, ch5x5_reduce, ch5x5, pool_projection):
    branch1 = _conv(x, ch1x1, 1, f"{name}_branch1")
    branch2 = _conv(_conv(x, ch3x3_reduce, 1, f"{name}_branch2_0"), ch3x3, 3, f"{name}_branch2_1")
    # The "5x5" branch has a 3x3 kernel, as in torchvision (and so in its weights).
    branch3 = _conv(_conv(x, ch5x5_reduce, 1, f"{name}_branch3_0"), ch5x5, 3, f"{name}_branch3_1")
    pooled = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_branch4_pool")(x)
    branch4 = _conv(pooled, pool_projection, 1, f"{name}_branch4_1")
    return layers.Concatenate(name=f"{name}_concat")([branch1, branch2, branch3, branch4])


def _auxiliary(x, name, opts, dropout):
    """torchvision's InceptionAux: 4x4 adaptive average pool, 1x1 conv to 128, fc 1024 + ReLU, dropout, classifier."""
    x = layers.AdaptiveAveragePooling2D((4, 4), name=f"{name}_pool")(x)
    x = _conv(x, 128, 1, f"{name}_conv")
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(1024, activation="relu", name=f"{name}_fc1")(x)
    x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return layers.Dense(opts.num_classes, activation=opts.classifier_activation, name=f"{name}_fc2")(x)


GOOGLENET = Family("googlenet", build_googlenet, paper=(
    "Szegedy et al. 2014, Going Deeper with Convolutions (torchvision's layout, with BatchNorm)"),
    default_input=(224, 224, 3), min_size=32, stage_strides=(2, 4, 8, 16, 32))
globals().update(register_family(GOOGLENET, GOOGLENET_SPECS))
