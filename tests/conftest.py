"""Test setup: an empty, private Keras cache, and quiet TensorFlow.

KERAS_HOME is read when Keras is imported, so it is set here, before any
test module imports kzoo or keras.
"""

import dataclasses
import hashlib
import os
import tempfile

os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="kzoo-keras-home-")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


# One model of each family module runs in the fast subset (`pytest -m "not slow"`); the registry's
# other models run in the full suite, which a new model joins the moment it registers.
FAST_MODELS = {"lenet5", "alexnet", "vgg11_bn", "resnet18", "resnet50", "resnet20"}


def registry_params(names=None, fast=FAST_MODELS):
    """`names` (default: every registered model) as pytest parameters, marked slow outside `fast`."""
    import kzoo

    names = kzoo.list_models() if names is None else names
    return [pytest.param(name, marks=() if name in fast else pytest.mark.slow) for name in names]


@pytest.fixture
def keras_home():
    """The test session's Keras cache folder (`$KERAS_HOME`)."""
    return os.environ["KERAS_HOME"]


@pytest.fixture(autouse=True)
def _fresh_keras_state(request):
    keras.utils.set_random_seed(0)
    yield
    # Python's garbage collection takes about 0.4 s here, more than most tests: only after the slow
    # tests, which build the big models; Keras' global state is reset after every test.
    keras.backend.clear_session(free_memory=request.node.get_closest_marker("slow") is not None)


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


# Weights files written by the tests, in the formats keras.applications publishes (test_weights, test_transfer).
# kzoo model -> keras.applications class (tf_keras.applications has the same names).
KERAS_APPLICATIONS = {
    "vgg16": "VGG16",
    "vgg19": "VGG19",
    "resnet50": "ResNet50",
    "resnet101": "ResNet101",
    "resnet152": "ResNet152",
    "resnet50_v2": "ResNet50V2",
    "resnet101_v2": "ResNet101V2",
    "resnet152_v2": "ResNet152V2",
}
SHAPE = (32, 32, 3)


def reference_file(name, include_top, file_format, folder):
    """Saves random keras.applications weights; returns (path, reference model).

    "legacy" is the HDF5 layout of the official downloads, written by tf_keras;
    "weights.h5" is the Keras 3 format.
    """
    if file_format == "legacy":
        import tf_keras

        reference = getattr(tf_keras.applications, KERAS_APPLICATIONS[name])(
            weights=None, include_top=include_top, input_shape=SHAPE
        )
        path = os.path.join(folder, f"{name}.h5")
    else:
        reference = getattr(keras.applications, KERAS_APPLICATIONS[name])(
            weights=None, include_top=include_top, input_shape=SHAPE
        )
        path = os.path.join(folder, f"{name}.weights.h5")
    reference.save_weights(path)
    return path, reference


def md5(path):
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def with_hash(monkeypatch, model, file_hash, include_top):
    """Points the (model, "imagenet") record at a file the test wrote."""
    from kzoo import weights as weights_lib

    record = weights_lib.RECORDS[(model, "imagenet")]
    field = "top" if include_top else "no_top"
    changed = dataclasses.replace(getattr(record, field), file_hash=file_hash)
    monkeypatch.setitem(weights_lib.RECORDS, (model, "imagenet"), dataclasses.replace(record, **{field: changed}))
