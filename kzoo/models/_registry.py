"""The model registry: builders register by function name; list, look up, describe.

`list_models`, `get_model` and `model_info` are the public face; the registry
also drives the test suite, so a model is tested the moment it registers.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import inspect
import math
import re
from dataclasses import dataclass
from typing import Callable

import keras


@dataclass(frozen=True)
class Family:
    """What every model of one architecture family shares.

    Attributes:
        name: Family name, e.g. "vgg".
        build: `build(opts, spec, **extras)`: the family's one builder, given
            the resolved common arguments (`_common.Options`), the model's
            spec row and the family's own keyword arguments (`dropout`,
            `sequential`, ...), documented in its docstring's Args.
        paper: Citation of the paper that introduced the family.
        default_input: Default `(height, width, channels)`.
        min_size: Smallest height/width the family accepts.
        stage_strides: Stride of each `features_only` output, in order.
        flatten_head: The classifier flattens the last feature map, so the
            top needs a fixed input size.
        default_classes: Number of classes when the user gives none.
        output_strides: The `output_stride` values the family can run at,
            by replacing the strides of its last stages with dilation (as
            torchvision's `replace_stride_with_dilation` and timm's
            `output_stride` do); empty: only its own, the last stage stride.
    """

    name: str
    build: Callable[..., keras.Model]
    paper: str
    default_input: tuple[int, int, int]
    min_size: int
    stage_strides: tuple[int, ...]
    flatten_head: bool = False
    default_classes: int = 1000
    output_strides: tuple[int, ...] = ()


@dataclass(frozen=True)
class FeatureInfo:
    """One stage's feature map, as `features_only` returns it (timm's `feature_info`).

    Every kzoo model carries a tuple of these as `model.feature_info` (all
    stages; the chosen ones for `features_only`), for heads, detectors and
    transfer learning to find the stages without reading layer names.

    Attributes:
        stage: The stage's index, as `out_indices` counts.
        layer: The layer whose output the map is.
        channels: The map's channels.
        reduction: Its stride relative to the input.
    """

    stage: int
    layer: str
    channels: int
    reduction: int


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its name, its family and its public builder."""

    name: str
    family: Family
    fn: Callable[..., keras.Model]
    default_input: tuple[int, int, int]
    default_classes: int

    @property
    def small_input(self) -> tuple[int, int, int]:
        """A small input the model takes: its family's minimum size, at least 32 but at most the default."""
        height, _, channels = self.default_input
        size = min(max(self.family.min_size, 32), height)
        return (size, size, channels)


_MODELS: dict[str, ModelEntry] = {}


def register_model(
    family: Family,
    *,
    default_input: tuple[int, int, int] | None = None,
    default_classes: int | None = None,
):
    """Decorator that registers a model builder under its function name.

    The function's signature (as shown by `help()` and notebooks) is the
    argument set the registry enforces: an argument outside it raises a
    `TypeError` that names the model and which models take it.
    `_builder.register_family` makes and registers the builders of a spec table.

    Args:
        family: The family the model belongs to.
        default_input: Overrides the family's default input shape.
        default_classes: Overrides the family's number of classes.

    Raises:
        ValueError: If a model of the same name is already registered.
    """

    def decorator(fn):
        name = fn.__name__
        if name in _MODELS:
            raise ValueError(f"Model {name!r} is already registered; pick another name.")
        signature = inspect.signature(fn)
        accepted = [p.name for p in signature.parameters.values() if p.kind == p.KEYWORD_ONLY]

        @functools.wraps(fn)
        def builder(*args, **kwargs):
            if args:
                raise TypeError(
                    f"{name}() takes keyword arguments only, e.g. {name}(num_classes=10); "
                    f"it was given {len(args)} positional argument(s)."
                )
            for argument in kwargs:
                if argument not in accepted:
                    raise TypeError(_unknown_argument(name, argument, accepted))
            return fn(**kwargs)

        builder.__signature__ = signature
        _MODELS[name] = ModelEntry(
            name=name,
            family=family,
            fn=builder,
            default_input=default_input or family.default_input,
            default_classes=default_classes or family.default_classes,
        )
        return builder

    return decorator


def _unknown_argument(model: str, argument: str, accepted: list[str]) -> str:
    """The message for a builder argument the model does not take: who takes it, or what was meant."""
    takers: dict[str, list[str]] = {}
    for entry in _MODELS.values():
        if argument in inspect.signature(entry.fn).parameters:
            takers.setdefault(entry.family.name, []).append(entry.name)
    if takers:
        groups = [names[0] if len(names) == 1 else f"the {family} models ({names[0]} ... {names[-1]})"
                  for family, names in sorted(takers.items())]
        hint = f"Only these take {argument}=: {', '.join(groups)}."
    else:
        close = difflib.get_close_matches(argument, accepted, n=1, cutoff=0.6)
        hint = f"Did you mean {close[0]!r}?" if close else f"Its arguments: {', '.join(accepted)}."
    return f"{model}() has no argument {argument!r}. {hint}"


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered models matching a shell wildcard, sorted.

    Args:
        pattern: A shell-style wildcard such as `"resnet*"` or `"vgg1?_bn"`.

    Returns:
        The matching model names in natural order (`resnet18` before `resnet101`).
    """
    names = [name for name in _MODELS if fnmatch.fnmatchcase(name, pattern)]
    return sorted(names, key=_natural_key)


def _natural_key(name: str):
    letters, digits, rest = re.match(r"([a-z]*)(\d*)(.*)", name).groups()
    return letters, int(digits or 0), rest


def model_entry(name: str) -> ModelEntry:
    """The registry entry of `name`; an unknown name raises a ValueError with suggestions."""
    if name in _MODELS:
        return _MODELS[name]
    close = difflib.get_close_matches(name, list(_MODELS), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"Unknown model {name!r}.{hint} `kzoo.list_models()` lists all "
        f"{len(_MODELS)} models."
    )


def get_model(name: str, **kwargs) -> keras.Model:
    """Builds a registered model by name.

    Args:
        name: A name from `list_models()`, e.g. `"resnet50"`.
        **kwargs: The builder's arguments (`num_classes`, `weights`, ...).

    Returns:
        The built `keras.Model`.

    Raises:
        ValueError: For an unknown name; the message suggests the closest names.
    """
    return model_entry(name).fn(**kwargs)


def model_info(name: str) -> dict:
    """Describes a model, with figures computed from a model built at its default input.

    Args:
        name: A registered model name.

    Returns:
        A dict with `name, family, paper, params, trainable_params, macs, flops`
        (one multiply-add counts as two FLOPs), `default_input, min_size,
        num_classes, weights` (available weight tags), `feature_strides`,
        `feature_channels` and `feature_layers` (of each stage's map, as
        `model.feature_info` gives them).
    """
    return dict(_model_info(model_entry(name).name))


@functools.lru_cache(maxsize=None)
def _model_info(name: str) -> tuple:
    # Imported here: weights imports this module to validate model names.
    from kzoo import weights as weights_lib
    from kzoo.models._flops import count_macs

    entry = _MODELS[name]
    model = entry.fn()
    macs = count_macs(model)
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    info = dict(
        name=name,
        family=entry.family.name,
        paper=entry.family.paper,
        params=model.count_params(),
        trainable_params=trainable,
        macs=macs,
        flops=2 * macs,
        default_input=entry.default_input,
        min_size=entry.family.min_size,
        num_classes=entry.default_classes,
        weights=tuple(weights_lib.available_weights(name)),
        feature_strides=entry.family.stage_strides,
        feature_channels=tuple(info.channels for info in model.feature_info),
        feature_layers=tuple(info.layer for info in model.feature_info),
    )
    return tuple(info.items())
