"""kzoo.compress: the Keras 3 <-> tf_keras bridge, pruning, QAT/PQAT, clustering, distillation."""

import os

import keras
import numpy as np
import pytest
import tf_keras

import kzoo
from kzoo import compress, data, export
from conftest import assert_close, images, registry_params


def accuracy(model, dataset):
    hits = total = 0
    for x, y in dataset:
        hits += int(np.sum(np.asarray(model(x, training=False)).argmax(-1) == y.numpy()))
        total += len(y)
    return hits / total


@pytest.mark.parametrize("name", registry_params())
def test_bridge_round_trip_keeps_outputs_for_every_registry_model(name):
    shape = kzoo.models.model_entry(name).small_input
    model = kzoo.get_model(name, input_shape=shape)
    x = images(shape)
    twin = compress.to_tf_keras(model)
    back = compress.to_keras(twin)
    assert isinstance(twin, tf_keras.Model) and isinstance(back, keras.Model)
    expected = np.asarray(model(x, training=False))
    assert_close(twin(x, training=False), expected)
    assert_close(back(x, training=False), expected)
    assert [layer.name for layer in back.layers] == [layer.name for layer in model.layers]


def test_bridge_flattens_nested_models_and_takes_sequential_ones():
    backbone = kzoo.resnet20(include_top=False, pooling="avg", input_shape=(32, 32, 3))
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(3, activation="softmax")(backbone(keras.layers.Rescaling(2.0)(inputs)))
    model = keras.Model(inputs, outputs)
    twin = compress.to_tf_keras(model)
    assert not any(isinstance(layer, tf_keras.Model) for layer in twin.layers)
    x = images((32, 32, 3))
    assert_close(twin(x), model(x))
    sequential = kzoo.lenet5(sequential=True)
    x = images((28, 28, 1))
    assert_close(compress.to_tf_keras(sequential)(x), sequential(x))


def test_bridge_names_a_layer_it_cannot_translate():
    class Doubling(keras.layers.Layer):
        def call(self, x):
            return 2 * x

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(Doubling(name="doubling")(inputs)))
    with pytest.raises(compress.UntranslatableLayerError, match=r"'doubling' \(.*Doubling\)"):
        compress.to_tf_keras(model)
    dense = keras.layers.Dense(2, name="lora_dense")
    model = keras.Model(inputs, dense(inputs))
    dense.enable_lora(2)
    with pytest.raises(compress.UntranslatableLayerError, match="lora_dense.*lora_rank"):
        compress.to_tf_keras(model)


def test_prune_reaches_the_target_sparsity_and_returns_a_keras3_model(trained_lenet, digits, monkeypatch):
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    pruned = compress.prune(trained_lenet, digits[0], target_sparsity=0.8, epochs=2, exclude=["predictions"])
    assert isinstance(pruned, keras.Model)
    assert "TF_USE_LEGACY_KERAS" not in os.environ  # TFMOT sets it on import; subprocesses would get tf_keras.
    report = compress.sparsity_report(pruned)
    for name in ("conv1", "conv2", "fc1", "fc2"):
        assert abs(report["layers"][name] - 0.8) <= 0.01
    assert report["layers"]["predictions"] < 0.05  # Excluded: left dense.
    dense = compress.sparsity_report(trained_lenet)
    assert report["gzip_bytes"] < 0.5 * dense["gzip_bytes"]
    assert accuracy(pruned, digits[1]) > 0.5  # Fine-tuned, still a digit classifier.


def test_prune_2_4_keeps_two_of_every_four_weights(trained_lenet, digits):
    pruned = compress.prune(trained_lenet, digits[0], structure="2:4", epochs=1)
    kernel = pruned.get_layer("fc1").get_weights()[0]  # (inputs, units): blocks of 4 along the inputs.
    blocks = (kernel.reshape(-1, 4, kernel.shape[-1]) != 0).sum(axis=1)
    assert blocks.max() <= 2


@pytest.mark.slow
def test_pqat_keeps_the_pruned_zeros_and_converts_to_int8_without_calibration(trained_lenet, digits, tmp_path):
    pruned = compress.prune(trained_lenet, digits[0], target_sparsity=0.8, epochs=1)
    qat = compress.quantize_aware(pruned, digits[0], epochs=1, preserve_sparsity=True)
    kernel = next(w for layer in qat.layers if layer.name.endswith("conv2") for w in layer.weights
                  if w.name.endswith("kernel:0")).numpy()
    assert abs(np.mean(kernel == 0) - 0.8) <= 0.01
    report = export.to_tflite(qat, str(tmp_path / "pqat.tflite"), mode="int8", verify_data=digits[1])
    assert report["agreement"] >= 0.95 and report["quantization_aware"]


@pytest.mark.slow
def test_qat_handles_a_residual_model_and_lists_what_stays_float(tmp_path):
    model = kzoo.resnet20(input_shape=(32, 32, 3), num_classes=4)
    x = images((32, 32, 3), batch=8)
    train = data.from_arrays((x * 255).astype("uint8"), np.arange(8) % 4, batch_size=4)
    with pytest.warns(UserWarning, match="conv3_block1_0_zeros"):
        qat = compress.quantize_aware(model, train, epochs=1)
    assert compress.float_layers(qat) == ["conv3_block1_0_zeros", "conv4_block1_0_zeros"]  # Rescaling(0).
    report = export.to_tflite(qat, str(tmp_path / "resnet20.tflite"), mode="int8", verify_data=train)
    assert report["samples"] == 8 and report["size_bytes"] > 0


def test_cluster_leaves_at_most_the_asked_number_of_values(trained_lenet, digits):
    clustered = compress.cluster(trained_lenet, digits[0], clusters=8, epochs=1)
    for name in ("conv1", "conv2", "fc1", "predictions"):
        assert len(np.unique(clustered.get_layer(name).get_weights()[0])) <= 8


def test_distill_returns_a_trained_student(trained_lenet, digits):
    student = kzoo.lenet5(classifier_activation=None)
    untrained = accuracy(student, digits[1])
    returned = compress.distill(trained_lenet, student, digits[0], epochs=3, verbose=0)
    assert returned is student
    assert accuracy(student, digits[1]) > max(0.6, untrained + 0.3)


@pytest.mark.parametrize("call, message", [
    (lambda m, d: compress.prune(m, d, target_sparsity=1.0), "target_sparsity=1.0"),
    (lambda m, d: compress.prune(m, d, exclude=["nope"]), r"No layers named \['nope'\]"),
    (lambda m, d: compress.prune(m, d, structure="4:8"), "structure='4:8'"),
    (lambda m, d: compress.prune(m, d.repeat()), "no known length"),
    (lambda m, d: compress.cluster(m, d, clusters=1), "clusters=1"),
    (lambda m, d: compress.distill(m, kzoo.lenet5(num_classes=5), d, epochs=1), "10 classes and the student 5"),
])
def test_bad_compression_arguments_get_clear_errors(trained_lenet, digits, call, message):
    with pytest.raises(ValueError, match=message):
        call(trained_lenet, digits[0])


def test_compression_refuses_data_that_does_not_fit_the_model(digits):
    import tensorflow as tf

    rgb = digits[0].map(lambda x, y: (tf.image.grayscale_to_rgb(x), y))
    with pytest.raises(ValueError, match=r"train has 3-channel images .* the model takes 1-channel images"):
        compress.prune(kzoo.lenet5(), rgb, epochs=1)
