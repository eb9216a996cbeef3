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
FAST_MODELS = {"lenet5", "alexnet", "zfnet", "googlenet", "vgg11_bn", "resnet18", "resnet50", "resnet20"}


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


# A writer of PyTorch's checkpoint formats that needs no torch: `torch.save(state_dict)` writes a pickle
# whose tensors are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`
# and whose storages are persistent ids `("storage", torch.FloatStorage, key, "cpu", numel)`; stand-ins
# with those module and class names, present in `sys.modules` only while pickling, write the same bytes.
TORCH_STORAGES = {np.dtype("float32"): "FloatStorage", np.dtype("float16"): "HalfStorage",
                  np.dtype("float64"): "DoubleStorage", np.dtype("int64"): "LongStorage"}


def write_torch_checkpoint(path, tensors, legacy=False):
    """Writes `tensors` (name -> array) as `torch.save` would, in its zip format or its older (legacy) one."""
    import collections
    import io
    import pickle
    import struct
    import sys
    import types
    import zipfile

    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only pickled here")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in TORCH_STORAGES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))

    class Storage:
        def __init__(self, key, array):
            self.key, self.array = key, np.array(array, order="C")  # ascontiguousarray would make scalars 1-d.

    class Tensor:
        def __init__(self, storage):
            self.storage = storage

        def __reduce__(self):
            array = self.storage.array
            stride = tuple(s // array.itemsize for s in array.strides)
            return _rebuild_tensor_v2, (self.storage, 0, array.shape, stride, False, collections.OrderedDict())

    storages = [Storage(str(i), np.asarray(array)) for i, array in enumerate(tensors.values())]
    state = collections.OrderedDict((key, Tensor(storage)) for key, storage in zip(tensors, storages))

    def pickled(obj, persistent_id=None):
        buffer = io.BytesIO()
        pickler = pickle.Pickler(buffer, protocol=2)
        if persistent_id:
            pickler.persistent_id = persistent_id
        pickler.dump(obj)
        return buffer.getvalue()

    def storage_id(obj):
        if isinstance(obj, Storage):
            kind = getattr(torch, TORCH_STORAGES[obj.array.dtype])
            return ("storage", kind, obj.key, "cpu", obj.array.size) + ((None,) if legacy else ())
        return None

    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        data = pickled(state, storage_id)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name)
            else:
                sys.modules[name] = module
    if legacy:
        with open(path, "wb") as f:
            f.write(pickled(0x1950A86A20F9469CFC6C) + pickled(1001) + pickled({"little_endian": True}))
            f.write(data + pickled([s.key for s in storages]))
            for storage in storages:
                f.write(struct.pack("<q", storage.array.size) + storage.array.astype(storage.array.dtype.newbyteorder("<")).tobytes())
        return path
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
        for storage in storages:
            archive.writestr(f"archive/data/{storage.key}", storage.array.tobytes())
    return path


def torchvision_resnet_state(model):
    """A torchvision-layout ResNet state dict with random values, shaped from a kzoo `model`'s layers.

    The keys are written out here from torchvision's module names (`layer2.0.downsample.1.running_var`),
    independently of `kzoo.convert.maps`.
    """
    import re

    rng, state = np.random.default_rng(0), {}
    for layer in model.layers:
        if not layer.weights:
            continue
        name = layer.name
        if name in ("conv1_conv", "conv1_bn"):
            module = {"conv1_conv": "conv1", "conv1_bn": "bn1"}[name]
        elif name == "predictions":
            module = "fc"
        else:
            stage, block, part, kind = re.match(r"conv(\d)_block(\d+)_(\w+?)_(conv|bn|fc1|fc2)$", name).groups()
            prefix = f"layer{int(stage) - 1}.{int(block) - 1}"
            if part == "0":
                module = f"{prefix}.downsample.{0 if kind == 'conv' else 1}"
            elif part == "se":
                module = f"{prefix}.se.{kind}"
            else:
                module = f"{prefix}.{'conv' if kind == 'conv' else 'bn'}{part}"
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.weights[0].shape[0]
            for key in ("weight", "bias", "running_mean"):
                state[f"{module}.{key}"] = rng.normal(size=channels).astype("float32")
            state[f"{module}.running_var"] = rng.uniform(0.5, 1.5, channels).astype("float32")
            state[f"{module}.num_batches_tracked"] = np.array(10, dtype="int64")
        elif isinstance(layer, keras.layers.Conv2D):
            h, w, c_in, c_out = layer.kernel.shape
            state[f"{module}.weight"] = rng.normal(0, 0.05, (c_out, c_in, h, w)).astype("float32")
            if layer.use_bias:
                state[f"{module}.bias"] = rng.normal(size=c_out).astype("float32")
        else:
            c_in, c_out = layer.kernel.shape
            state[f"{module}.weight"] = rng.normal(0, 0.05, (c_out, c_in)).astype("float32")
            state[f"{module}.bias"] = rng.normal(size=c_out).astype("float32")
    return state
