"""Weights: keras.applications parity, the ImageNet cache, every error path, pre/post-processing."""

import dataclasses
import hashlib
import json
import os

import keras
import numpy as np
import pytest
from conftest import (
    KERAS_APPLICATIONS, SHAPE, assert_close, images, md5, reference_file, registry_params, torchvision_resnet_state,
    with_hash, write_torch_checkpoint,
)

import kzoo
from kzoo import weights as weights_lib


@pytest.mark.parametrize("file_format", ["legacy", pytest.param("weights.h5", marks=pytest.mark.slow)])
@pytest.mark.parametrize("include_top", [True, False])
@pytest.mark.parametrize("name", registry_params(list(KERAS_APPLICATIONS), fast={"resnet50"}))
def test_keras_applications_weights_load_and_give_the_same_outputs(name, include_top, file_format, tmp_path):
    path, reference = reference_file(name, include_top, file_format, tmp_path)
    model = kzoo.get_model(name, weights=path, include_top=include_top, input_shape=SHAPE)
    x = images(SHAPE) * 255.0
    # Keras 3's own keras.applications model, loading the same file, computes exactly what kzoo computes ...
    keras3 = getattr(keras.applications, KERAS_APPLICATIONS[name])(weights=path, include_top=include_top,
                                                                    input_shape=SHAPE)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(keras3(x)))
    # ... and the file's writer agrees up to float32 round-off (tf_keras runs other kernels for the "legacy" files).
    assert_close(model(x), reference(x), rtol=1e-5)
    assert [w.shape for w in model.weights] == [tuple(w.shape) for w in reference.weights]


def test_keras_file_loads_as_weights(tmp_path):
    source = kzoo.lenet5()
    path = str(tmp_path / "lenet.keras")
    source.save(path)
    model = kzoo.lenet5(weights=path)
    x = images((28, 28, 1))
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(source(x)), atol=1e-6)


@pytest.mark.parametrize("tag", ["imagenet", "default"])  # "default": the model's first published weights.
def test_imagenet_weights_come_from_the_keras_cache_offline(tag, keras_home, monkeypatch, tmp_path):
    record = weights_lib.get_record("vgg16")
    assert record.no_top.file_name == "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert record.no_top.url.startswith("https://storage.googleapis.com/tensorflow/keras-applications/vgg16/")
    path, reference = reference_file("vgg16", False, "legacy", tmp_path)
    os.makedirs(os.path.join(keras_home, "models"), exist_ok=True)
    cached = os.path.join(keras_home, "models", record.no_top.file_name)
    os.replace(path, cached)
    with_hash(monkeypatch, "vgg16", md5(cached), include_top=False)
    model = kzoo.vgg16(weights=tag, include_top=False, input_shape=SHAPE)
    x = images(SHAPE) * 255.0
    assert_close(model(x), reference(x), rtol=1e-5)
    os.remove(cached)


def test_weights_default_is_the_first_published_tag_and_needs_one():
    assert weights_lib.default_tag("vgg16") == "imagenet" and weights_lib.default_tag("lenet5") is None
    with pytest.raises(ValueError, match="lenet5 has no pretrained weights"):
        kzoo.lenet5(weights="default")


def test_download_failure_names_url_cache_path_and_the_way_out(keras_home, monkeypatch):
    record = weights_lib.get_record("resnet50")
    unreachable = dataclasses.replace(record.no_top, url="http://127.0.0.1:9/resnet50_notop.h5")
    monkeypatch.setitem(weights_lib.RECORDS, ("resnet50", "imagenet"), dataclasses.replace(record, no_top=unreachable))
    cache_path = os.path.join(keras_home, "models", record.no_top.file_name)
    with pytest.raises(RuntimeError) as error:
        kzoo.resnet50(weights="imagenet", include_top=False)
    message = str(error.value)
    assert "http://127.0.0.1:9/resnet50_notop.h5" in message
    assert cache_path in message
    assert "weights=PATH" in message
    assert not os.path.exists(cache_path)


def test_unavailable_weights_fail_before_building_in_one_short_error(keras_home, monkeypatch):
    from kzoo.models import _common

    record = weights_lib.get_record("vgg16")
    unreachable = dataclasses.replace(record.top, url="http://127.0.0.1:9/vgg16.h5")
    monkeypatch.setitem(weights_lib.RECORDS, ("vgg16", "imagenet"), dataclasses.replace(record, top=unreachable))

    def building(*args, **kwargs):
        raise AssertionError("the 138M-parameter model was built before the weights were checked")

    monkeypatch.setattr(_common, "linear_model", building)
    with pytest.raises(weights_lib.WeightsUnavailableError) as error:
        kzoo.vgg16(weights="imagenet")
    assert str(error.value).count("http://127.0.0.1:9/vgg16.h5") == 1
    assert error.value.__cause__ is None and error.value.__context__ is None  # No chained tracebacks.


def test_cached_file_with_the_wrong_hash_is_not_used(keras_home, monkeypatch):
    record = weights_lib.get_record("resnet50")
    unreachable = dataclasses.replace(record.top, url="http://127.0.0.1:9/resnet50.h5")
    monkeypatch.setitem(weights_lib.RECORDS, ("resnet50", "imagenet"), dataclasses.replace(record, top=unreachable))
    os.makedirs(os.path.join(keras_home, "models"), exist_ok=True)
    cached = os.path.join(keras_home, "models", record.top.file_name)
    with open(cached, "wb") as f:
        f.write(b"half a download")
    with pytest.raises(weights_lib.WeightsUnavailableError, match="resnet50_weights_tf_dim_ordering_tf_kernels.h5: not in"):
        kzoo.resnet50(weights="imagenet")
    assert not os.path.exists(cached)  # The bad file is not left behind.


@pytest.mark.parametrize("suffix", [".h5", ".weights.h5", ".keras"])
def test_truncated_file_is_reported_as_corrupt(suffix, tmp_path):
    if suffix == ".h5":
        whole, _ = reference_file("vgg16", False, "legacy", tmp_path)
    elif suffix == ".keras":
        whole = str(tmp_path / "whole.keras")
        kzoo.vgg16(include_top=False, input_shape=SHAPE).save(whole)
    else:
        whole = str(tmp_path / "whole.weights.h5")
        kzoo.vgg16(include_top=False, input_shape=SHAPE).save_weights(whole)
    data = open(whole, "rb").read()
    truncated = str(tmp_path / f"truncated{suffix}")
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 3])
    with pytest.raises(ValueError, match=r"truncated or corrupt"):
        kzoo.vgg16(weights=truncated, include_top=False, input_shape=SHAPE)


def test_legacy_file_of_another_architecture_names_the_first_layer_that_does_not_fit(tmp_path):
    path, _ = reference_file("vgg16", False, "legacy", tmp_path)
    with pytest.raises(ValueError) as error:
        kzoo.vgg19(weights=path, include_top=False, input_shape=SHAPE)
    message = str(error.value)
    assert "first layer that does not fit is 'block3_conv4'" in message
    assert "(3, 3, 256, 256)" in message and "block4_conv1" in message


def test_weights_h5_of_another_head_names_the_layer_that_does_not_fit(tmp_path):
    path = str(tmp_path / "lenet10.weights.h5")
    kzoo.lenet5(num_classes=10).save_weights(path)
    with pytest.raises(ValueError, match=r"do not fit lenet5.*first layer that does not fit: 'predictions' \(Dense\)"):
        kzoo.lenet5(num_classes=5, weights=path)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: kzoo.vgg16(weights="imagenet21k"), r"Unknown weights 'imagenet21k' for vgg16\. Available for vgg16: 'imagenet'"),
        (lambda: kzoo.resnet20(weights="imagenet"), r"resnet20 has no pretrained weights; models that have: .*resnet50"),
        (lambda: kzoo.resnet50(weights="imagenet", num_classes=10), r"1000-class classifier, but num_classes=10"),
        (lambda: kzoo.vgg16(weights="imagenet", input_shape=(64, 64, 3)), r"needs input_shape=\(224, 224, 3\)"),
        (lambda: kzoo.resnet50(weights="imagenet", include_top=False, input_shape=(64, 64, 1)), r"need 3 input channels"),
        (lambda: kzoo.resnet50(weights="imagenet", classifier_activation="sigmoid"), r"only 'softmax' or None"),
        (lambda: kzoo.lenet5(weights="/no/such/lenet.weights.h5"), r"no such file"),
        (lambda: kzoo.lenet5(weights=3), r"must be None, a tag such as 'imagenet', or the path"),
    ],
)
def test_bad_weights_arguments_get_clear_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_unsupported_weights_file_type_is_refused(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unsupported file type; kzoo reads \.weights\.h5, \.keras"):
        kzoo.lenet5(weights=str(path))


@pytest.mark.parametrize("name, module", [("vgg16", "vgg16"), ("resnet101", "resnet"), ("resnet50_v2", "resnet_v2")])
def test_preprocess_input_matches_keras_applications(name, module):
    x = images((8, 8, 3)) * 255.0
    expected = getattr(keras.applications, module).preprocess_input(x.copy())
    assert_close(kzoo.preprocess_input(x.copy(), name), expected, rtol=1e-6)


def test_preprocess_input_follows_the_torch_and_googlenet_records():
    x = images((8, 8, 3)) * 255.0
    torch_mode = keras.applications.imagenet_utils.preprocess_input(x.copy(), mode="torch")
    assert_close(kzoo.preprocess_input(x.copy(), "resnet18"), torch_mode, rtol=1e-6)
    assert_close(kzoo.preprocess_input(x.copy(), "googlenet"), x / 127.5 - 1.0, rtol=1e-6)


def test_preprocess_input_for_a_model_without_weights_explains():
    with pytest.raises(ValueError, match="lenet5 has no pretrained weights"):
        kzoo.preprocess_input(np.zeros((1, 28, 28, 1)), "lenet5")


def test_decode_predictions_uses_the_cached_class_index(keras_home, monkeypatch):
    index = {str(i): [f"n{i:08d}", f"class_{i}"] for i in range(1000)}
    os.makedirs(os.path.join(keras_home, "models"), exist_ok=True)
    path = os.path.join(keras_home, "models", "imagenet_class_index.json")
    with open(path, "w") as f:
        json.dump(index, f)
    source = weights_lib.CATEGORIES["imagenet1k"]
    monkeypatch.setitem(weights_lib.CATEGORIES, "imagenet1k", dataclasses.replace(source, file_hash=md5(path)))
    preds = np.full((2, 1000), 1e-4, dtype="float32")
    preds[0, 7], preds[0, 3], preds[1, 999] = 0.6, 0.3, 0.9
    decoded = kzoo.decode_predictions(preds, top=2)
    assert decoded[0] == [("n00000007", "class_7", pytest.approx(0.6)), ("n00000003", "class_3", pytest.approx(0.3))]
    assert decoded[1][0][:2] == ("n00000999", "class_999")
    with pytest.raises(ValueError, match=r"shape \(samples, 1000\); got \(2, 10\)"):
        kzoo.decode_predictions(np.zeros((2, 10)))
    os.remove(path)


def test_every_record_is_complete_and_names_a_registered_model():
    for (model, tag), record in weights_lib.RECORDS.items():
        assert model in kzoo.list_models() and tag == record.tag == "imagenet"
        assert record.preprocessing in weights_lib.PREPROCESSING
        assert record.accuracy_source.startswith("https://") and record.licence
        assert weights_lib.default_tag(model) == weights_lib.available_weights(model)[0]
        for file in (record.top, record.no_top):
            assert file.url.endswith("/" + file.file_name) or file.url.endswith("/model.safetensors")
            if record.format == "keras-h5":  # keras.applications publishes md5s.
                assert record.source == "keras.applications"
                assert len(file.file_hash) == 32 and int(file.file_hash, 16) >= 0
            elif record.format == "torch":  # torchvision's file names carry their sha256's first 8 hex digits.
                assert record.source == "torchvision" and file.file_name.endswith(f"-{file.sha256}.pth")
                assert len(file.sha256) == 8 and int(file.sha256, 16) >= 0
            else:
                assert record.format == "safetensors" and record.source.startswith("timm")
        assert 50 < record.top1 < record.top5 < 100
        assert record.categories in weights_lib.CATEGORIES


def test_every_imagenet_model_of_the_chart_has_weights():
    published = {model for model, _ in weights_lib.RECORDS}
    assert published == {
        "alexnet", "googlenet", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet50_v2", "resnet101_v2",
        "resnet152_v2", "wide_resnet50_2", "wide_resnet101_2", "seresnet50", "resnet50_tv", "resnet101_tv",
    }
    assert weights_lib.get_record("googlenet").preprocessing == "tf"  # torchvision's transform_input: 2x - 1.
    assert weights_lib.get_record("resnet18").preprocessing == "torch"


def _cached_torchvision_resnet18(keras_home, monkeypatch, shape):
    record = weights_lib.get_record("resnet18")
    os.makedirs(os.path.join(keras_home, "models"), exist_ok=True)
    path = os.path.join(keras_home, "models", record.top.file_name)
    state = torchvision_resnet_state(kzoo.resnet18(input_shape=shape))
    write_torch_checkpoint(path, state)
    prefix = hashlib.sha256(open(path, "rb").read()).hexdigest()[:8]
    file = dataclasses.replace(record.top, sha256=prefix)
    monkeypatch.setitem(weights_lib.RECORDS, ("resnet18", "imagenet"), dataclasses.replace(record, top=file, no_top=file))
    return path, state


def test_torchvision_weights_are_converted_once_and_cached_beside_the_download(keras_home, monkeypatch):
    from kzoo import convert

    shape = (64, 64, 3)
    path, state = _cached_torchvision_resnet18(keras_home, monkeypatch, shape)
    model = kzoo.resnet18(weights="imagenet", input_shape=shape)
    np.testing.assert_array_equal(model.get_layer("predictions").kernel.numpy(), state["fc.weight"].T)
    converted = [name for name in os.listdir(os.path.dirname(path)) if name.startswith("resnet18-") and
                 name.endswith(".weights.h5")]
    assert len(converted) == 1 and ".kzoo-" in converted[0]

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(convert, "load_checkpoint", no_second_conversion)
    again = kzoo.resnet18(weights="imagenet", input_shape=shape)
    x = images(shape)
    assert_close(again(x), model(x))
    backbone_path_count = len(os.listdir(os.path.dirname(path)))
    monkeypatch.undo()
    _cached_torchvision_resnet18(keras_home, monkeypatch, shape)
    kzoo.resnet18(weights="imagenet", include_top=False, input_shape=shape)  # Its own converted file.
    assert len(os.listdir(os.path.dirname(path))) == backbone_path_count + 1
    for name in os.listdir(os.path.dirname(path)):
        if name.startswith("resnet18-"):
            os.remove(os.path.join(os.path.dirname(path), name))


def test_a_download_whose_sha256_prefix_differs_is_removed(keras_home, monkeypatch):
    path, _ = _cached_torchvision_resnet18(keras_home, monkeypatch, (64, 64, 3))
    record = weights_lib.get_record("resnet18")
    wrong = dataclasses.replace(record.top, sha256="00000000")
    monkeypatch.setitem(weights_lib.RECORDS, ("resnet18", "imagenet"), dataclasses.replace(record, top=wrong))
    with pytest.raises(weights_lib.WeightsUnavailableError, match="sha256 does not start with 00000000"):
        kzoo.resnet18(weights="imagenet", input_shape=(64, 64, 3))
    assert not os.path.exists(path)
