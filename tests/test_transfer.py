"""Transfer learning: modes freeze what they promise, BN stays put, weights load offline, the model travels."""

import os
import tempfile

import keras
import numpy as np
import pytest
from conftest import assert_close, images, md5, reference_file, registry_params, with_hash

import kzoo
from kzoo import data, export, training, transfer

CIFAR = (32, 32, 3)


def count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def is_batchnorm(layer):
    return isinstance(layer, keras.layers.BatchNormalization)


@pytest.fixture(scope="module")
def resnet20_file(tmp_path_factory):
    """A ResNet-20 with a 5-class classifier, saved as a user would save their own pretrained model."""
    keras.utils.set_random_seed(1)
    source = kzoo.resnet20(num_classes=5)
    path = str(tmp_path_factory.mktemp("weights") / "resnet20_pretrained.keras")
    source.save(path)
    return path, source


@pytest.fixture(scope="module")
def tiny_rgb():
    """32 random RGB images of 3 classes, batched by 8."""
    rng = np.random.RandomState(0)
    return data.from_arrays(rng.uniform(0, 1, (32, *CIFAR)).astype("float32"), np.arange(32) % 3,
                            batch_size=8, seed=0)


def expected_trainable(model, mode, freeze_batchnorm=True):
    """What each mode promises, counted from the layer names, independently of set_mode."""
    head = [layer for layer in model.layers if layer.name.startswith("head_")]
    backbone = [layer for layer in model.layers if layer.name not in ("image", "preprocess") and layer not in head]
    first_top = next(i for i, layer in enumerate(backbone) if layer.name.startswith("conv4_"))
    chosen = {"head": [], "top": backbone[first_top:], "full": backbone}[mode]
    chosen = [layer for layer in chosen if not (freeze_batchnorm and is_batchnorm(layer))]
    # Moving mean and variance are never trainable weights.
    return count(w for layer in chosen + head for w in layer.weights if "moving_" not in w.path)


@pytest.mark.parametrize("freeze_batchnorm", [True, False])
@pytest.mark.parametrize("mode", transfer.MODES)
def test_each_mode_trains_what_it_promises(resnet20_file, mode, freeze_batchnorm):
    path, _ = resnet20_file
    model = transfer.build("resnet20", 3, weights=path, mode=mode, freeze_batchnorm=freeze_batchnorm,
                           preprocessing="tf")
    assert count(model.trainable_weights) == expected_trainable(model, mode, freeze_batchnorm)
    assert not model.get_layer("preprocess").trainable
    head_params = 64 * 3 + 3
    if mode == "head":
        assert count(model.trainable_weights) == head_params
    if mode == "full" and not freeze_batchnorm:  # Everything but the preprocessing and BN moving statistics.
        moving = count(w for layer in model.layers if is_batchnorm(layer) for w in layer.non_trainable_weights)
        assert count(model.trainable_weights) == model.count_params() - 12 - moving


@pytest.mark.parametrize("name", registry_params())
def test_every_registry_backbone_gives_one_flat_model(name):
    entry = kzoo.models._registry.model_entry(name)
    shape = entry.small_input
    model = transfer.build(name, 3, weights=None, input_shape=shape, mode="top", head_units=(16,))
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert model.output.shape == (None, 3)
    stage = transfer.default_stage(model)
    assert stage in transfer.stages(model)
    assert len(transfer.stages(model)) == len(model.feature_info) == len(entry.fn(weights=None).feature_info)
    # The trained layers are the backbone's from the start of the default stage on (BN frozen): the
    # last feature stage that holds a convolution (ZFNet's stride-32 stage is only its last pool).
    backbone = transfer.backbone_layers(model)
    index = transfer.stages(model).index(stage)
    start = [layer.name for layer in backbone].index(model.feature_info[index - 1].layer) + 1 if index else 0
    assert stage in (backbone[start].name, backbone[start].name.split("_")[0])
    end = [layer.name for layer in backbone].index(model.feature_info[index].layer) + 1
    assert not any(isinstance(layer, keras.layers.Conv2D) for layer in backbone[end:])
    trained = [layer.name for layer in backbone if layer.trainable]
    assert trained and trained == [layer.name for layer in backbone[start:]
                                   if not isinstance(layer, keras.layers.BatchNormalization)]


def test_default_top_stage_per_family():
    assert transfer.default_stage(transfer.build("resnet20", 2, weights=None)) == "conv4"
    assert transfer.default_stage(transfer.build("lenet5", 2, weights=None)) == "conv2"
    assert transfer.default_stage(transfer.build("vgg11", 2, weights=None, input_shape=CIFAR)) == "block5"
    assert transfer.default_stage(transfer.build("resnet18", 2, weights=None, input_shape=CIFAR)) == "conv5"


def test_stages_follow_feature_info_where_layer_names_do_not():
    """ResNet v2's stride-32 stage starts in keras.applications' conv4 stack; a reloaded model keeps its stages."""
    model = transfer.build("resnet50_v2", 2, weights=None, input_shape=(64, 64, 3), mode="top")
    assert transfer.stages(model)[-1] == transfer.default_stage(model) == "conv4_block6_preact_bn"
    assert model.get_layer("conv4_block6_2_conv").trainable and not model.get_layer("conv4_block5_2_conv").trainable
    assert model.feature_info[-1].reduction == 32
    path = os.path.join(tempfile.mkdtemp(), "v2.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert transfer.stages(loaded) == transfer.stages(model)
    deeper = transfer.build("resnet101", 2, weights=None, input_shape=(64, 64, 3))
    deeper.save(path)
    assert transfer.stages(keras.saving.load_model(path)) == transfer.stages(deeper)
    assert transfer.set_mode(keras.saving.load_model(path), "top").get_layer("conv5_block1_1_conv").trainable


def test_trainable_from_takes_a_stage_or_a_layer_name(resnet20_file):
    path, _ = resnet20_file
    by_stage = transfer.build("resnet20", 3, weights=path, mode="top", trainable_from="conv3")
    by_layer = transfer.build("resnet20", 3, weights=path, mode="top", trainable_from="conv3_block1_1_conv")
    default = transfer.build("resnet20", 3, weights=path, mode="top")
    by_index = transfer.build("resnet20", 3, weights=path, mode="top", trainable_from=1)
    assert transfer.stages(by_index)[1] == "conv3"
    assert count(by_stage.trainable_weights) == count(by_layer.trainable_weights) > count(default.trainable_weights)
    assert count(by_index.trainable_weights) == count(by_stage.trainable_weights)
    assert not by_stage.get_layer("conv2_block3_2_conv").trainable and by_stage.get_layer("conv3_block1_1_conv").trainable


def test_backbone_weights_come_from_a_file_saved_with_its_classifier(resnet20_file):
    path, source = resnet20_file
    model = transfer.build("resnet20", 3, weights=path)
    for layer in transfer.backbone_layers(model):
        for got, want in zip(layer.get_weights(), source.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(got, want)
    assert "preprocess" not in {layer.name for layer in model.layers}  # Not keras.applications weights.
    x = images(CIFAR)
    headless = keras.Model(source.input, source.get_layer("conv4_block3_out").output)
    assert_close(transfer.features(model, x), np.asarray(headless(x)).mean(axis=(1, 2)))


def test_headless_weights_file_loads_too(tmp_path):
    source = kzoo.lenet5(include_top=False)
    path = str(tmp_path / "lenet5_backbone.weights.h5")
    source.save_weights(path)
    model = transfer.build("lenet5", 4, weights=path, pooling="flatten")
    np.testing.assert_array_equal(model.get_layer("conv2").kernel.numpy(), source.get_layer("conv2").kernel.numpy())
    assert model.get_layer("head_pool").output.shape == (None, 5 * 5 * 16)


@pytest.mark.parametrize("cached", [True, False])
def test_imagenet_weights_bring_their_preprocessing(cached, keras_home, monkeypatch, tmp_path):
    """vgg16 "imagenet" from the Keras cache (or that file given as a path): caffe preprocessing comes with it."""
    path, reference = reference_file("vgg16", False, "legacy", tmp_path)
    record = kzoo.weights.get_record("vgg16")
    named = os.path.join(keras_home if cached else str(tmp_path), "models", record.no_top.file_name)
    os.makedirs(os.path.dirname(named), exist_ok=True)
    os.replace(path, named)
    with_hash(monkeypatch, "vgg16", md5(named), include_top=False)
    model = transfer.build("vgg16", 3, weights="imagenet" if cached else named, input_shape=CIFAR)
    x = images(CIFAR)
    expected = np.asarray(reference(keras.applications.imagenet_utils.preprocess_input(x * 255.0, mode="caffe")))
    assert_close(transfer.features(model, x), expected.mean(axis=(1, 2)), rtol=1e-5)
    if cached:
        os.remove(named)


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
def test_preprocessing_layer_equals_keras_applications(mode):
    model = transfer.build("resnet20", 2, weights=None, preprocessing=mode)
    layer = keras.Model(model.input, model.get_layer("preprocess").output)
    x = images(CIFAR)
    expected = keras.applications.imagenet_utils.preprocess_input(x * 255.0, mode=mode)
    assert_close(layer(x), expected, rtol=1e-6)


def test_imagenet_weights_offline_without_the_file_say_where_to_put_it(keras_home, monkeypatch):
    import dataclasses

    record = kzoo.weights.get_record("resnet50")
    unreachable = dataclasses.replace(record.no_top, url="http://127.0.0.1:9/resnet50_notop.h5")
    monkeypatch.setitem(kzoo.weights.RECORDS, ("resnet50", "imagenet"), dataclasses.replace(record, no_top=unreachable))
    with pytest.raises(RuntimeError) as error:
        transfer.build("resnet50", 5, input_shape=CIFAR)
    assert os.path.join(keras_home, "models", record.no_top.file_name) in str(error.value)


@pytest.mark.parametrize("mode,freeze_batchnorm", [("top", True), pytest.param("full", True, marks=pytest.mark.slow),
                                                    ("top", False)])
def test_frozen_batchnorm_statistics_do_not_move_during_fit(resnet20_file, tiny_rgb, mode, freeze_batchnorm):
    path, _ = resnet20_file
    model = transfer.build("resnet20", 3, weights=path, mode=mode, freeze_batchnorm=freeze_batchnorm)
    batchnorms = [layer for layer in model.layers if is_batchnorm(layer)]
    before = {layer.name: [w.numpy().copy() for w in layer.weights] for layer in batchnorms}
    training.fit(model, tiny_rgb, epochs=1, learning_rate=0.01, verbose=0)
    moved = {layer.name for layer in batchnorms
             if any(not np.array_equal(a, b.numpy()) for a, b in zip(before[layer.name], layer.weights))}
    expected = set() if freeze_batchnorm else {layer.name for layer in batchnorms if layer.name.startswith("conv4_")}
    assert moved == expected
    if not freeze_batchnorm:  # The frozen lower BN layers ran in inference mode.
        assert all(not layer.trainable for layer in batchnorms if not layer.name.startswith("conv4_"))


@pytest.mark.slow
def test_fine_tune_runs_both_phases_and_keeps_batchnorm_frozen(resnet20_file, tiny_rgb, tmp_path):
    path, _ = resnet20_file
    model = transfer.build("resnet20", 3, weights=path)
    statistics = [w.numpy().copy() for w in model.get_layer("conv2_block1_1_bn").weights]
    first_conv = model.get_layer("conv1_conv").kernel.numpy().copy()
    head, fine = transfer.fine_tune(model, tiny_rgb, tiny_rgb, head_epochs=1, fine_tune_epochs=2, unfreeze="full",
                                    learning_rate=0.01, checkpoint_dir=str(tmp_path), schedule="constant",
                                    verbose=0)
    assert len(head.epoch) == 1 and len(fine.epoch) == 2
    assert np.isclose(float(fine.model.optimizer.learning_rate), 0.001)  # A tenth of phase 1's.
    assert not np.array_equal(model.get_layer("conv1_conv").kernel.numpy(), first_conv)  # "full" trained it.
    for before, after in zip(statistics, model.get_layer("conv2_block1_1_bn").weights):
        np.testing.assert_array_equal(before, after.numpy())
    assert {"head", "fine_tune"} <= set(os.listdir(tmp_path))
    assert os.path.exists(tmp_path / "fine_tune" / "best.keras")
    skipped, _ = transfer.fine_tune(model, tiny_rgb, head_epochs=0, fine_tune_epochs=1, verbose=0)
    assert skipped is None


def test_model_survives_keras_save_and_load(resnet20_file, tmp_path):
    path, _ = resnet20_file
    model = transfer.build("resnet20", 3, weights=path, mode="top", preprocessing="tf", head_units=(8,))
    saved = str(tmp_path / "transfer.keras")
    model.save(saved)
    loaded = keras.models.load_model(saved)
    x = images(CIFAR)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)
    assert [layer.trainable for layer in loaded.layers] == [layer.trainable for layer in model.layers]
    transfer.set_mode(loaded, "head")  # The roles survive in the layer names.
    assert count(loaded.trainable_weights) == 8 * 3 + 3 + 64 * 8 + 8


def test_transfer_model_exports_to_int8_tflite(trained_lenet, digits, tmp_path):
    source = str(tmp_path / "lenet5_digits.keras")
    trained_lenet.save(source)
    model = transfer.build("lenet5", 10, weights=source, pooling="flatten", head_units=(84,))
    training.fit(model, digits[0], epochs=2, learning_rate=0.01, verbose=0)
    report = export.to_tflite(model, str(tmp_path / "transfer_int8.tflite"), mode="int8",
                              representative_data=digits[0].take(4), verify_data=digits[1])
    assert report["agreement"] >= 0.97 and os.path.exists(tmp_path / "transfer_int8.tflite")


def test_linear_probe_and_features_on_real_digits(trained_lenet, digits, tmp_path):
    source = str(tmp_path / "lenet5_digits.keras")
    trained_lenet.save(source)
    probe = transfer.linear_probe("lenet5", digits[0], digits[1], weights=source, pooling="flatten")
    assert probe["accuracy"] >= 0.85 and probe["dimensions"] == 400 and probe["num_test"] == 360
    embeddings, labels = transfer.features("lenet5", digits[0], weights=source, pooling="flatten")
    from sklearn.datasets import load_digits

    assert embeddings.shape == (1437, 400)
    np.testing.assert_array_equal(np.bincount(labels), np.bincount(load_digits().target[:1437]))
    # The shuffled pass kept images and labels together: the probe's classifier agrees with them.
    assert probe["classifier"].score(embeddings, labels) >= 0.95


@pytest.mark.parametrize("call,message", [
    (lambda: transfer.build(keras.Sequential([keras.Input((8, 8, 3))]), 3), "not a kzoo model"),
    (lambda: transfer.build(lambda **kwargs: None, 3), "include_top=False"),
    (lambda: transfer.build("resnet5O", 3, weights=None), "Did you mean .*'resnet50'"),
    (lambda: transfer.build("resnet20", 0, weights=None), "num_classes=0 must be a positive integer"),
    (lambda: transfer.build("resnet20", 3, weights=None, mode="top", trainable_from="conv9"),
     "trainable_from='conv9' is neither a stage nor a layer.*conv1, conv2, conv3, conv4"),
    (lambda: transfer.build("resnet20", 3, weights=None, mode="partial"), "mode='partial' is not one of"),
    (lambda: transfer.build("resnet20", 3, weights=None, trainable_from="conv3"), "only applies with mode='top'"),
    (lambda: transfer.build("lenet5", 3, weights=None, preprocessing="caffe"), "needs RGB input"),
    (lambda: transfer.build("resnet20", 3, weights=None, pooling="mean"), "pooling='mean' is not one of"),
    (lambda: transfer.build("lenet5", 3, weights="imagenet"), "lenet5 has no pretrained weights"),
    (lambda: transfer.set_mode(kzoo.lenet5(), "head"), "set_mode takes models made by kzoo.transfer.build"),
])
def test_bad_input_gets_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_features_take_uint8_and_unit_images_alike_and_refuse_the_rest(caplog):
    extractor = transfer.feature_extractor("lenet5", weights=None, pooling="flatten")
    pixels = np.random.RandomState(0).randint(0, 256, (6, 28, 28, 1)).astype("uint8")
    expected = transfer.features(extractor, pixels / 255.0)
    np.testing.assert_array_equal(transfer.features(extractor, pixels), expected)
    with caplog.at_level("WARNING", logger="kzoo"):
        np.testing.assert_array_equal(transfer.features(extractor, pixels.astype("float32")), expected)
    assert "read as 0-255 and scaled by 1/255" in caplog.text
    with pytest.raises(ValueError, match=r"data has 3-channel images .* the model takes 1-channel images"):
        transfer.features(extractor, np.repeat(pixels, 3, axis=-1))
    with pytest.raises(ValueError, match=r"data has float values from -1 to"):
        transfer.features(extractor, pixels / 127.5 - 1.0)
    probe = transfer.linear_probe(extractor, (pixels, np.arange(6) % 2), (pixels, np.arange(6) % 2))
    assert probe["num_train"] == probe["num_test"] == 6
