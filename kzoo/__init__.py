"""kzoo: classic CNNs for Keras 3 as builder functions, and everything after the model.

    from kzoo import vgg16, list_models
    model = vgg16(num_classes=10, input_shape=(32, 32, 3))

`import kzoo` imports nothing heavy: the builders and sub-modules (and with
them Keras) load on first use, so `kzoo --help`, `kzoo list` and `kzoo info`
start at once. The builders, weights, transfer and training run on every
Keras backend, without TensorFlow (`kzoo._backend`); TFMOT, tf_keras, TFDS
and LiteRT are imported inside the functions that need them.
"""

import importlib
import importlib.util

__version__ = "0.1.0"

_SUBMODULES = ("anomaly", "catalog", "compress", "convert", "data", "distribute", "export", "layers", "models",
               "robust", "segment", "training", "transfer", "weights")
_NAMES_IN = {"augment": "kzoo.data", "decode_predictions": "kzoo.weights", "preprocess_input": "kzoo.weights"}


def __getattr__(name: str):
    # PEP 562: resolved on first access, then cached as a module attribute.
    if name in _SUBMODULES or importlib.util.find_spec(f"kzoo.{name}") is not None:  # e.g. kzoo.cli
        value = importlib.import_module(f"kzoo.{name}")
    elif name in _NAMES_IN:
        value = getattr(importlib.import_module(_NAMES_IN[name]), name)
    elif name == "__all__":
        models = importlib.import_module("kzoo.models")
        value = [*models.__all__, *sorted(_NAMES_IN), *_SUBMODULES]
    else:
        models = importlib.import_module("kzoo.models")
        if name not in models.__all__:
            raise AttributeError(f"module 'kzoo' has no attribute {name!r}")
        value = getattr(models, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__getattr__("__all__")})
