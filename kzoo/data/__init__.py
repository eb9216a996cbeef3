"""Data: named datasets (TFDS and the embedded digits), folders and arrays as tf.data pipelines.

`datasets` holds the sources and the one pipeline; `folders` splits class folders; `checks` says what
images and labels kzoo takes (NumPy only, on every backend); `arrays` batches arrays as a
`keras.utils.PyDataset` where TensorFlow is not the backend; `augment` the presets. The tf.data parts
load on first use (PEP 562), so `from kzoo.data import checks` needs no TensorFlow.
"""

import importlib

_NAMES_IN = {"DATASETS": "datasets", "DatasetUnavailableError": "datasets", "from_arrays": "datasets",
             "load": "datasets", "pipeline": "datasets", "read_idx": "datasets", "from_directory": "folders"}
_TF_MODULES = ("augment", "datasets", "folders")

__all__ = ["DATASETS", "DatasetUnavailableError", "augment", "from_arrays", "from_directory", "load", "pipeline",
           "read_idx"]


def __getattr__(name: str):
    if name in _NAMES_IN or name in _TF_MODULES:
        from kzoo import _backend

        _backend.tensorflow(f"kzoo.data.{name} (tf.data)")  # The clear error where TensorFlow is missing.
    if name in _NAMES_IN:
        value = getattr(importlib.import_module(f"kzoo.data.{_NAMES_IN[name]}"), name)
    elif name in (*_TF_MODULES, "arrays", "checks"):
        value = importlib.import_module(f"kzoo.data.{name}")
    else:
        raise AttributeError(f"module 'kzoo.data' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__, "arrays", "checks"})
