"""`port`: checkpoint tensors into a built Keras model by a key map, every weight accounted for."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np


def torch_conv_kernel(tensor: np.ndarray) -> np.ndarray:
    """A PyTorch conv kernel (out, in, height, width) as Keras' (height, width, in, out)."""
    return np.transpose(tensor, (2, 3, 1, 0))


def torch_dense_kernel(tensor: np.ndarray) -> np.ndarray:
    """A PyTorch linear weight (out, in) as Keras' Dense kernel (in, out)."""
    return np.transpose(tensor)


Hook = Callable[[np.ndarray], np.ndarray]


def port(model, tensors: Mapping[str, np.ndarray], key_map: Mapping[str, Sequence[str | tuple[str, Hook]]], *,
         ignore: Sequence[str] = ("num_batches_tracked",), keep: Sequence[str] = ()) -> None:
    """Fills `model`'s layers from checkpoint tensors, every weight accounted for.

    Args:
        model: The Keras model (built), e.g. `kzoo.resnet18()`.
        tensors: Checkpoint key -> array.
        key_map: Keras layer name -> one entry per `layer.weights`, in their
            order: a checkpoint key, or `(key, hook)` where `hook` rearranges
            the tensor (`torch_conv_kernel`, `torch_dense_kernel`; a dense
            layer after a flatten also needs PyTorch's (C, H, W) order turned
            into Keras' (H, W, C)).
        ignore: Key suffixes that carry no weights (PyTorch's BatchNorm step counter).
        keep: Names of layers with weights that the checkpoint does not fill (a frozen preprocessing layer).

    Raises:
        ValueError: Naming the layer and key, when a key is missing from the
            checkpoint, a layer is not in the model or gets the wrong number of
            tensors, a shape does not fit after its hook, or checkpoint tensors
            or layer weights are left over (a map that forgets one would
            leave random weights behind). Nothing is changed then.
    """
    staged, used = [], set()
    for layer_name, entries in key_map.items():
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            raise ValueError(f"The key map names layer {layer_name!r}, which {model.name} does not have.") from None
        if len(entries) != len(layer.weights):
            raise ValueError(f"Layer {layer_name!r} has {len(layer.weights)} weights ("
                             f"{', '.join(w.path for w in layer.weights)}); the key map gives {len(entries)}.")
        values = []
        for entry, weight in zip(entries, layer.weights):
            key, hook = entry if isinstance(entry, tuple) else (entry, None)
            if key not in tensors:
                raise ValueError(f"Checkpoint key {key!r} (for {weight.path}) is not in the checkpoint.")
            value = np.asarray(tensors[key])
            value = hook(value) if hook else value
            if tuple(value.shape) != tuple(weight.shape):
                raise ValueError(f"Checkpoint key {key!r} gives shape {tuple(value.shape)} for {weight.path}, "
                                 f"which needs {tuple(weight.shape)}.")
            values.append(value.astype(weight.dtype))
            used.add(key)
        staged.append((layer, values))
    filled = {layer.name for layer, _ in staged}
    missed = [layer.name for layer in model.layers if layer.weights and layer.name not in filled | set(keep)]
    if missed:
        raise ValueError(f"{len(missed)} layers with weights are not in the key map, e.g. {missed[:3]}.")
    unused = sorted(key for key in set(tensors) - used if not key.endswith(tuple(ignore)))
    if unused:
        raise ValueError(f"{len(unused)} checkpoint tensors have no place in the key map, e.g. {unused[:3]}.")
    for layer, values in staged:
        layer.set_weights(values)
