"""The builders: every registered model builds, runs, saves; the published sizes hold."""

import inspect
import math

import keras
import numpy as np
import pytest
from conftest import assert_close, images, registry_params

import kzoo
from kzoo.layers import BatchNormalization
from kzoo.models import _registry

ALL_MODELS = registry_params()
# The families that can build a keras.Sequential (their builders take sequential=).
LINEAR_MODELS = registry_params([name for name in kzoo.list_models()
                                 if "sequential" in inspect.signature(_registry.model_entry(name).fn).parameters])


def trainable_params(model):
    return sum(math.prod(w.shape) for w in model.trainable_weights)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_builds_runs_and_survives_keras_round_trip(name, tmp_path):
    shape = _registry.model_entry(name).small_input
    model = kzoo.get_model(name, num_classes=10, input_shape=shape)
    x = images(shape)
    probs = np.asarray(model(x))
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(restored(x)), probs, atol=1e-6)
    for built in (model, restored):  # kzoo's BatchNormalization, also as loaded back.
        assert all(type(layer) is BatchNormalization for layer in built.layers
                   if isinstance(layer, keras.layers.BatchNormalization))


@pytest.mark.parametrize("pooling, rank", [("avg", 2), pytest.param("max", 2, marks=pytest.mark.slow), (None, 4)])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_without_top_gives_pooled_or_spatial_features(name, pooling, rank):
    shape = _registry.model_entry(name).small_input
    model = kzoo.get_model(name, include_top=False, pooling=pooling, input_shape=shape)
    features = model(images(shape))
    assert len(features.shape) == rank
    assert not any("predictions" in layer.name for layer in model.layers)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_features_only_returns_one_map_per_stage_at_the_stated_stride(name):
    entry = _registry.model_entry(name)
    size = 64 if entry.family.min_size <= 64 else 128
    shape = (size, size, entry.default_input[-1])
    model = kzoo.get_model(name, features_only=True, input_shape=shape)
    maps = model(images(shape, batch=1))
    strides = entry.family.stage_strides
    assert len(maps) == len(strides)
    if name not in ("alexnet", "zfnet"):  # Their valid strided convolutions and pools round down.
        assert [size // m.shape[1] for m in maps] == list(strides)
    assert kzoo.model_info(name)["feature_strides"] == strides
    # feature_info describes each map: the layer that gives it, its channels and stride.
    assert [info.stage for info in model.feature_info] == list(range(len(strides)))
    assert [info.reduction for info in model.feature_info] == list(strides)
    assert [info.channels for info in model.feature_info] == [m.shape[-1] for m in maps]
    assert [info.layer for info in model.feature_info] == [t._keras_history.operation.name for t in model.outputs]
    whole = kzoo.get_model(name, input_shape=shape)
    assert whole.feature_info == model.feature_info


def test_features_only_picks_out_indices():
    model = kzoo.resnet18(features_only=True, out_indices=(1, 3), input_shape=(64, 64, 3))
    maps = model(images((64, 64, 3), batch=1))
    assert [tuple(m.shape[1:]) for m in maps] == [(16, 16, 64), (4, 4, 256)]
    assert [(info.stage, info.channels, info.reduction) for info in model.feature_info] == [(1, 64, 4), (3, 256, 16)]


# Every model's parameter count as its reference states it: adding a model adds its row here.
# torchvision counts trainable parameters (its BN statistics are buffers), keras.applications all of
# them; the CIFAR ResNets' trainable counts are those of akamaster/pytorch_resnet_cifar10.
EXPECTED_PARAMS = {
    "lenet5": ("trainable", 61_706),
    "alexnet": ("trainable", 61_100_840),
    "vgg11": ("trainable", 132_863_336), "vgg13": ("trainable", 133_047_848),
    "vgg16": ("trainable", 138_357_544), "vgg19": ("trainable", 143_667_240),
    "vgg11_bn": ("trainable", 132_868_840), "vgg13_bn": ("trainable", 133_053_736),
    "vgg16_bn": ("trainable", 138_365_992), "vgg19_bn": ("trainable", 143_678_248),
    "resnet18": ("trainable", 11_689_512), "resnet34": ("trainable", 21_797_672),
    "resnet50": ("total", 25_636_712), "resnet101": ("total", 44_707_176), "resnet152": ("total", 60_419_944),
    "resnet50_v2": ("total", 25_613_800), "resnet101_v2": ("total", 44_675_560),
    "resnet152_v2": ("total", 60_380_648),
    "resnet20": ("trainable", 269_722), "resnet32": ("trainable", 464_154), "resnet44": ("trainable", 658_586),
    "resnet56": ("trainable", 853_018), "resnet110": ("trainable", 1_727_962),
    # torchvision's and timm's counts (BatchNorm statistics are buffers there, not parameters).
    "googlenet": ("trainable", 6_624_904),
    "zfnet": ("trainable", 62_357_608),
    "wide_resnet50_2": ("trainable", 68_883_240), "wide_resnet101_2": ("trainable", 126_886_696),
    "resnet50_tv": ("trainable", 25_557_032), "resnet101_tv": ("trainable", 44_549_160),
    "seresnet50": ("trainable", 28_088_024), "seresnet101": ("trainable", 49_326_872),
    "seresnet152": ("trainable", 66_821_848),
}


def test_the_registry_is_the_counts_table():
    assert sorted(kzoo.list_models()) == sorted(EXPECTED_PARAMS)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_parameter_count_matches_the_reference(name):
    assert name in EXPECTED_PARAMS, f"add {name}'s reference parameter count to EXPECTED_PARAMS"
    counted, expected = EXPECTED_PARAMS[name]
    model = kzoo.get_model(name)
    assert (trainable_params(model) if counted == "trainable" else model.count_params()) == expected


def test_googlenet_aux_logits_adds_two_auxiliary_classifiers():
    model = kzoo.googlenet(aux_logits=True, num_classes=10, input_shape=(96, 96, 3))
    assert [output.shape for output in model.outputs] == [(None, 10)] * 3
    full = kzoo.googlenet(aux_logits=True)
    assert trainable_params(full) == 13_004_888  # torchvision's count with both auxiliary heads.
    with pytest.raises(ValueError, match="aux_logits=True needs include_top=True"):
        kzoo.googlenet(aux_logits=True, include_top=False)


def test_resnet20_has_the_papers_027m_parameters():
    params = kzoo.resnet20().count_params()
    assert round(params / 1e6, 2) == 0.27
    assert kzoo.resnet20().output.shape == (None, 10)


def test_lenet5_classic_uses_tanh_and_average_pooling():
    model = kzoo.lenet5(classic=True)
    assert model.get_layer("conv1").activation.__name__ == "tanh"
    assert isinstance(model.get_layer("pool1"), keras.layers.AveragePooling2D)
    assert kzoo.lenet5().get_layer("conv1").activation.__name__ == "relu"
    assert model.count_params() == 61_706


@pytest.mark.parametrize("name", LINEAR_MODELS)
def test_sequential_and_functional_share_weights_and_outputs(name, tmp_path):
    shape = _registry.model_entry(name).small_input
    functional = kzoo.get_model(name, num_classes=7, input_shape=shape)
    sequential = kzoo.get_model(name, num_classes=7, input_shape=shape, sequential=True)
    assert isinstance(sequential, keras.Sequential)
    assert not isinstance(functional, keras.Sequential)
    assert sequential.feature_info == functional.feature_info
    sequential.set_weights(functional.get_weights())
    x = images(shape)
    np.testing.assert_allclose(np.asarray(sequential(x)), np.asarray(functional(x)), atol=1e-6)
    # The same file loads into both forms.
    path = tmp_path / "seq.weights.h5"
    sequential.save_weights(path)
    again = kzoo.get_model(name, num_classes=7, input_shape=shape, weights=str(path))
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(functional(x)), atol=1e-6)


@pytest.mark.parametrize("name, size", [pytest.param("vgg16", 32, marks=pytest.mark.slow), ("resnet50", 32),
                                        pytest.param("resnet50_v2", 32, marks=pytest.mark.slow),
                                        ("alexnet", 63), ("lenet5", 12), ("resnet20", 4)])
def test_smallest_input_builds_and_one_less_is_refused(name, size):
    channels = _registry.model_entry(name).default_input[-1]
    model = kzoo.get_model(name, include_top=False, input_shape=(size, size, channels))
    assert min(model.output.shape[1:3]) >= 1
    with pytest.raises(ValueError, match=rf"too small for {name}.*at least {size}"):
        kzoo.get_model(name, include_top=False, input_shape=(size - 1, size, channels))


@pytest.mark.parametrize("name", ["resnet50", "vgg16", "lenet5"])
def test_a_channels_first_input_shape_is_named_as_such_with_the_shape_to_pass(name):
    height, width, channels = _registry.model_entry(name).default_input
    with pytest.raises(ValueError, match=rf"looks channels-first.*input_shape=\({height}, {width}, {channels}\)"):
        kzoo.get_model(name, input_shape=(channels, height, width))


def test_resnet_takes_any_input_size_including_none():
    model = kzoo.resnet50(include_top=False, pooling="avg", input_shape=(None, None, 3))
    assert model(images((97, 131, 3), batch=1)).shape == (1, 2048)


def test_input_tensor_is_used_as_the_model_input():
    tensor = keras.Input((48, 48, 3))
    model = kzoo.vgg11(include_top=False, input_tensor=tensor)
    assert model.inputs[0] is tensor
    assert model.output.shape == (None, 1, 1, 512)


def test_classes_is_an_alias_of_num_classes():
    assert kzoo.lenet5(classes=5).output.shape == (None, 5)
    assert kzoo.lenet5(num_classes=5, classes=5).output.shape == (None, 5)


def test_logits_when_classifier_activation_is_none():
    model = kzoo.lenet5(classifier_activation=None)
    assert model.get_layer("predictions").activation.__name__ == "linear"


def test_model_name_defaults_to_variant_and_can_be_set():
    assert kzoo.vgg13().name == "vgg13"
    assert kzoo.vgg13(name="backbone").name == "backbone"


def test_builders_show_their_arguments():
    import inspect

    parameters = inspect.signature(kzoo.vgg16).parameters
    for argument in ("include_top", "weights", "input_tensor", "input_shape", "pooling",
                     "num_classes", "classes", "classifier_activation", "name", "dropout",
                     "sequential", "features_only", "out_indices"):
        assert argument in parameters
    assert "variant" not in parameters


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_classes=0), r"num_classes=0 must be a positive integer"),
        (dict(num_classes=10, classes=5), r"num_classes=10 and classes=5 disagree"),
        (dict(pooling="mean", include_top=False), r"pooling='mean' is not one of None, 'avg', 'max'"),
        (dict(input_shape=(32, 32)), r"input_shape=\(32, 32\) must be \(height, width, channels\)"),
        (dict(input_shape=(None, None, 1)), r"flattens the last feature map.*fixed height and width"),
        (dict(features_only=True, pooling="avg"), r"pooling='avg' cannot be combined with features_only"),
        (dict(features_only=True, out_indices=(2, 7)), r"out_indices=\(2, 7\) must be distinct stage indices from \[0, 1\]"),
        (dict(out_indices=(0,)), r"out_indices only applies with features_only=True"),
        (dict(sequential=True, features_only=True), r"sequential=True cannot be combined with features_only"),
    ],
)
def test_bad_builder_arguments_get_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kzoo.lenet5(**kwargs)


@pytest.mark.tf_backend
def test_zfnet_normalisation_is_tensorflows_and_survives_keras_tf_keras_and_tflite(tmp_path):
    import tensorflow as tf

    from kzoo import compress, export
    from kzoo.layers import LocalResponseNormalization

    x = images((5, 5, 16)) * 4.0
    expected = tf.nn.local_response_normalization(x, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75)
    assert_close(LocalResponseNormalization()(x), expected)
    shape = (63, 63, 3)
    model = kzoo.zfnet(input_shape=shape, num_classes=5)
    assert isinstance(model.get_layer("norm1"), LocalResponseNormalization)
    batch = images(shape, batch=4)
    model.save(tmp_path / "zfnet.keras")
    assert_close(keras.saving.load_model(tmp_path / "zfnet.keras")(batch), model(batch))
    assert_close(compress.to_keras(compress.to_tf_keras(model))(batch), model(batch))
    report = export.to_tflite(model, str(tmp_path / "zfnet.tflite"), verify_data=(batch, np.arange(4)))
    assert report["agreement"] == 1.0 and report["max_abs_diff"] <= 1e-4 * float(np.abs(model(batch)).max())


def _batchnorm_pair(x, moving_mean):
    """Keras' BatchNormalization and kzoo's with the same weights, after one training call on `x` each."""
    pair = [keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5), BatchNormalization(momentum=0.9, epsilon=1e-5)]
    rng = np.random.default_rng(1)
    gamma, beta = rng.normal(1, 0.2, x.shape[-1]), rng.normal(0, 0.2, x.shape[-1])
    outputs = []
    for layer in pair:
        layer.build(x.shape)
        layer.set_weights([gamma, beta, np.full(x.shape[-1], moving_mean), np.ones(x.shape[-1])])
        outputs.append(keras.ops.convert_to_numpy(keras.ops.cast(layer(x, training=True), "float32")))
    moving = [[keras.ops.convert_to_numpy(v) for v in (layer.moving_mean, layer.moving_variance)] for layer in pair]
    return outputs, moving


def test_batchnorm_is_keras_own_in_float32_and_one_pass_under_mixed_precision():
    x = np.random.default_rng(0).normal(50.0, 2.0, (8, 6, 6, 5)).astype("float32")
    (keras_out, kzoo_out), (keras_moving, kzoo_moving) = _batchnorm_pair(x, moving_mean=0.0)
    np.testing.assert_array_equal(kzoo_out, keras_out)  # float32: Keras' own path, to the bit.
    for keras_stat, kzoo_stat in zip(keras_moving, kzoo_moving):
        np.testing.assert_array_equal(kzoo_stat, keras_stat)

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        # The one pass, shifted by a moving mean near the batch's (as in training): float32 statistics as exact
        # as Keras' two passes (a mean of 50 and a variance of 4 would cancel without the shift) ...
        (keras_out, kzoo_out), (_, kzoo_moving) = _batchnorm_pair(x, moving_mean=49.0)
        # The layer's input: x rounded to bfloat16.
        seen = keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.cast(x, "bfloat16"), "float64"))
        mean, variance = seen.mean(axis=(0, 1, 2)), seen.var(axis=(0, 1, 2))
        np.testing.assert_allclose(kzoo_moving[0], 0.9 * 49.0 + 0.1 * mean, rtol=1e-6)
        np.testing.assert_allclose(kzoo_moving[1], 0.9 + 0.1 * variance, rtol=1e-5)
        # ... and outputs that differ from Keras' by bfloat16's rounding alone (8 bits: 2^-8 of their size).
        assert np.abs(kzoo_out - keras_out).max() <= 2 ** -7 * np.abs(keras_out).max()
    finally:
        keras.config.set_dtype_policy(previous)
