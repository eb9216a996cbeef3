"""Segmentation models: a kzoo backbone under an FCN, U-Net or DeepLabV3 head, as one flat functional model.

`build` takes the preprocessing, the backbone's stages and their strides from
`kzoo.transfer.pretrained_backbone` (the shared weights and `feature_info`
machinery) and puts one of `HEADS` on them; the model maps images in [0, 1]
to per-pixel logits at the input's size. Layer names carry the roles
(`fcn_*`, `score_*`, `decoder*`, `aspp_*`, `deeplab_*`), which is how
`kzoo.convert` finds torchvision's heads in a checkpoint.
"""

from __future__ import annotations

import math
import os

import keras
import numpy as np
from keras import layers

from kzoo import transfer
from kzoo import weights as weights_lib
from kzoo.layers import BatchNormalization
from kzoo.models import _registry

HEADS = {
    "fcn": "torchvision's FCNHead: 3x3 conv (channels / 4), BN, ReLU, dropout 0.1, 1x1 score; bilinear upsampling",
    "fcn32s": "Long et al. 2015: 1x1 score on the deepest map, fixed bilinear upsampling",
    "fcn16s": "FCN-32s plus a learned 2x upsampling fused with a 1x1 score of the map at half the stride",
    "fcn8s": "FCN-16s plus one more fusion, with the map at a quarter of the stride",
    "unet": "Ronneberger et al. 2015: a decoder of 2x upsampling, concat with every stage, two 3x3 conv-BN-ReLU",
    "deeplabv3": "Chen et al. 2017: ASPP (1x1, 3x3 at atrous rates 6/12/18 x 16 / output stride, image pooling)",
}
# The heads that read only the deepest map run on a dilated backbone by default (torchvision's models:
# output stride 8); the others need the strided stages for their skips.
DILATED_BY_DEFAULT = ("fcn", "deeplabv3")
UNET_WIDTHS = (256, 128, 64, 32, 16)  # segmentation_models_pytorch's decoder_channels, deepest first.
_TORCH_BN = dict(momentum=0.9, epsilon=1e-5)


def build(
    backbone,
    num_classes: int,
    *,
    head: str = "fcn8s",
    weights="imagenet",
    input_shape=None,
    output_stride: int | None = None,
    preprocessing="auto",
    name: str | None = None,
) -> keras.Model:
    """A kzoo backbone with a segmentation head, as one flat model from images in [0, 1] to per-pixel logits.

    Args:
        backbone: A registry name (`kzoo.list_models()`) or builder, e.g. "resnet18".
        num_classes: Classes of the masks (background included).
        head: One of `HEADS`: "fcn", "fcn32s", "fcn16s", "fcn8s", "unet", "deeplabv3".
        weights: The backbone's weights ("imagenet", a weights file, or None), or
            the tag of pretrained segmentation weights for this backbone and head
            (`kzoo.weights.SEGMENTATION_RECORDS`, e.g. "coco_voc" for
            "resnet50_tv" with "fcn" or "deeplabv3"), or the path to a
            torchvision FCN/DeepLabV3 checkpoint (keys under `backbone.` and
            `classifier.`), converted as it loads.
        input_shape: (height, width, channels), fixed; default the backbone's.
            For the FCN-Ns and U-Net heads, height and width must be multiples
            of the output stride.
        output_stride: The backbone's `output_stride` (8, 16 or 32 for the
            ResNets). Default: 8 for "fcn" and "deeplabv3" where the backbone
            dilates (as torchvision's models), else the backbone's own.
        preprocessing: As `kzoo.transfer.build`: "auto" applies what the weights were trained with.
        name: Model name; default "<backbone>_<head>".

    Returns:
        A `keras.Model` with output (batch, height, width, num_classes): logits.
        `model.feature_info` describes the backbone's stages.

    Raises:
        ValueError: For an unknown head, a bad `num_classes` or `input_shape`,
            an `output_stride` the backbone cannot give, a head whose skips
            the backbone's stages do not have, and the builders' weight errors.
        kzoo.weights.WeightsUnavailableError: If tagged weights are neither cached nor downloadable.
    """
    entry = _registry.model_entry(backbone if isinstance(backbone, str) else getattr(backbone, "__name__", backbone))
    if head not in HEADS:
        raise ValueError(f"head={head!r} is not one of {', '.join(HEADS)}.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be a positive integer: the classes of your masks, "
                         "background included.")
    input_shape = tuple(input_shape) if input_shape is not None else entry.default_input
    if len(input_shape) != 3 or None in input_shape:
        raise ValueError(f"input_shape={input_shape}: a segmentation model needs a fixed (height, width, channels), "
                         "e.g. (256, 256, 3), to upsample its logits to.")
    record, checkpoint = _whole_model_weights(entry.name, head, weights)
    if record is not None:
        if num_classes != len(record.class_names):
            raise ValueError(f"weights={weights!r} predict {len(record.class_names)} classes ({record.class_names[0]}, "
                             f"{record.class_names[1]}, ...); num_classes={num_classes}. Use num_classes="
                             f"{len(record.class_names)}, or weights='imagenet' and train the head for your classes.")
        output_stride = record.output_stride if output_stride is None else output_stride
        preprocessing = record.preprocessing if preprocessing == "auto" else preprocessing
    elif checkpoint is not None and preprocessing == "auto":
        preprocessing = "torch"  # torchvision's segmentation models normalise with ImageNet's mean and std.
    if output_stride is None:
        dilates = 8 in entry.family.output_strides
        output_stride = 8 if head in DILATED_BY_DEFAULT and dilates else entry.family.stage_strides[-1]
    trunk = transfer.pretrained_backbone(
        entry.name, weights=None if (record or checkpoint) else weights, input_shape=input_shape,
        preprocessing=preprocessing, out_indices=range(len(entry.family.stage_strides)), output_stride=output_stride,
    )
    maps = trunk.outputs
    logits = _HEAD_BUILDERS[head](maps, trunk.feature_info, num_classes, input_shape[:2])
    model = keras.Model(trunk.input, logits, name=name or f"{entry.name}_{head}")
    model.feature_info = trunk.feature_info
    if record is not None:
        weights_lib.load_checkpoint_file(model, "segmentation", weights_lib.fetch(record.file))
    elif checkpoint is not None:
        from kzoo import convert

        convert.load_checkpoint(model, "segmentation", weights, tensors=checkpoint)
    return model


def _whole_model_weights(backbone: str, head: str, weights):
    """`(record, None)` for a segmentation tag, `(None, tensors)` for a torchvision segmentation checkpoint,
    else `(None, None)`: the weights are the backbone's."""
    if not isinstance(weights, (str, os.PathLike)):
        return None, None
    weights = os.fspath(weights)
    record = weights_lib.SEGMENTATION_RECORDS.get((backbone, head, weights))
    if record is not None:
        return record, None
    tags = sorted({tag for (b, h, tag) in weights_lib.SEGMENTATION_RECORDS if (b, h) == (backbone, head)})
    if any(tag == weights for (_, _, tag) in weights_lib.SEGMENTATION_RECORDS):
        offered = ", ".join(f"{b} with head={h!r}" for (b, h, tag) in weights_lib.SEGMENTATION_RECORDS if tag == weights)
        raise ValueError(f"weights={weights!r} are published for {offered}; not for {backbone} with head={head!r}"
                         f"{' (it has ' + ', '.join(tags) + ')' if tags else ''}. Use one of those, or "
                         "weights='imagenet' for the backbone alone.")
    from kzoo.convert import CHECKPOINT_SUFFIXES, checkpoint_keys, read_checkpoint

    if weights.endswith(CHECKPOINT_SUFFIXES) and os.path.isfile(weights):
        if any(key.startswith("backbone.") for key in checkpoint_keys(weights)):  # Its keys alone: a backbone's
            return None, read_checkpoint(weights)                              # file is read once, later.
    return None, None


def bilinear_kernel(size: int, channels: int) -> np.ndarray:
    """A Conv2DTranspose kernel (size, size, channels, channels) that upsamples each channel bilinearly.

    FCN's `upsample_filt` (Long et al.'s surgery code), on the diagonal of the channels.
    """
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    grid = np.ogrid[:size, :size]
    taps = (1 - abs(grid[0] - center) / factor) * (1 - abs(grid[1] - center) / factor)
    kernel = np.zeros((size, size, channels, channels), dtype="float32")
    kernel[:, :, range(channels), range(channels)] = taps[:, :, None]
    return kernel


def _upsample_to(x, size, name):
    """Bilinear resizing (half-pixel centres, as torch's `align_corners=False`) to `size`."""
    return layers.Resizing(*size, interpolation="bilinear", name=name)(x)


def _conv_bn_relu(x, filters, kernel, name, dilation=1):
    x = layers.Conv2D(filters, kernel, padding="same", dilation_rate=dilation, use_bias=False, name=f"{name}_conv")(x)
    x = BatchNormalization(**_TORCH_BN, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _stage_at(infos, reduction: int, head: str) -> int:
    """Index of the last stage whose map has stride `reduction` (a dilated backbone has several)."""
    found = [i for i, info in enumerate(infos) if info.reduction == reduction]
    if not found:
        strides = sorted({info.reduction for info in infos})
        raise ValueError(
            f"head={head!r} fuses the deepest map (stride {infos[-1].reduction}) with the map at stride "
            f"{reduction}, which this backbone does not have (its stages: strides {strides}). Use the backbone's "
            "own output_stride (no dilation), or head='fcn32s', 'fcn' or 'deeplabv3'."
        )
    return found[-1]


def _check_divisible(size, stride, head):
    if any(d % stride for d in size):
        raise ValueError(f"input_shape {tuple(size)}: head={head!r} needs a height and width that are multiples of "
                         f"the backbone's output stride {stride} (e.g. {tuple(max(stride, d // stride * stride) for d in size)}), "
                         "so that every upsampled map meets its skip.")


def _check_meets(upsampled, skip, head):
    if tuple(upsampled.shape[1:3]) != tuple(skip.shape[1:3]):
        raise ValueError(
            f"head={head!r}: the upsampled map is {upsampled.shape[1]}x{upsampled.shape[2]} but the stage it meets "
            f"is {skip.shape[1]}x{skip.shape[2]}: this backbone's stages do not halve evenly (unpadded convolutions "
            "or pooling, as LeNet and AlexNet have). Use head='fcn32s', 'fcn' or 'deeplabv3', or a ResNet, VGG or "
            "GoogLeNet backbone."
        )


def _fcn(maps, infos, num_classes, size):
    """torchvision's FCNHead on the deepest map, then bilinear upsampling."""
    x = _conv_bn_relu(maps[-1], maps[-1].shape[-1] // 4, 3, "fcn")
    x = layers.Dropout(0.1, name="fcn_dropout")(x)
    x = layers.Conv2D(num_classes, 1, name="fcn_score")(x)
    return _upsample_to(x, size, "upsample")


def _long_fcn(skips: int):
    """FCN-32s (no skip), FCN-16s (one) or FCN-8s (two) of Long et al. 2015.

    Class scores are 1x1 convolutions initialised to zero (as the paper's),
    each 2x upsampling a transposed convolution initialised to bilinear and
    learned, the last upsampling fixed bilinear interpolation.
    """
    head = f"fcn{32 // 2 ** skips}s"

    def build(maps, infos, num_classes, size):
        stride = infos[-1].reduction
        _check_divisible(size, stride, head)
        skip_maps = [maps[_stage_at(infos, stride >> level, head)] for level in range(1, skips + 1)]
        x = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name=f"score_{stride}")(maps[-1])
        for level, skip in enumerate(skip_maps, start=1):
            reduction = stride >> level
            upsample = layers.Conv2DTranspose(num_classes, 4, strides=2, padding="same", use_bias=False,
                                              name=f"upsample_{reduction}")
            x = upsample(x)
            upsample.set_weights([bilinear_kernel(4, num_classes)])
            _check_meets(x, skip, head)
            score = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name=f"score_{reduction}")(skip)
            x = layers.Add(name=f"fuse_{reduction}")([x, score])
        return _upsample_to(x, size, "upsample")

    return build


def _unet(maps, infos, num_classes, size):
    """A U-Net decoder (segmentation_models_pytorch's layout): per halving of the stride, 2x nearest
    upsampling, concat with the stage at that stride (where there is one), two 3x3 conv-BN-ReLU."""
    stride = infos[-1].reduction
    _check_divisible(size, stride, "unet")
    steps = int(math.log2(stride))
    widths = UNET_WIDTHS[-steps:] if steps <= len(UNET_WIDTHS) else (UNET_WIDTHS[0],) * (steps - 5) + UNET_WIDTHS
    x = maps[-1]
    for step, width in enumerate(widths, start=1):
        reduction = stride >> step
        x = layers.UpSampling2D(2, name=f"decoder{step}_up")(x)
        at = [i for i, info in enumerate(infos) if info.reduction == reduction]
        if at:
            _check_meets(x, maps[at[-1]], "unet")
            x = layers.Concatenate(name=f"decoder{step}_concat")([x, maps[at[-1]]])
        x = _conv_bn_relu(x, width, 3, f"decoder{step}_1")
        x = _conv_bn_relu(x, width, 3, f"decoder{step}_2")
    return layers.Conv2D(num_classes, 3, padding="same", name="unet_score")(x)


def _deeplabv3(maps, infos, num_classes, size, channels=256):
    """torchvision's DeepLabHead: ASPP, 3x3 conv-BN-ReLU, 1x1 score; then bilinear upsampling."""
    x = maps[-1]
    rates = [max(1, rate * 16 // infos[-1].reduction) for rate in (6, 12, 18)]  # 12/24/36 at stride 8.
    # A rate at least the map's size leaves only the centre tap inside the map, as the map's size does: the same
    # output, without the padding TensorFlow's CPU kernel spends on a wide dilation (70x faster on a 4x4 map).
    height, width = x.shape[1:3]
    branches = [_conv_bn_relu(x, channels, 1, "aspp_0")]
    branches += [_conv_bn_relu(x, channels, 3, f"aspp_{i}", dilation=(min(rate, height), min(rate, width)))
                 for i, rate in enumerate(rates, start=1)]
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(x)
    pooled = _conv_bn_relu(pooled, channels, 1, "aspp_pool")
    branches.append(_upsample_to(pooled, x.shape[1:3], "aspp_pool_upsample"))
    x = layers.Concatenate(name="aspp_concat")(branches)
    x = _conv_bn_relu(x, channels, 1, "aspp_project")
    x = layers.Dropout(0.5, name="aspp_dropout")(x)
    x = _conv_bn_relu(x, channels, 3, "deeplab")
    x = layers.Conv2D(num_classes, 1, name="deeplab_score")(x)
    return _upsample_to(x, size, "upsample")


_HEAD_BUILDERS = {
    "fcn": _fcn, "fcn32s": _long_fcn(0), "fcn16s": _long_fcn(1), "fcn8s": _long_fcn(2), "unet": _unet,
    "deeplabv3": _deeplabv3,
}
