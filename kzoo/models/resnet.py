"""ResNets: He et al. 2015 (v1, and the CIFAR family) and He et al. 2016 (v2, pre-activation).

- "bottleneck" (resnet50/101/152) and "preact" (the _v2 models) are
  keras.applications' ResNet and ResNetV2 layer for layer: same names, same
  order, so its ImageNet weight files load as they are.
- "basic" (resnet18/34) is torchvision's layout: no conv bias, symmetric
  padding, BN momentum 0.9 / epsilon 1e-5.
- "torch_bottleneck" is torchvision's Bottleneck (ResNet v1.5: the stride on
  the 3x3), for wide_resnet50_2/101_2 (inner width x2) and timm's
  seresnet50/101/152 (squeeze-and-excitation after the last BN, before the add).
- "cifar" (resnet20 ... resnet110) is the paper's CIFAR-10 network: 16-32-64
  filters, 3 stages of n basic blocks, parameter-free shortcuts (option A).

Every block type takes `output_stride`: a stride that would take the trunk
past it becomes dilation of the 3x3 convolutions from there on, as timm's
`output_stride` does (the block that would have strided keeps the previous
dilation; torchvision's `replace_stride_with_dilation` is the same for its
Bottleneck). The weights do not change.
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
class ResNetSpec:
    """Block type, blocks per stage and the docstring line of one ResNet."""

    block: str
    blocks_per_stage: tuple[int, ...]
    doc: str
    base_width: int = 64  # torchvision's width_per_group: a bottleneck's inner width is filters * base_width / 64.
    squeeze_excite: bool = False


RESNET_SPECS = {
    "resnet18": ResNetSpec("basic", (2, 2, 2, 2), "ResNet-18, torchvision layout: basic blocks, 11,689,512 parameters."),
    "resnet34": ResNetSpec("basic", (3, 4, 6, 3), "ResNet-34, torchvision layout: basic blocks, 21,797,672 parameters."),
    "resnet50": ResNetSpec("bottleneck", (3, 4, 6, 3), "ResNet-50 v1, as keras.applications.ResNet50; ImageNet weights."),
    "resnet50_tv": ResNetSpec("torch_bottleneck", (3, 4, 6, 3), "ResNet-50 v1.5, torchvision layout (stride on the "
                              "3x3, no conv bias): the backbone of torchvision's FCN and DeepLabV3; 25,557,032 "
                              "parameters."),
    "resnet101_tv": ResNetSpec("torch_bottleneck", (3, 4, 23, 3), "ResNet-101 v1.5, torchvision layout: the "
                               "backbone of torchvision's FCN and DeepLabV3; 44,549,160 parameters."),
    "resnet101": ResNetSpec("bottleneck", (3, 4, 23, 3), "ResNet-101 v1, as keras.applications.ResNet101; ImageNet weights."),
    "resnet152": ResNetSpec("bottleneck", (3, 8, 36, 3), "ResNet-152 v1, as keras.applications.ResNet152; ImageNet weights."),
    "resnet50_v2": ResNetSpec("preact", (3, 4, 6, 3),
                              "ResNet-50 v2 (pre-activation), as keras.applications.ResNet50V2; ImageNet weights."),
    "resnet101_v2": ResNetSpec("preact", (3, 4, 23, 3),
                               "ResNet-101 v2 (pre-activation), as keras.applications.ResNet101V2; ImageNet weights."),
    "resnet152_v2": ResNetSpec("preact", (3, 8, 36, 3),
                               "ResNet-152 v2 (pre-activation), as keras.applications.ResNet152V2; ImageNet weights."),
}
WIDE_RESNET_SPECS = {
    "wide_resnet50_2": ResNetSpec("torch_bottleneck", (3, 4, 6, 3), "Wide ResNet-50-2 (Zagoruyko & Komodakis "
                                  "2016), torchvision layout: 68,883,240 parameters.", base_width=128),
    "wide_resnet101_2": ResNetSpec("torch_bottleneck", (3, 4, 23, 3), "Wide ResNet-101-2, torchvision layout: "
                                   "126,886,696 parameters.", base_width=128),
}
SE_RESNET_SPECS = {
    "seresnet50": ResNetSpec("torch_bottleneck", (3, 4, 6, 3), "SE-ResNet-50 (Hu et al. 2018), timm layout: "
                             "28,088,024 parameters.", squeeze_excite=True),
    "seresnet101": ResNetSpec("torch_bottleneck", (3, 4, 23, 3), "SE-ResNet-101, timm layout: 49,326,872 "
                              "parameters.", squeeze_excite=True),
    "seresnet152": ResNetSpec("torch_bottleneck", (3, 8, 36, 3), "SE-ResNet-152, timm layout: 66,821,848 "
                              "parameters.", squeeze_excite=True),
}
CIFAR_RESNET_SPECS = {
    "resnet20": ResNetSpec("cifar", (3, 3, 3), "ResNet-20 for CIFAR-10 (He et al. 2015): 0.27M parameters."),
    "resnet32": ResNetSpec("cifar", (5, 5, 5), "ResNet-32 for CIFAR-10 (He et al. 2015): 0.46M parameters."),
    "resnet44": ResNetSpec("cifar", (7, 7, 7), "ResNet-44 for CIFAR-10 (He et al. 2015): 0.66M parameters."),
    "resnet56": ResNetSpec("cifar", (9, 9, 9), "ResNet-56 for CIFAR-10 (He et al. 2015): 0.85M parameters."),
    "resnet110": ResNetSpec("cifar", (18, 18, 18), "ResNet-110 for CIFAR-10 (He et al. 2015): 1.7M parameters."),
}
IMAGENET_WIDTHS = (64, 128, 256, 512)
CIFAR_WIDTHS = (16, 32, 64)

# keras.applications' BN epsilon; torchvision's BN settings for the others.
_KERAS_BN = dict(epsilon=1.001e-5)
_TORCH_BN = dict(momentum=0.9, epsilon=1e-5)


def build_resnet(opts: _common.Options, spec: ResNetSpec) -> keras.Model:
    """Builds a ResNet from its spec row: global average pooling and the classifier on top of the trunk."""
    inputs, x = _common.model_input(opts)
    if spec.block == "cifar":
        x, stages = _cifar_trunk(x, spec.blocks_per_stage, _Strides(1, opts.output_stride))
    else:
        x, stages = _imagenet_trunk(x, spec, _Strides(4, opts.output_stride))
    if opts.include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = _common.classifier(opts)(x)
    else:
        for layer in _common.pooling_layers(opts.pooling):
            x = layer(x)
    return _common.assemble(opts, inputs, x, stages)


class _Strides:
    """The trunk's stride so far and the dilation of its 3x3s: a stride past `output_stride` becomes dilation."""

    def __init__(self, stride: int, output_stride: int):
        self.stride, self.output_stride, self.dilation = stride, output_stride, 1

    def step(self, stride: int) -> tuple[int, tuple[int, int]]:
        """A block asked to stride by `stride`: its stride and `(first, rest)` dilations of its 3x3s."""
        first = self.dilation
        if stride > 1 and self.stride * stride > self.output_stride:
            self.dilation *= stride
            stride = 1
        else:
            self.stride *= stride
        return stride, (first, self.dilation)


def _imagenet_trunk(x, spec: ResNetSpec, strides: _Strides):
    """7x7 stem, max pool, four stages; returns the last map and one per stride."""
    preact = spec.block == "preact"
    torch_style = spec.block in ("basic", "torch_bottleneck")
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = layers.Conv2D(64, 7, strides=2, use_bias=not torch_style, name="conv1_conv")(x)
    if not preact:
        x = BatchNormalization(**(_TORCH_BN if torch_style else _KERAS_BN), name="conv1_bn")(x)
        x = layers.Activation("relu", name="conv1_relu")(x)
    stages = [x]
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    last_stage = len(spec.blocks_per_stage) - 1
    for index, (blocks, filters) in enumerate(zip(spec.blocks_per_stage, IMAGENET_WIDTHS)):
        stage = f"conv{index + 2}"
        if preact:
            # keras.applications ResNetV2 strides in the *last* block of stages 2-4.
            for block in range(1, blocks + 1):
                stride = 2 if block == blocks and index != last_stage else 1
                if stride == 2:
                    stages.append(x)
                stride, dilation = strides.step(stride)
                x = _preact_bottleneck(x, filters, stride, block == 1, f"{stage}_block{block}", dilation)
        else:
            for block in range(1, blocks + 1):
                stride, dilation = strides.step(2 if block == 1 and index > 0 else 1)
                x = _BLOCKS[spec.block](x, filters, stride, f"{stage}_block{block}", spec, dilation)
            stages.append(x)
    if preact:
        x = BatchNormalization(**_KERAS_BN, name="post_bn")(x)
        x = layers.Activation("relu", name="post_relu")(x)
        stages.append(x)
    return x, stages


def _cifar_trunk(x, blocks_per_stage, strides: _Strides):
    """3x3 stem and three stages of basic blocks; returns the last map and each stage's."""
    x = layers.Conv2D(CIFAR_WIDTHS[0], 3, padding="same", use_bias=False, name="conv1_conv")(x)
    x = BatchNormalization(**_TORCH_BN, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    stages = []
    for index, (blocks, filters) in enumerate(zip(blocks_per_stage, CIFAR_WIDTHS)):
        for block in range(1, blocks + 1):
            stride, dilation = strides.step(2 if block == 1 and index > 0 else 1)
            x = _basic_block(x, filters, stride, f"conv{index + 2}_block{block}", dilation=dilation,
                             zero_pad_shortcut=True)
        stages.append(x)
    return x, stages


def _bottleneck(x, filters, stride, name, spec=None, dilation=(1, 1)):
    """keras.applications' residual_block_v1: 1x1 (strided), 3x3, 1x1 x4, post-add ReLU."""
    shortcut = _shortcut(x, 4 * filters, stride, name, torch_style=False)
    x = _conv_bn(x, filters, 1, stride, f"{name}_1", torch_style=False)
    x = _conv_bn(x, filters, 3, 1, f"{name}_2", torch_style=False, dilation=dilation[0])
    x = _conv_bn(x, 4 * filters, 1, 1, f"{name}_3", torch_style=False, relu=False)
    return _add_relu(shortcut, x, name)


def _preact_bottleneck(x, filters, stride, first, name, dilation=(1, 1)):
    """keras.applications' residual_block_v2: BN-ReLU first, stride in the 3x3."""
    preact = BatchNormalization(**_KERAS_BN, name=f"{name}_preact_bn")(x)
    preact = layers.Activation("relu", name=f"{name}_preact_relu")(preact)
    if first:
        shortcut = layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(preact)
    elif stride > 1:
        shortcut = layers.MaxPooling2D(1, strides=stride, name=f"{name}_0_pool")(x)
    else:
        shortcut = x
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_1_conv")(preact)
    x = BatchNormalization(**_KERAS_BN, name=f"{name}_1_bn")(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(x)
    x = layers.ZeroPadding2D(dilation[0], name=f"{name}_2_pad")(x)
    x = layers.Conv2D(filters, 3, strides=stride, dilation_rate=dilation[0], use_bias=False, name=f"{name}_2_conv")(x)
    x = BatchNormalization(**_KERAS_BN, name=f"{name}_2_bn")(x)
    x = layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x)
    return layers.Add(name=f"{name}_out")([shortcut, x])


def _basic_block(x, filters, stride, name, spec=None, dilation=(1, 1), zero_pad_shortcut=False):
    """torchvision's BasicBlock: two 3x3 convs; projection (or zero-pad) shortcut on a shape change."""
    if zero_pad_shortcut and (stride != 1 or x.shape[-1] != filters):
        # Option A of He et al. 2015: subsample, then append zero channels. Built
        # from stock layers (a 1x1 max pool keeps every other pixel) so the model
        # needs no custom objects in .keras files, tf_keras or TFLite.
        shortcut = layers.MaxPooling2D(1, strides=stride, name=f"{name}_0_pool")(x)
        zeros = layers.Rescaling(0.0, name=f"{name}_0_zeros")(shortcut)
        shortcut = layers.Concatenate(name=f"{name}_0_pad")(
            [shortcut] + [zeros] * (filters // x.shape[-1] - 1)
        )
    else:
        shortcut = _shortcut(x, filters, stride, name, torch_style=True)
    x = _conv_bn(x, filters, 3, stride, f"{name}_1", torch_style=True, dilation=dilation[0])
    x = _conv_bn(x, filters, 3, 1, f"{name}_2", torch_style=True, relu=False, dilation=dilation[1])
    return _add_relu(shortcut, x, name)


def _torch_bottleneck(x, filters, stride, name, spec, dilation=(1, 1)):
    """torchvision's Bottleneck (stride on the 3x3, no conv bias), wide by `base_width`, with timm's SE if asked."""
    width, out = filters * spec.base_width // 64, 4 * filters
    shortcut = _shortcut(x, out, stride, name, torch_style=True)
    x = _conv_bn(x, width, 1, 1, f"{name}_1", torch_style=True)
    x = _conv_bn(x, width, 3, stride, f"{name}_2", torch_style=True, dilation=dilation[0])
    x = _conv_bn(x, out, 1, 1, f"{name}_3", torch_style=True, relu=False)
    if spec.squeeze_excite:
        x = _squeeze_excite(x, name)
    return _add_relu(shortcut, x, name)


def _shortcut(x, channels, stride, name, torch_style):
    """The identity, or a strided 1x1 projection and BN (`{name}_0_conv`, `{name}_0_bn`) on a shape change."""
    if stride == 1 and x.shape[-1] == channels:
        return x
    return _conv_bn(x, channels, 1, stride, f"{name}_0", torch_style=torch_style, relu=False)


def _conv_bn(x, filters, kernel, stride, name, *, torch_style, relu=True, dilation=1):
    """Convolution, BatchNorm and ReLU: torch style (no bias, torch's BN settings, symmetric padding when
    strided) or keras.applications' (bias, its BN epsilon). A dilated convolution never strides."""
    if kernel > 1 and stride > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        x = layers.Conv2D(filters, kernel, strides=stride, use_bias=not torch_style, name=f"{name}_conv")(x)
    else:
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same" if kernel > 1 else "valid",
                          dilation_rate=dilation, use_bias=not torch_style, name=f"{name}_conv")(x)
    x = BatchNormalization(**(_TORCH_BN if torch_style else _KERAS_BN), name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x) if relu else x


def _add_relu(shortcut, x, name):
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.Activation("relu", name=f"{name}_out")(x)


def _squeeze_excite(x, name, reduction=16, divisor=8):
    """timm's SEModule: global mean, 1x1 conv down (channels / 16, a multiple of 8), ReLU, 1x1 conv up, sigmoid gate."""
    channels = x.shape[-1]
    reduced = max(divisor, int(channels / reduction + divisor / 2) // divisor * divisor)
    if reduced < 0.9 * channels / reduction:
        reduced += divisor
    gate = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
    gate = layers.Conv2D(reduced, 1, activation="relu", name=f"{name}_se_fc1")(gate)
    gate = layers.Conv2D(channels, 1, activation="sigmoid", name=f"{name}_se_fc2")(gate)
    return layers.Multiply(name=f"{name}_se_scale")([x, gate])


_BLOCKS = {"basic": _basic_block, "bottleneck": _bottleneck, "torch_bottleneck": _torch_bottleneck}


IMAGENET_RESNET = Family("resnet", build_resnet, paper=(
    "He et al. 2015, Deep Residual Learning for Image Recognition "
    "(v2: He et al. 2016, Identity Mappings in Deep Residual Networks)"),
    default_input=(224, 224, 3), min_size=32, stage_strides=(2, 4, 8, 16, 32), output_strides=(8, 16, 32))
CIFAR_RESNET = Family("resnet_cifar", build_resnet, paper=(
    "He et al. 2015, Deep Residual Learning for Image Recognition, section 4.2 (CIFAR-10)"),
    default_input=(32, 32, 3), min_size=4, stage_strides=(1, 2, 4), default_classes=10, output_strides=(1, 2, 4))
WIDE_RESNET = Family("wide_resnet", build_resnet, paper=(
    "Zagoruyko & Komodakis 2016, Wide Residual Networks (torchvision's ImageNet layout)"),
    default_input=(224, 224, 3), min_size=32, stage_strides=(2, 4, 8, 16, 32), output_strides=(8, 16, 32))
SE_RESNET = Family("seresnet", build_resnet, paper=(
    "Hu et al. 2018, Squeeze-and-Excitation Networks (timm's SE-ResNet layout)"),
    default_input=(224, 224, 3), min_size=32, stage_strides=(2, 4, 8, 16, 32), output_strides=(8, 16, 32))
globals().update(register_family(IMAGENET_RESNET, RESNET_SPECS))
globals().update(register_family(WIDE_RESNET, WIDE_RESNET_SPECS))
globals().update(register_family(SE_RESNET, SE_RESNET_SPECS))
globals().update(register_family(CIFAR_RESNET, CIFAR_RESNET_SPECS))
