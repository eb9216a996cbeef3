"""The Keras 3 <-> tf_keras bridge: TFMOT only takes tf_keras (Keras 2) models.

`to_tf_keras` rebuilds a Keras 3 model layer by layer in tf_keras (and
`to_keras` goes back), copies the weights, and flattens nested models, which
TFMOT cannot quantize. Keras' own `clone_model` cannot do this (it stays in
one Keras), and saving to a file and loading in the other Keras fails on the
config formats, hence this module (tensorflow/model-optimization#1119).
"""

from __future__ import annotations

import functools
import inspect

# Config keys that only one of the two Keras versions knows, with the value
# that means "off". A key at that value is dropped; at any other value the
# layer uses a feature the other Keras lacks, and translating it is refused.
_ONE_SIDED_KEYS = {
    "quantization_config": None,
    "lora_rank": None,
    "lora_alpha": None,
    "synchronized": False,
    "optional": False,
}


class UntranslatableLayerError(ValueError):
    """A layer has no equivalent in the other Keras."""


def to_tf_keras(model, *, with_layer_pairs: bool = False):
    """Rebuilds a Keras 3 model in tf_keras, with the same weights.

    Args:
        model: A built Keras 3 `Sequential` or functional model. Nested models
            are flattened into one graph.
        with_layer_pairs: Also return `[(layer, twin_layer), ...]`, so that
            weights trained in the twin can be copied back into `model`
            (`layer.set_weights(twin_layer.get_weights())`).

    Returns:
        A functional `tf_keras.Model` whose outputs equal the model's; with
        `with_layer_pairs`, `(twin, pairs)`.

    Raises:
        UntranslatableLayerError: For a layer tf_keras has no twin of (a custom
            layer, a raw `keras.ops` call, a Keras 3-only option); the message
            names the layer and its class.
    """
    import keras

    tf_keras = _import_tf_keras()
    rebuild = _Rebuild(source=keras, target=tf_keras)
    twin = rebuild.model(model)
    return (twin, list(rebuild.twins.values())) if with_layer_pairs else twin


def to_keras(model):
    """Rebuilds a tf_keras model in Keras 3, with the same weights.

    Args:
        model: A built tf_keras `Sequential` or functional model without
            TFMOT wrappers (call `strip_pruning` / `strip_clustering` first;
            quantization-aware models stay in tf_keras and export from there).

    Returns:
        A functional `keras.Model` whose outputs equal the model's.

    Raises:
        UntranslatableLayerError: For a layer Keras 3 has no twin of; the
            message names the layer and its class.
    """
    import keras

    return _Rebuild(source=_import_tf_keras(), target=keras).model(model)


def _import_tf_keras():
    """tf_keras, after saying clearly what it needs (TensorFlow as Keras' backend: TFMOT's world)."""
    from kzoo import _backend

    _backend.tensorflow("kzoo.compress and the tf_keras bridge (TFMOT)", backend=True)
    import tf_keras

    return tf_keras


class _Rebuild:
    """One translation: walks the source graph, calling twin layers on twin tensors."""

    def __init__(self, source, target):
        self.source, self.target = source, target
        self.twins = {}  # id(source layer) -> (source layer, twin layer)
        self.names = set()

    def model(self, model):
        if not model.built or not model.inputs:
            raise ValueError(
                f"Model {model.name!r} is not built: call it on data or give it an input shape first "
                "(e.g. build it with input_shape=...)."
            )
        inputs = [self.target.Input(shape=tuple(t.shape[1:]), dtype=_dtype_name(t.dtype), name=_input_name(t))
                  for t in model.inputs]
        outputs = self.trace(model, inputs)
        single = len(inputs) == 1 and len(outputs) == 1
        twin = self.target.Model(inputs[0] if single else inputs, outputs[0] if single else outputs, name=model.name)
        for layer, twin_layer in self.twins.values():
            self.copy_weights(layer, twin_layer)
        return twin

    def trace(self, model, inputs):
        """Applies `model`'s layers to the twin `inputs`; returns the twin outputs (a list)."""
        if isinstance(model, self.source.Sequential):
            (tensor,) = inputs
            for layer in model.layers:
                tensor = self.apply(layer, (tensor,), {})
            return [tensor]
        known = {id(t): twin for t, twin in zip(model.inputs, inputs)}
        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[depth]:
                layer = _node_layer(node)
                if isinstance(layer, self.source.layers.InputLayer):
                    continue
                args, kwargs = _node_arguments(node)
                args, kwargs = self.map_tensors((args, kwargs), known)
                outputs = self.apply(layer, args, kwargs)
                for tensor, twin in zip(_flatten(node.outputs), _flatten(outputs)):
                    known[id(tensor)] = twin
        return [known[id(t)] for t in model.outputs]

    def apply(self, layer, args, kwargs):
        if isinstance(layer, self.source.Model):  # A nested model: inline its graph.
            outputs = self.trace(layer, _flatten(args))
            return outputs[0] if len(outputs) == 1 else outputs
        if id(layer) not in self.twins:
            self.twins[id(layer)] = (layer, self.translate(layer))
        return self.twins[id(layer)][1](*args, **kwargs)

    def map_tensors(self, structure, known):
        if isinstance(structure, (list, tuple)):
            return type(structure)(self.map_tensors(item, known) for item in structure)
        if isinstance(structure, dict):
            return {key: self.map_tensors(value, known) for key, value in structure.items()}
        return known.get(id(structure), structure)

    def translate(self, layer):
        class_name = type(layer).__name__
        twin_class = getattr(self.target.layers, class_name, None)
        builtin = type(layer).__module__.startswith(_builtin_module(self.source))
        if _kzoo_twin(self.target, layer) is not None:
            twin_class, builtin = _kzoo_twin(self.target, layer), True
        if twin_class is None or not builtin or not isinstance(layer, self.source.layers.Layer):
            raise UntranslatableLayerError(
                f"Layer {layer.name!r} ({type(layer).__module__}.{class_name}) has no twin in "
                f"{self.target.__name__}: only built-in Keras layers translate. Replace it with built-in "
                "layers, or compress the model without it."
            )
        config = _portable_config(layer, twin_class)
        if config["name"] in self.names:  # Flattened nested models can repeat names.
            config["name"] = _unique(config["name"], self.names)
        self.names.add(config["name"])
        try:
            return twin_class.from_config(config)
        except (TypeError, ValueError) as error:
            raise UntranslatableLayerError(
                f"Layer {layer.name!r} ({class_name}) could not be rebuilt in {self.target.__name__}: {error}"
            ) from error

    @staticmethod
    def copy_weights(layer, twin):
        weights = layer.get_weights()
        twin_shapes = [tuple(w.shape) for w in twin.weights]
        if [tuple(w.shape) for w in weights] != twin_shapes:
            raise UntranslatableLayerError(
                f"Layer {layer.name!r} ({type(layer).__name__}) holds weights of shapes "
                f"{[tuple(w.shape) for w in weights]}, its twin {twin_shapes}."
            )
        twin.set_weights(weights)


def _kzoo_twin(target, layer):
    """The other side's class for one of kzoo's own layers (`kzoo.layers`), or None."""
    if not type(layer).__module__.startswith("kzoo."):
        return None
    if type(layer).__name__ == "BatchNormalization":  # Keras' own config and inference: the built-in twin.
        return target.layers.BatchNormalization
    if type(layer).__name__ != "LocalResponseNormalization":
        return None
    if target.__name__ == "tf_keras":
        return _tf_keras_local_response_normalization()
    from kzoo.layers import LocalResponseNormalization

    return LocalResponseNormalization


@functools.lru_cache(maxsize=None)
def _tf_keras_local_response_normalization():
    """`kzoo.layers.LocalResponseNormalization` for tf_keras (and so TFMOT): TensorFlow's own op, same formula."""
    import tensorflow as tf
    import tf_keras

    @tf_keras.utils.register_keras_serializable(package="kzoo")
    class LocalResponseNormalization(tf_keras.layers.Layer):
        def __init__(self, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75, **kwargs):
            super().__init__(**kwargs)
            self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta

        def call(self, inputs):
            return tf.nn.local_response_normalization(inputs, self.depth_radius, self.bias, self.alpha, self.beta)

        def get_config(self):
            return {**super().get_config(), "depth_radius": self.depth_radius, "bias": self.bias,
                    "alpha": self.alpha, "beta": self.beta}

    LocalResponseNormalization.__module__ = "kzoo.tf_keras_bridge"
    return LocalResponseNormalization


def _builtin_module(keras_module) -> str:
    return "keras.src." if keras_module.__name__ == "keras" else "tf_keras."


def _portable_config(layer, twin_class) -> dict:
    """The layer's config in a form both Keras versions read."""
    config = {key: _plain(value) for key, value in layer.get_config().items()}
    if isinstance(config.get("axis"), list) and len(config["axis"]) == 1:
        config["axis"] = config["axis"][0]  # tf_keras' BatchNormalization stores [axis].
    dtype = config.get("dtype")
    if isinstance(dtype, dict):  # Keras 3 writes a DTypePolicy object.
        config["dtype"] = dtype.get("config", {}).get("name", "float32")
    for key, off in _ONE_SIDED_KEYS.items():
        if key in config:
            if config[key] != off:
                raise UntranslatableLayerError(
                    f"Layer {layer.name!r} ({type(layer).__name__}) sets {key}={config[key]!r}, which the "
                    f"other Keras does not have; set it to {off!r} before translating."
                )
            del config[key]
    # Weights are copied after the rebuild, so initializers do not matter, and
    # their configs differ between the two versions (e.g. Keras 3's GlorotUniform).
    for key in [k for k in config if k.endswith("_initializer")]:
        del config[key]
    accepted = inspect.signature(twin_class.__init__).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
        config = {k: v for k, v in config.items() if k in accepted}
    return config


def _plain(value):
    """tf_keras wraps lists in trackable ListWrappers: back to plain lists."""
    if isinstance(value, (list, tuple)) and type(value) not in (list, tuple):
        return [_plain(item) for item in value]
    return value


def _node_layer(node):
    return getattr(node, "operation", None) or node.layer  # Keras 3 / tf_keras


def _node_arguments(node):
    if hasattr(node, "arguments"):  # Keras 3
        return tuple(node.arguments.args), dict(node.arguments.kwargs)
    return tuple(node.call_args), dict(node.call_kwargs)


def _flatten(structure):
    if isinstance(structure, (list, tuple)):
        return [leaf for item in structure for leaf in _flatten(item)]
    if isinstance(structure, dict):
        return [leaf for value in structure.values() for leaf in _flatten(value)]
    return [structure]


def _dtype_name(dtype) -> str:
    return getattr(dtype, "name", dtype)


def _input_name(tensor) -> str | None:
    history = getattr(tensor, "_keras_history", None)
    return getattr(history[0], "name", None) if history else None


def _unique(name, taken) -> str:
    index = 1
    while f"{name}_{index}" in taken:
        index += 1
    return f"{name}_{index}"
