"""Checkpoint conversion: PyTorch and safetensors weights into kzoo models, checked as they move.

- `readers`: a checkpoint file as NumPy arrays, executing nothing.
- `maps`: one converter per family, which tensor fills which Keras weight.
- `port`: the moving, for every family, with every weight accounted for.

`load_checkpoint` joins them; `kzoo.weights` calls it for `weights=` files
and for published torchvision/timm weights (converted once, then cached).
"""

from __future__ import annotations

import os

from kzoo.convert.maps import CONVERTERS, FIXED_LAYERS, Converter, after_flatten, layer_entries
from kzoo.convert.port import port, torch_conv_kernel, torch_dense_kernel
from kzoo.convert.readers import CHECKPOINT_SUFFIXES, CheckpointError, checkpoint_keys, read_checkpoint


def load_checkpoint(model, family: str, path, *, tensors=None) -> None:
    """Fills a built kzoo model from a torchvision/timm-layout checkpoint file.

    Args:
        model: The model, as its kzoo builder made it.
        family: Its family name (`kzoo.model_info(name)["family"]`).
        path: A `.pth`/`.pt`/`.bin` or `.safetensors` file.
        tensors: Its tensors, when the caller has read them already (`read_checkpoint`).

    Raises:
        CheckpointError: For an unsafe, truncated or corrupt file.
        ValueError: For a family without a converter, or a checkpoint that
            does not fit (the message names the first offending key and layer).
    """
    converter = CONVERTERS.get(family)
    if converter is None:
        raise ValueError(
            f"{model.name} ({family}) has no converter for PyTorch checkpoints: kzoo converts "
            f"{', '.join(sorted(CONVERTERS))} models. Pass a Keras weights file (.weights.h5, .keras) instead."
        )
    tensors = read_checkpoint(path) if tensors is None else tensors
    key_map = converter.key_map(model)
    used = {(entry[0] if isinstance(entry, tuple) else entry) for entries in key_map.values() for entry in entries}
    dropped = [prefix for prefix in converter.optional if not any(key.startswith(prefix) for key in used)]
    if not any(key.startswith(converter.head) for key in used):
        dropped += converter.head
    tensors = {key: value for key, value in tensors.items() if not key.startswith(tuple(dropped))}
    try:
        port(model, tensors, key_map, keep=FIXED_LAYERS)
    except ValueError as error:
        raise ValueError(f"The checkpoint {os.fspath(path)!r} does not fit {model.name}: {error}") from None


__all__ = [
    "CHECKPOINT_SUFFIXES", "CONVERTERS", "CheckpointError", "Converter", "after_flatten", "layer_entries",
    "checkpoint_keys", "load_checkpoint", "port", "read_checkpoint", "torch_conv_kernel", "torch_dense_kernel",
]
