"""Key maps, one per family: which checkpoint tensor fills which Keras weight, for torchvision and timm files.

A map is derived from the built Keras model, so it fits every variant the
builder makes (with or without the classifier, BatchNorm, SE, auxiliary
heads). Each family only says how its layer names become the source's module
names; `layer_entries` turns a module name into the tensors of one layer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np

from kzoo.convert.port import torch_conv_kernel, torch_dense_kernel


def layer_entries(layer, module: str, kernel_hook=None) -> list:
    """The checkpoint keys of one layer's weights (in `layer.weights` order) under torch module `module`."""
    if isinstance(layer, keras.layers.Conv2D):
        return [(f"{module}.weight", torch_conv_kernel)] + ([f"{module}.bias"] if layer.use_bias else [])
    if isinstance(layer, keras.layers.BatchNormalization):
        return [f"{module}.{key}" for key in ("weight", "bias", "running_mean", "running_var")]
    if isinstance(layer, keras.layers.Dense):
        return [(f"{module}.weight", kernel_hook or torch_dense_kernel), f"{module}.bias"]
    raise ValueError(f"No torch layout is known for layer {layer.name!r} ({type(layer).__name__}).")


def after_flatten(height: int, width: int, channels: int):
    """Hook for the first dense layer after a flatten: torch flattens (C, H, W), Keras (H, W, C)."""

    def hook(tensor: np.ndarray) -> np.ndarray:
        out = tensor.shape[0]
        nchw = tensor.reshape(out, channels, height, width)
        return np.transpose(nchw, (2, 3, 1, 0)).reshape(height * width * channels, out)

    return hook


def sequential_map(model) -> dict:
    """torchvision's `features` / `classifier` nn.Sequential numbering (AlexNet, VGG).

    Walks the layers in order, counting the torch modules each stands for: a
    convolution or dense layer with a fused ReLU is two, padding is none (torch
    pads inside the convolution), everything else one.
    """
    key_map, section, index, hook = {}, "features", 0, None
    for layer in model.layers:
        if isinstance(layer, (keras.layers.InputLayer, keras.layers.ZeroPadding2D)):
            continue
        if isinstance(layer, keras.layers.Flatten):
            height, width, channels = layer.input.shape[1:]
            section, index, hook = "classifier", 0, after_flatten(height, width, channels)
            continue
        if layer.weights:
            key_map[layer.name] = layer_entries(layer, f"{section}.{index}", hook if section == "classifier" else None)
            if isinstance(layer, keras.layers.Dense):
                hook = None
        fused_relu = getattr(layer, "activation", None) is keras.activations.relu
        index += 1 + fused_relu
    return key_map


_RESNET_NAMES = [
    (r"^conv1_conv$", "conv1"), (r"^conv1_bn$", "bn1"), (r"^predictions$", "fc"),
    (r"^conv(\d)_block(\d+)_0_conv$", "layer{s}.{b}.downsample.0"),
    (r"^conv(\d)_block(\d+)_0_bn$", "layer{s}.{b}.downsample.1"),
    (r"^conv(\d)_block(\d+)_(\d)_conv$", "layer{s}.{b}.conv{k}"),
    (r"^conv(\d)_block(\d+)_(\d)_bn$", "layer{s}.{b}.bn{k}"),
    (r"^conv(\d)_block(\d+)_se_(fc\d)$", "layer{s}.{b}.se.{k}"),
]


def resnet_module(layer_name: str) -> str:
    """torchvision's (and timm's) ResNet module name for a kzoo layer: conv3_block2_1_conv -> layer2.1.conv1."""
    for pattern, template in _RESNET_NAMES:
        match = re.match(pattern, layer_name)
        if match:
            groups = match.groups()
            stage, block = (int(groups[0]) - 1, int(groups[1]) - 1) if groups else (None, None)
            return template.format(s=stage, b=block, k=groups[2] if len(groups) > 2 else None)
    raise ValueError(f"Layer {layer_name!r} has no counterpart in torchvision's ResNet.")


def named_map(model, module_of) -> dict:
    """A map for models whose layer names translate one by one (`module_of(layer_name)`)."""
    return {layer.name: layer_entries(layer, module_of(layer.name)) for layer in model.layers if layer.weights}


def googlenet_module(layer_name: str) -> str:
    """torchvision's GoogLeNet module name: inception3a_branch2_1_conv -> inception3a.branch2.1.conv."""
    if layer_name == "predictions":
        return "fc"
    return layer_name.replace("_", ".")


def googlenet_map(model) -> dict:
    key_map = named_map(model, googlenet_module)
    for aux in ("aux1", "aux2"):
        if f"{aux}_fc1" in key_map:  # 128 channels at 4x4, flattened in torch's order.
            key_map[f"{aux}_fc1"] = layer_entries(model.get_layer(f"{aux}_fc1"), f"{aux}.fc1", after_flatten(4, 4, 128))
    return key_map


# torchvision's segmentation heads (models/segmentation/{fcn,deeplabv3}.py) under `classifier`: FCNHead is
# conv, BN, ReLU, dropout, score; DeepLabHead is ASPP (four branches and the image pooling, then a projection),
# conv, BN, ReLU, score. kzoo.segment names the layers after the roles; the backbone sits under `backbone.`.
_SEGMENTATION_NAMES = [
    (r"^fcn_conv$", "classifier.0"), (r"^fcn_bn$", "classifier.1"), (r"^fcn_score$", "classifier.4"),
    (r"^aspp_([0-3])_conv$", "classifier.0.convs.{0}.0"), (r"^aspp_([0-3])_bn$", "classifier.0.convs.{0}.1"),
    (r"^aspp_pool_conv$", "classifier.0.convs.4.1"), (r"^aspp_pool_bn$", "classifier.0.convs.4.2"),
    (r"^aspp_project_conv$", "classifier.0.project.0"), (r"^aspp_project_bn$", "classifier.0.project.1"),
    (r"^deeplab_conv$", "classifier.1"), (r"^deeplab_bn$", "classifier.2"), (r"^deeplab_score$", "classifier.4"),
]


def segmentation_module(layer_name: str) -> str:
    """torchvision's module name in an FCN or DeepLabV3 model: aspp_2_bn -> classifier.0.convs.2.1,
    conv4_block1_2_conv -> backbone.layer3.0.conv2."""
    for pattern, template in _SEGMENTATION_NAMES:
        match = re.match(pattern, layer_name)
        if match:
            return template.format(*match.groups())
    try:
        return f"backbone.{resnet_module(layer_name)}"
    except ValueError:
        raise ValueError(f"Layer {layer_name!r} has no counterpart in torchvision's FCN or DeepLabV3 (whose "
                         "backbones are ResNets and heads 'fcn' and 'deeplabv3').") from None


def segmentation_map(model) -> dict:
    """A `kzoo.segment` model's map; its frozen preprocessing layer is kept as built."""
    return {layer.name: layer_entries(layer, segmentation_module(layer.name))
            for layer in model.layers if layer.weights and layer.name not in FIXED_LAYERS}


# Layers a converted model keeps as built: the frozen preprocessing of `kzoo.transfer` and `kzoo.segment` models.
FIXED_LAYERS = ("preprocess",)


@dataclass(frozen=True)
class Converter:
    """How one family's torch checkpoints map onto its Keras models.

    Attributes:
        key_map: model -> key map (see `kzoo.convert.port`).
        head: Key prefixes of the classifier, left out for `include_top=False`.
        optional: Key prefixes of parts a model may be built without (GoogLeNet's
            auxiliary heads), left out when the model has no layer for them.
    """

    key_map: Callable
    head: tuple[str, ...]
    optional: tuple[str, ...] = ()


# Family name -> its converter. Families without published torch weights have none.
CONVERTERS = {
    "alexnet": Converter(sequential_map, head=("classifier.",)),
    "vgg": Converter(sequential_map, head=("classifier.",)),
    **{family: Converter(lambda model: named_map(model, resnet_module), head=("fc.",))
       for family in ("resnet", "wide_resnet", "seresnet")},
    "googlenet": Converter(googlenet_map, head=("fc.",), optional=("aux1.", "aux2.")),
    # torchvision's FCN and DeepLabV3 (kzoo.segment); their auxiliary FCN head on layer3 trains only.
    "segmentation": Converter(segmentation_map, head=(), optional=("aux_classifier.",)),
}
