"""What every family builder shares: the argument block and its checks, the input, the head, assembly.

`resolve_options` is the one definition of the keras.applications-style
arguments every model takes (`_builder` gives them to each public builder);
a family's `build(opts, spec, ...)` builds its trunk from the resolved
`Options` and hands the tensors to `assemble` (or `linear_model`), which add
the classifier or pooling, load weights, and cut out `features_only` backbones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import keras
from keras import layers

from kzoo import weights as weights_lib
from kzoo.data import checks
from kzoo.models import _registry


@dataclass(frozen=True)
class Options:
    """The keras.applications-style arguments of one build, checked and resolved."""

    variant: str
    include_top: bool
    weights: str | None  # None or a local file: a tag is fetched while resolving, before building.
    input_tensor: Any
    input_shape: tuple
    pooling: str | None
    num_classes: int
    classifier_activation: Any
    name: str
    features_only: bool
    out_indices: tuple[int, ...]
    output_stride: int


def resolve_options(
    variant: str,
    *,
    include_top: bool = True,
    weights: str | None = None,
    input_tensor=None,
    input_shape: Sequence[int | None] | None = None,
    pooling: str | None = None,
    num_classes: int | None = None,
    classes: int | None = None,
    classifier_activation="softmax",
    name: str | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    output_stride: int | None = None,
) -> Options:
    """Checks the common builder arguments and fills in the model's defaults.

    Args:
        variant: Registered model name, e.g. "vgg16".
        Others: as documented in `ARGUMENT_DOCS` (and so on every builder).

    Returns:
        The resolved `Options`.

    Raises:
        ValueError: Naming the bad value, what is allowed and what to do.
    """
    entry = _registry.model_entry(variant)
    family = entry.family
    flatten_head = family.flatten_head
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            f"kzoo models are channels_last; keras.config.image_data_format() is "
            f"{keras.config.image_data_format()!r}. Call "
            "keras.config.set_image_data_format('channels_last') first."
        )
    num_classes = _resolve_num_classes(num_classes, classes, entry.default_classes)
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling={pooling!r} is not one of None, 'avg', 'max'.")
    if features_only:
        if pooling is not None:
            raise ValueError(
                f"pooling={pooling!r} cannot be combined with features_only=True, "
                "which returns the stage feature maps unpooled. Drop `pooling`."
            )
        include_top = False
    out_indices = _resolve_out_indices(out_indices, len(family.stage_strides), features_only)
    output_stride = _resolve_output_stride(variant, family, output_stride)
    input_shape = _resolve_input_shape(
        variant, entry, input_shape, input_tensor, include_top, flatten_head
    )
    weights = weights_lib.check_weights_argument(
        variant,
        weights,
        include_top=include_top,
        num_classes=num_classes,
        classifier_activation=classifier_activation,
        input_shape=input_shape,
    )
    is_tag = weights is not None and not weights_lib.looks_like_path(weights)
    if is_tag and include_top and flatten_head and input_shape != entry.default_input:
        raise ValueError(
            f"input_shape={input_shape}: with weights={weights!r} and include_top=True, "
            f"{variant}'s classifier needs input_shape={entry.default_input}. Use "
            "include_top=False for other sizes."
        )
    if is_tag:  # Fetched (or found in the cache) before anything is built: a missing file fails at once.
        weights = weights_lib.fetch(weights_lib.get_record(variant, weights).file(include_top))
    return Options(
        variant=variant,
        include_top=include_top,
        weights=weights,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        num_classes=num_classes,
        classifier_activation=classifier_activation,
        name=name or variant,
        features_only=features_only,
        out_indices=out_indices,
        output_stride=output_stride,
    )


# The docs of `resolve_options`' arguments, as every builder's docstring shows them; the
# {placeholders} are filled from the family and the model.
ARGUMENT_DOCS = {
    "include_top": "End in the classifier (with `num_classes` outputs).",
    "weights": "None (random), {weights}or the path to a weights file (.weights.h5, .keras, legacy .h5) or to "
               "a torchvision/timm checkpoint (.pth, .pt, .bin, .safetensors), converted as it loads.",
    "input_tensor": "Optional Keras tensor to use as the input.",
    "input_shape": "(height, width, channels); default {default_input}; height and width at least {min_size}"
                   "{none_sizes}.",
    "pooling": 'With include_top=False: None, "avg" or "max" global pooling.',
    "num_classes": "Number of classes (default {default_classes}).",
    "classes": "Alias of `num_classes`, as keras.applications names it.",
    "classifier_activation": 'Activation of the last layer ("softmax"); None gives logits.',
    "name": "Model name; defaults to the model's registry name.",
    "features_only": "Return the stage feature maps (strides {strides}) instead of the classifier.",
    "out_indices": "Which stages to return with features_only (default: all).",
    "output_stride": "Stride of the last feature map: {output_strides}. Below the model's own, the last "
                     "stages keep their resolution and dilate their convolutions instead (same weights), "
                     "as segmentation heads want.",
}


def _resolve_num_classes(num_classes, classes, default: int) -> int:
    if num_classes is not None and classes is not None and num_classes != classes:
        raise ValueError(
            f"num_classes={num_classes} and classes={classes} disagree; `classes` is "
            "an alias of `num_classes`, give only one."
        )
    value = num_classes if num_classes is not None else classes
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"num_classes={value!r} must be a positive integer, e.g. 10.")
    return value


def _resolve_out_indices(out_indices, num_stages: int, features_only: bool) -> tuple:
    if out_indices is None:
        return tuple(range(num_stages))
    if not features_only:
        raise ValueError("out_indices only applies with features_only=True; pass both.")
    out_indices = tuple(out_indices)
    valid = range(num_stages)
    bad = [i for i in out_indices if isinstance(i, bool) or i not in valid]
    if bad or not out_indices or len(set(out_indices)) != len(out_indices):
        raise ValueError(
            f"out_indices={out_indices} must be distinct stage indices from "
            f"{list(valid)} (this model has {num_stages} stages)."
        )
    return out_indices


def _resolve_output_stride(variant, family, output_stride) -> int:
    native = family.stage_strides[-1]
    if output_stride is None or output_stride == native:
        return native
    allowed = family.output_strides or (native,)
    if isinstance(output_stride, bool) or output_stride not in allowed:
        dilatable = sorted({_registry.model_entry(name).family.name for name in _registry.list_models()
                            if _registry.model_entry(name).family.output_strides})
        can = (f"it runs at output_stride {', '.join(map(str, allowed))}" if family.output_strides else
               f"its strides cannot be replaced by dilation, so it runs at output_stride={native} only")
        raise ValueError(
            f"output_stride={output_stride!r} is not possible for {variant}: {can}. Pick one of those, or a "
            f"backbone of a family that dilates ({', '.join(dilatable)})."
        )
    return output_stride


def _resolve_input_shape(variant, entry, input_shape, input_tensor, include_top, flatten_head):
    family = entry.family
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        return tuple(entry.default_input)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or not all(
        d is None or (isinstance(d, int) and d > 0) for d in input_shape
    ) or input_shape[-1] is None:
        raise ValueError(
            f"input_shape={input_shape} must be (height, width, channels) with positive "
            f"integers (height and width may be None), e.g. {entry.default_input}."
        )
    if checks.looks_channels_first(input_shape):
        channels, height, width = input_shape
        raise ValueError(
            f"input_shape={input_shape} looks channels-first (channels, height, width); "
            f"kzoo models are channels-last: pass input_shape={(height, width, channels)}, and "
            "give images as (batch, height, width, channels), e.g. np.transpose(x, (0, 2, 3, 1))."
        )
    height, width, _ = input_shape
    small = [d for d in (height, width) if d is not None and d < family.min_size]
    if small:
        raise ValueError(
            f"input_shape={input_shape} is too small for {variant}: height and width "
            f"must be at least {family.min_size}. Resize the images (e.g. with "
            f"keras.layers.Resizing) to at least {family.min_size}x{family.min_size}."
        )
    if include_top and flatten_head and None in (height, width):
        raise ValueError(
            f"input_shape={input_shape}: {variant}'s classifier flattens the last "
            "feature map, so include_top=True needs a fixed height and width. Give "
            "them, or use include_top=False."
        )
    return input_shape


def model_input(opts: Options):
    """Returns `(model_inputs, image_tensor)` for the options' input."""
    if opts.input_tensor is None:
        image = keras.Input(shape=opts.input_shape, name="input")
        return image, image
    if not keras.backend.is_keras_tensor(opts.input_tensor):
        image = keras.Input(tensor=opts.input_tensor, shape=opts.input_shape)
        return image, image
    return keras.utils.get_source_inputs(opts.input_tensor), opts.input_tensor


def pooling_layers(pooling: str | None) -> list[layers.Layer]:
    """The global pooling layer for `include_top=False`, if any."""
    if pooling == "avg":
        return [layers.GlobalAveragePooling2D(name="avg_pool")]
    if pooling == "max":
        return [layers.GlobalMaxPooling2D(name="max_pool")]
    return []


def classifier(opts: Options) -> layers.Dense:
    """The final dense layer, named like keras.applications' ("predictions")."""
    return layers.Dense(
        opts.num_classes, activation=opts.classifier_activation, name="predictions"
    )


def assemble(opts: Options, inputs, outputs, stages: Sequence) -> keras.Model:
    """Makes the functional model, loads its weights, cuts out feature outputs.

    Args:
        opts: The resolved options.
        inputs: The model inputs (from `model_input`).
        outputs: The final tensor (classifier, pooling or last feature map).
        stages: The stage output tensors, one per `family.stage_strides`.

    Returns:
        The `keras.Model`; with `features_only`, one whose outputs are the
        stages at `opts.out_indices`.
    """
    model = keras.Model(inputs, outputs, name=opts.name)
    weights_lib.load_weights(model, opts.variant, opts.weights, include_top=opts.include_top,
                             family=_registry.model_entry(opts.variant).family.name)
    infos = feature_info(opts, [(tensor._keras_history.operation.name, tensor.shape[-1]) for tensor in stages])
    if opts.features_only:
        model = keras.Model(inputs, [stages[i] for i in opts.out_indices], name=opts.name)
        infos = tuple(infos[i] for i in opts.out_indices)
    model.feature_info = infos
    return model


def feature_info(opts: Options, stage_layers) -> tuple[_registry.FeatureInfo, ...]:
    """The `FeatureInfo` of every stage, from `(layer name, channels)` pairs in stage order."""
    strides = _registry.model_entry(opts.variant).family.stage_strides
    return tuple(_registry.FeatureInfo(stage, layer, channels, min(stride, opts.output_stride))
                 for stage, ((layer, channels), stride) in enumerate(zip(stage_layers, strides)))


def linear_model(
    opts: Options,
    trunk: Sequence[layers.Layer],
    stage_ends: Sequence[int],
    head: Sequence[layers.Layer],
    sequential: bool,
) -> keras.Model:
    """Builds a model that is a plain stack of layers, Sequential or functional.

    Both forms hold the same layers in the same order, so their weights are
    interchangeable (`set_weights`, `.weights.h5`).

    Args:
        opts: The resolved options.
        trunk: The feature layers, in order.
        stage_ends: Indices into `trunk` of each stage's last layer.
        head: The classifier or pooling layers.
        sequential: Return a `keras.Sequential` instead of a functional model.
    """
    if sequential:
        if opts.features_only or opts.input_tensor is not None:
            raise ValueError(
                "sequential=True cannot be combined with features_only or input_tensor, "
                "which need a functional model. Drop sequential=True."
            )
        model = keras.Sequential(
            [keras.Input(shape=opts.input_shape), *trunk, *head], name=opts.name
        )
        weights_lib.load_weights(model, opts.variant, opts.weights, include_top=opts.include_top,
                                 family=_registry.model_entry(opts.variant).family.name)
        model.feature_info = feature_info(opts, [(trunk[i].name, trunk[i].output.shape[-1]) for i in stage_ends])
        return model
    inputs, x = model_input(opts)
    stages = []
    for index, layer in enumerate(trunk):
        x = layer(x)
        if index in stage_ends:
            stages.append(x)
    for layer in head:
        x = layer(x)
    return assemble(opts, inputs, x, stages)
