"""The transfer model: a pretrained backbone with a new head as one flat model, its modes and stages.

`build` makes one flat functional model (preprocessing, backbone, pooling,
head) that TFMOT, the bridge and the TFLite converter take as it is; layer
names carry the roles (`preprocess`, `head_*`), so a saved model keeps them.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from kzoo import weights as weights_lib
from kzoo.models import _registry

MODES = ("head", "top", "full")
POOLINGS = ("avg", "max", "flatten")
PREPROCESS = "preprocess"
HEAD_PREFIX = "head_"


def _unit_image_steps(mode: str):
    """`weights.PREPROCESSING[mode]` for images in [0, 1]: output channel c = scale[c] * x[..., order[c]] + offset[c]."""
    steps = weights_lib.PREPROCESSING[mode]
    std, mean = np.array(steps.std), np.array(steps.mean)
    return steps.order, 255.0 / std, -mean / std


def build(
    backbone,
    num_classes: int,
    *,
    weights="imagenet",
    input_shape=None,
    mode: str = "head",
    trainable_from: str | int | None = None,
    freeze_batchnorm: bool = True,
    pooling: str = "avg",
    head_dropout: float = 0.2,
    head_units=(),
    classifier_activation="softmax",
    preprocessing="auto",
    name: str | None = None,
) -> keras.Model:
    """A pretrained backbone with a new classification head, as one flat functional model.

    The model takes RGB (or, for LeNet, grey) images in [0, 1], as
    `kzoo.data` gives them, and applies the preprocessing the weights were
    trained with as its first layer.

    Args:
        backbone: A registry name (`kzoo.list_models()`) or a kzoo builder such
            as `kzoo.resnet50`; it is built with `include_top=False`.
        num_classes: Classes of the new head.
        weights: A weights tag ("imagenet"), the path to a file saved from the
            backbone (with or without its classifier: `.keras`, `.weights.h5`,
            or keras.applications' legacy `_notop.h5`), or None.
        input_shape: (height, width, channels); default the model's.
        mode: What trains: "head" (only the new head), "top" (the head and the
            backbone from `trainable_from` on) or "full" (everything).
        trainable_from: With mode="top": a stage of `stages(model)` (its name
            such as "conv5" or "block5", or its index in `model.feature_info`),
            a layer name, or a layer-name prefix. Default: the last stage that
            holds a convolution (conv5 for ResNets, block5 for VGG, conv2 for
            LeNet, conv4_block6_preact_bn for ResNet v2).
        freeze_batchnorm: Keep every BatchNormalization layer of the backbone
            frozen, and so in inference mode with its ImageNet statistics, in
            every mode (the Keras transfer-learning guide's advice). With
            False, BN layers in the trained part train and update their statistics.
        pooling: "avg", "max" (global pooling) or "flatten" (keeps the layout
            of small feature maps, e.g. LeNet's 5x5x16).
        head_dropout: Dropout rate before the classifier; 0 for none.
        head_units: Sizes of hidden ReLU layers in the head, e.g. (256,).
        classifier_activation: "softmax", or None for logits.
        preprocessing: "auto" (from the weights record: "caffe" for
            keras.applications' VGG16/19 and ResNet v1, "tf" for ResNet v2 and
            GoogLeNet, "torch" for torchvision's and timm's weights; none for
            a file that is not a published one), "caffe", "tf", "torch" or None.
        name: Model name; default "<backbone>_transfer".

    Returns:
        The `keras.Model`, with `mode` applied (see `set_mode`).

    Raises:
        ValueError: For a backbone that is not a registry model, `num_classes
            < 1`, an unknown mode, stage, pooling or preprocessing, and the
            weight errors of the builders (unknown tag, file that does not fit).
        RuntimeError: If tagged weights are neither cached nor downloadable;
            the message says where to put the file.
    """
    backbone_name = _backbone_name(backbone)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be a positive integer: the classes of your data.")
    _check_mode(mode, trainable_from)
    if not 0.0 <= head_dropout < 1.0:
        raise ValueError(f"head_dropout={head_dropout} must be in [0, 1); 0 turns dropout off.")
    head_units = tuple(head_units)
    if not all(isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in head_units):
        raise ValueError(f"head_units={head_units} must be positive integers, e.g. (256,), or () for none.")
    extractor = feature_extractor(
        backbone_name, weights=weights, input_shape=input_shape, pooling=pooling, preprocessing=preprocessing
    )
    x = extractor.output
    for index, units in enumerate(head_units, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"{HEAD_PREFIX}fc{index}")(x)
    if head_dropout:
        x = keras.layers.Dropout(head_dropout, name=f"{HEAD_PREFIX}dropout")(x)
    outputs = keras.layers.Dense(
        num_classes, activation=classifier_activation, name=f"{HEAD_PREFIX}predictions"
    )(x)
    model = keras.Model(extractor.input, outputs, name=name or f"{backbone_name}_transfer")
    model.feature_info = extractor.feature_info
    return set_mode(model, mode, trainable_from=trainable_from, freeze_batchnorm=freeze_batchnorm)


def feature_extractor(backbone, *, weights="imagenet", input_shape=None, pooling: str = "avg",
                      preprocessing="auto") -> keras.Model:
    """Preprocessing, the backbone and global pooling: images in [0, 1] to embeddings.

    Args: as in `build`.

    Returns:
        A flat functional model whose last layer, `head_pool`, gives one
        vector per image.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r} is not one of {POOLINGS}.")
    trunk = pretrained_backbone(backbone, weights=weights, input_shape=input_shape, preprocessing=preprocessing)
    pool = {
        "avg": keras.layers.GlobalAveragePooling2D,
        "max": keras.layers.GlobalMaxPooling2D,
        "flatten": keras.layers.Flatten,
    }[pooling](name=f"{HEAD_PREFIX}pool")
    extractor = keras.Model(trunk.input, pool(trunk.output), name=f"{_backbone_name(backbone)}_features")
    extractor.feature_info = trunk.feature_info  # The backbone's stages; the layers keep their names.
    return extractor


def pretrained_backbone(backbone, *, weights="imagenet", input_shape=None, preprocessing="auto",
                        out_indices=None, output_stride=None) -> keras.Model:
    """The preprocessing its weights expect and the backbone, as one flat model from images in [0, 1].

    What `build`, `feature_extractor` and `kzoo.anomaly`'s detectors start from.

    Args:
        backbone, weights, input_shape, preprocessing: As in `build`.
        out_indices: None for the last feature map (`include_top=False`), or
            the stages (`model.feature_info` indices) whose maps to return,
            as `features_only=True, out_indices=...` does.
        output_stride: The builders' `output_stride` (dilated last stages), or None for the model's own.

    Returns:
        A functional model carrying the backbone's `feature_info` (of the
        returned stages).
    """
    backbone_name = _backbone_name(backbone)
    entry = _registry.model_entry(backbone_name)
    input_shape = tuple(input_shape) if input_shape is not None else entry.default_input
    mode = _preprocessing_mode(backbone_name, weights, preprocessing, input_shape)
    stages = {} if out_indices is None else dict(features_only=True, out_indices=tuple(out_indices))
    if output_stride is not None:
        stages["output_stride"] = output_stride
    # Built once with its weights (the builder checks the file and names the
    # first layer that does not fit), then again on the preprocessed input, so
    # the backbone's layers sit in the same graph as the preprocessing and the
    # head: a nested model would stop TFMOT and the converter.
    pretrained = _registry.get_model(backbone_name, include_top=False, weights=weights, input_shape=input_shape,
                                     **stages)
    image = keras.Input(shape=input_shape, name="image")
    x = image if mode is None else _preprocessing_layer(mode)(image)
    trunk = _registry.get_model(backbone_name, include_top=False, input_tensor=x, input_shape=input_shape, **stages)
    for layer in pretrained.layers:
        if layer.weights:
            trunk.get_layer(layer.name).set_weights(layer.get_weights())
    model = keras.Model(image, trunk.output, name=f"{backbone_name}_backbone")
    model.feature_info = pretrained.feature_info
    return model


def set_mode(model: keras.Model, mode: str, *, trainable_from: str | int | None = None,
             freeze_batchnorm: bool = True) -> keras.Model:
    """Freezes and unfreezes the layers of a model made by `build`; returns it.

    Call again between training phases (and re-compile; `kzoo.training.fit` does).
    The preprocessing layer never trains.

    Args:
        model: A model from `build` (or loaded from its `.keras` file).
        mode: "head", "top" or "full"; see `build`.
        trainable_from: With mode="top": stage or layer name; see `build`.
        freeze_batchnorm: See `build`.

    Raises:
        ValueError: For an unknown mode or stage, or a model not made by `build`.
    """
    _check_mode(mode, trainable_from)
    backbone, head = backbone_layers(model), [layer for layer in model.layers if layer.name.startswith(HEAD_PREFIX)]
    if not head:
        raise ValueError(
            f"Model {model.name!r} has no '{HEAD_PREFIX}*' layers: set_mode takes models made by "
            "kzoo.transfer.build. For other models set `layer.trainable` yourself."
        )
    first_trained = {"head": len(backbone), "full": 0}.get(mode)
    if mode == "top":
        first_trained = _stage_start(model, default_stage(model) if trainable_from is None else trainable_from)
    for index, layer in enumerate(backbone):
        is_batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = index >= first_trained and not (freeze_batchnorm and is_batchnorm)
    for layer in head:
        layer.trainable = True
    if PREPROCESS in {layer.name for layer in model.layers}:
        model.get_layer(PREPROCESS).trainable = False
    return model


def backbone_layers(model: keras.Model) -> list:
    """The backbone's layers of a `build` model, in order (no input, preprocessing or head)."""
    return [
        layer for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
        and layer.name != PREPROCESS and not layer.name.startswith(HEAD_PREFIX)
    ]


def stages(model: keras.Model) -> list[str]:
    """The backbone's stages, in order: one per map of `model.feature_info`, as `features_only` draws them.

    A stage is named by the layer-name prefix its layers start with where that
    prefix starts exactly there (conv5, block5), else by its first layer
    (ResNet v2's stride-32 stage starts inside conv4, at conv4_block6_preact_bn,
    since keras.applications put each stack's stride in its last block).
    """
    return [name for name, _ in _stage_starts(model)]


def default_stage(model: keras.Model) -> str:
    """The last backbone stage that holds a convolution: what mode="top" trains by default."""
    backbone = backbone_layers(model)
    starts = _stage_starts(model)
    ends = [start for _, start in starts[1:]] + [len(backbone)]
    return [
        name for (name, start), end in zip(starts, ends)
        if any(isinstance(layer, keras.layers.Conv2D) for layer in backbone[start:end])
    ][-1]


def _backbone_name(backbone) -> str:
    """The registry name of `backbone` (a name or a registered builder)."""
    name = backbone if isinstance(backbone, str) else getattr(backbone, "__name__", None)
    if isinstance(name, str) and name in _registry.list_models():
        return name
    if isinstance(backbone, str):
        return _registry.model_entry(backbone).name  # Raises, with the closest names.
    raise ValueError(
        f"backbone={backbone!r} is not a kzoo model: transfer.build needs a registry name or builder "
        "whose backbone can be built with include_top=False (kzoo.list_models() lists them). To put a "
        "head on a keras.Model of your own, add the layers to it directly."
    )


def _check_mode(mode, trainable_from):
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}: 'head' trains the new head only, "
                         "'top' also the last stage(s), 'full' everything.")
    if trainable_from is not None and mode != "top":
        raise ValueError(f"trainable_from={trainable_from!r} only applies with mode='top' (got mode={mode!r}).")


def _stage_start(model: keras.Model, stage) -> int:
    """Index in `backbone_layers` where `stage` starts: a stage (name or index), a layer name or a name prefix."""
    backbone, starts = backbone_layers(model), _stage_starts(model)
    if isinstance(stage, int) and not isinstance(stage, bool) and 0 <= stage < len(starts):
        return starts[stage][1]
    named = dict(starts)
    if stage in named:
        return named[stage]
    for index, layer in enumerate(backbone):
        if layer.name == stage or layer.name.startswith(f"{stage}_"):
            return index
    prefixes = dict.fromkeys(_prefix(layer.name) for layer in backbone)
    raise ValueError(
        f"trainable_from={stage!r} is neither a stage nor a layer of this backbone. Its stages "
        f"(model.feature_info), in order: {', '.join(named)}, or their indices 0-{len(starts) - 1}; a layer "
        f"name from model.summary() or a name prefix works too: {', '.join(prefixes)}."
    )


def _stage_starts(model: keras.Model) -> list[tuple[str, int]]:
    """(name, index of its first layer in `backbone_layers`) per feature stage."""
    backbone = backbone_layers(model)
    index = {layer.name: i for i, layer in enumerate(backbone)}
    starts = [0] + [index[layer] + 1 for layer in _feature_layers(model, index)[:-1]]
    names = []
    for start in starts:
        prefix = _prefix(backbone[start].name)
        first_with_prefix = next(i for i, layer in enumerate(backbone) if _prefix(layer.name) == prefix)
        names.append(prefix if first_with_prefix == start and prefix not in names else backbone[start].name)
    return list(zip(names, starts))


def _feature_layers(model: keras.Model, index: dict[str, int]) -> list[str]:
    """The backbone's stage-end layers: from `model.feature_info`, or, for a model loaded from a file
    (Keras keeps no such attribute), from the catalog entry whose stage ends the backbone holds,
    ending with its last layer (the deepest such entry: resnet101 over resnet50)."""
    infos = getattr(model, "feature_info", None)
    if infos:
        return [info.layer for info in infos]
    from kzoo import catalog

    last = max(index.values())
    candidates = [
        entry["feature_layers"] for entry in catalog.load().values()
        if all(layer in index for layer in entry["feature_layers"]) and index[entry["feature_layers"][-1]] == last
    ]
    if not candidates:
        raise ValueError(
            f"Model {model.name!r} has no feature_info and its backbone matches no kzoo model, so its "
            "stages are unknown: give trainable_from as a layer name from model.summary()."
        )
    return max(candidates, key=lambda layers: [index[layer] for layer in layers])


def _prefix(layer_name: str) -> str:
    return layer_name.split("_")[0]


def _preprocessing_mode(backbone_name: str, weights, preprocessing, input_shape):
    if preprocessing == "auto":
        preprocessing = _record_preprocessing(backbone_name, weights)
    if preprocessing is not None and preprocessing not in weights_lib.PREPROCESSING:
        modes = ", ".join(map(repr, weights_lib.PREPROCESSING))
        raise ValueError(f"preprocessing={preprocessing!r} is not one of 'auto', {modes} or None.")
    if preprocessing is not None and input_shape[-1] != 3:
        raise ValueError(
            f"preprocessing={preprocessing!r} needs RGB input, but input_shape={input_shape}. "
            "Give 3 channels, or preprocessing=None."
        )
    return preprocessing


def _record_preprocessing(backbone_name: str, weights):
    """The weights record's preprocessing, for a tag or a path to one of the record's files."""
    if weights is None:
        return None
    weights = os.fspath(weights)
    if weights == "default":
        weights = weights_lib.default_tag(backbone_name) or weights
    if not weights_lib.looks_like_path(weights):
        return weights_lib.get_record(backbone_name, weights).preprocessing
    file_name = os.path.basename(weights)
    for record in weights_lib.RECORDS.values():
        if record.model == backbone_name and file_name in {f.file_name for f in (record.top, record.no_top) if f}:
            return record.preprocessing
    return None


def _preprocessing_layer(mode: str) -> keras.layers.Conv2D:
    """A frozen 1x1 convolution that applies `weights.PREPROCESSING[mode]`.

    Rescaling cannot swap channels (caffe's RGB -> BGR) and a Lambda layer is
    not portable (TFMOT, the bridge and safe `.keras` loading refuse it); a
    1x1 convolution is a built-in layer every tool takes, and costs 9
    multiply-adds per pixel.
    """
    order, scale, offset = _unit_image_steps(mode)
    kernel = np.zeros((1, 1, 3, 3), dtype="float32")
    for output_channel, input_channel in enumerate(order):
        kernel[0, 0, input_channel, output_channel] = scale[output_channel]
    layer = keras.layers.Conv2D(3, 1, name=PREPROCESS, trainable=False)
    layer.build((None, None, None, 3))
    layer.set_weights([kernel, offset.astype("float32")])
    return layer
