"""Data: named datasets (TFDS and the embedded digits), folders and arrays as tf.data pipelines."""

from kzoo.data import augment
from kzoo.data.datasets import (
    DATASETS,
    DatasetUnavailableError,
    from_arrays,
    from_directory,
    load,
    pipeline,
    read_idx,
)

__all__ = ["DATASETS", "DatasetUnavailableError", "augment", "from_arrays", "from_directory", "load", "pipeline", "read_idx"]
