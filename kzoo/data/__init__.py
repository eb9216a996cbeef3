"""Data: named datasets (TFDS and the embedded digits), folders and arrays as tf.data pipelines.

`datasets` holds the sources and the one pipeline; `folders` splits class folders; `checks` says what
images and labels kzoo takes; `augment` the presets.
"""

from kzoo.data import augment
from kzoo.data.datasets import DATASETS, DatasetUnavailableError, from_arrays, load, pipeline, read_idx
from kzoo.data.folders import from_directory

__all__ = ["DATASETS", "DatasetUnavailableError", "augment", "from_arrays", "from_directory", "load", "pipeline", "read_idx"]
