"""kzoo: classic CNNs for Keras 3 as builder functions, and everything after the model.

    from kzoo import vgg16, list_models
    model = vgg16(num_classes=10, input_shape=(32, 32, 3))

Importing kzoo loads Keras only; TFMOT, tf_keras, TFDS and LiteRT are imported
inside the functions that need them.
"""

from kzoo import compress, data, distribute, export, training, transfer
from kzoo.data import augment
from kzoo.models import *  # noqa: F401,F403  (the builders and the registry)
from kzoo.models import __all__ as _model_names
from kzoo.weights import decode_predictions, preprocess_input

__version__ = "0.1.0"
__all__ = [*_model_names, "augment", "compress", "data", "decode_predictions", "distribute", "export", "preprocess_input", "training", "transfer"]
