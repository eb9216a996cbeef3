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


@pytest.fixture(scope="session")
def digits():
    """The embedded digits as (train, test) pipelines: real data, offline."""
    from kzoo import data

    return (data.load("digits", "train", batch_size=64, seed=0),
            data.load("digits", "test", batch_size=120, shuffle=False))


@pytest.fixture(scope="session")
def trained_lenet(digits):
    """LeNet-5 trained for 6 epochs on the digits, shared by the compression and export tests."""
    import kzoo
    from kzoo import training

    keras.utils.set_random_seed(0)
    model = kzoo.lenet5()
    training.fit(model, digits[0], epochs=6, verbose=0)
    return model


def images(shape, batch=2, seed=0):
    """A deterministic batch of float32 images in [0, 1]."""
    return np.random.RandomState(seed).uniform(0, 1, (batch, *shape)).astype("float32")


def assert_close(actual, expected, rtol=1e-5):
    """Equal up to float32 round-off on the scale of the values: the largest difference, divided by the
    largest magnitude of `expected`, is at most `rtol`. oneDNN's float32 results differ between CPUs
    (AVX2, AVX-512, AMX) in the last digits, so an absolute tolerance tuned on one machine fails on another."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(float(np.abs(expected).max()), 1e-30)
    difference = float(np.abs(actual - expected).max())
    assert difference <= rtol * scale, (
        f"largest difference {difference:.3g} is {difference / scale:.3g} of the largest value {scale:.3g} "
        f"(allowed: {rtol:g})")
