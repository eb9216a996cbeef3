"""The public builders, made from a family's spec table: one argument block for every model.

A family module declares a spec table (one row per model, with its
docstring line) and a `Family` whose `build(opts, spec, **extras)` takes only
its own extras; `register_family` makes each row a function named after it,
with keras.applications' arguments (`_common.resolve_options`) plus the
extras in its signature and docstring, and registers it. Adding a model is
one spec row.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Callable

import keras

from kzoo import weights as weights_lib
from kzoo.models import _common
from kzoo.models._registry import Family, register_model

_COMMON = [p for p in inspect.signature(_common.resolve_options).parameters.values() if p.kind == p.KEYWORD_ONLY]


def register_family(family: Family, specs: dict[str, Any]) -> dict[str, Callable[..., keras.Model]]:
    """Makes and registers one public builder per spec row.

    Args:
        family: The family; its `build(opts, spec, **extras)` builds a model.
        specs: Model name -> spec row. Each row has a `doc` attribute: the
            first line of the builder's docstring.

    Returns:
        Model name -> registered builder, for the family module's namespace.
    """
    extras = [p for p in inspect.signature(family.build).parameters.values() if p.kind == p.KEYWORD_ONLY]
    extra_names = {p.name for p in extras}
    signature = inspect.Signature([*_COMMON, *extras], return_annotation="keras.Model")
    builders = {}
    for name, spec in specs.items():
        build = _builder(family, name, spec, extra_names)
        build.__signature__ = signature
        builders[name] = register_model(family)(build)
        builders[name].__doc__ = _docstring(family, name, spec)
    return builders


def _builder(family: Family, name: str, spec, extra_names: set[str]) -> Callable[..., keras.Model]:
    def build(**kwargs) -> keras.Model:
        own = {key: kwargs.pop(key) for key in list(kwargs) if key in extra_names}
        return family.build(_common.resolve_options(name, **kwargs), spec, **own)

    build.__name__ = build.__qualname__ = name
    build.__module__ = family.build.__module__
    return build


def _docstring(family: Family, name: str, spec) -> str:
    tags = weights_lib.available_weights(name)
    size = family.min_size
    published = "".join(f'"{tag}" (published weights), ' for tag in tags)
    values = dict(
        weights=published + ('"default" (the first of them), ' if tags else ""),
        default_input=family.default_input, min_size=f"{size}x{size}",
        none_sizes="" if family.flatten_head else " (None for any size)",
        default_classes=family.default_classes, strides=", ".join(map(str, family.stage_strides)),
        output_strides=(" or ".join(map(str, family.output_strides)) + f" (default {family.stage_strides[-1]})"
                        if family.output_strides else f"{family.stage_strides[-1]} only, this family does not dilate"),
    )
    lines = [spec.doc, "", f"{family.paper}.", "", "Args:"]
    lines += [f"    {argument}: {doc.format(**values)}" for argument, doc in _common.ARGUMENT_DOCS.items()]
    lines += _extra_argument_docs(family.build)
    lines += ["", "Returns:", "    A `keras.Model`."]
    return "\n".join(lines)


def _extra_argument_docs(build) -> list[str]:
    """The Args entries of a family's `build` docstring, but `opts` and `spec`."""
    doc = inspect.getdoc(build) or ""
    match = re.search(r"^Args:\n(.*?)(?:\n\n|\Z)", doc, re.S | re.M)
    if not match:
        return []
    entries, keep = [], False
    for line in match.group(1).splitlines():
        if not line.startswith("        "):  # A new entry ("    name: ...").
            keep = line.strip().split(":")[0] not in ("opts", "spec")
        if keep:
            entries.append(line)
    return entries
