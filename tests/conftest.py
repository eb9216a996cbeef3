"""Test setup: an empty, private Keras cache, and quiet TensorFlow.

KERAS_HOME is read when Keras is imported, so it is set here, before any
test module imports kzoo or keras.
"""

import os
import tempfile

os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="kzoo-keras-home-")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def keras_home():
    """The test session's Keras cache folder (`$KERAS_HOME`)."""
    return os.environ["KERAS_HOME"]


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


def images(shape, batch=2, seed=0):
    """A deterministic batch of float32 images in [0, 1]."""
    return np.random.RandomState(seed).uniform(0, 1, (batch, *shape)).astype("float32")
