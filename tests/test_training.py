"""kzoo.training and kzoo.distribute: fit, resume after a kill, strategies, precision, curves."""

import csv
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import kzoo
from kzoo import data, distribute, training

MNIST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "mnist")


def digits(split="train", batch_size=128, **kwargs):
    return data.load("digits", split, batch_size=batch_size, **kwargs)


def run_python(code, *args, env=None):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300,
    )


def test_fit_trains_writes_checkpoints_and_logs(tmp_path):
    model = kzoo.lenet5()
    history = training.fit(model, digits(augment="mnist", seed=0), digits("test", shuffle=False),
                           epochs=3, checkpoint_dir=str(tmp_path), seed=0, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["val_accuracy"][-1] > 0.5
    assert sorted(os.listdir(tmp_path)) == ["best.keras", "history.csv", "logs"]  # Backup removed when done.
    best = keras.models.load_model(tmp_path / "best.keras")
    assert best.count_params() == model.count_params()
    with open(tmp_path / "history.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1", "2"]


def test_fit_picks_the_loss_from_the_output_and_the_labels():
    logits = kzoo.lenet5(classifier_activation=None)
    training.fit(logits, digits(), epochs=1, verbose=0)
    assert logits.loss.from_logits and isinstance(logits.loss, keras.losses.SparseCategoricalCrossentropy)
    softmax = kzoo.lenet5()
    training.fit(softmax, digits(augment=kzoo.augment.mnist(mixup_alpha=0.2), seed=0), epochs=1, verbose=0)
    assert not softmax.loss.from_logits and isinstance(softmax.loss, keras.losses.CategoricalCrossentropy)
    smoothed = kzoo.lenet5()
    training.fit(smoothed, digits(), epochs=1, label_smoothing=0.1, verbose=0)
    assert smoothed.loss.get_config()["label_smoothing"] == pytest.approx(0.1)


def test_fit_copies_the_trained_weights_into_the_given_model_under_mixed_precision():
    model = kzoo.lenet5()
    before = [w.copy() for w in model.get_weights()]
    history = training.fit(model, digits(), epochs=1, mixed_precision="mixed_bfloat16", verbose=0)
    trained = history.model
    assert trained is not model
    assert trained.get_layer("conv1").compute_dtype == "bfloat16"
    assert trained.get_layer("predictions").compute_dtype == "float32"
    assert trained.outputs[0].dtype == "float32"
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    np.testing.assert_array_equal(model.get_weights()[0], trained.get_weights()[0])


def test_a_killed_fit_resumes_at_the_next_epoch_and_finishes(tmp_path):
    script = """
        import json, os, sys
        import keras, kzoo
        from kzoo import data, training

        class KillAfterFirstEpoch(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if os.environ.get("KILL") and epoch == 0:
                    os._exit(3)  # As abrupt as a lost machine.

        train = data.load("digits", batch_size=128, seed=0)
        history = training.fit(kzoo.lenet5(), train, epochs=3, checkpoint_dir=sys.argv[1], seed=0,
                               callbacks=[KillAfterFirstEpoch()], verbose=0)
        print(json.dumps(history.epoch))
    """
    killed = run_python(script, str(tmp_path), env={"KILL": "1"})
    assert killed.returncode == 3, killed.stderr[-2000:]
    assert os.path.isdir(tmp_path / "backup")
    resumed = run_python(script, str(tmp_path))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout.strip().splitlines()[-1]) == [1, 2]
    with open(tmp_path / "history.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1", "2"]


def test_mirrored_strategy_trains_on_two_logical_cpus():
    result = run_python("""
        import json
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import kzoo
        from kzoo import data, training
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        history = training.fit(kzoo.lenet5(), data.load("digits", batch_size=128, seed=0), epochs=3,
                               strategy=strategy, verbose=0, seed=0)
        print(json.dumps({"replicas": strategy.num_replicas_in_sync, "loss": history.history["loss"],
                          "mirrored": type(history.model.weights[0].value).__name__}))
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert "Mirrored" in report["mirrored"]
    assert report["loss"][-1] < report["loss"][0]


def test_strategy_and_precision_selection_on_this_cpu():
    assert distribute.strategy("auto") is distribute.strategy("default")
    assert distribute.precision_policy("auto") == "float32"
    assert distribute.precision_policy(False) == "float32"
    assert distribute.precision_policy("mixed_float16") == "mixed_float16"
    with pytest.raises(ValueError, match=r"strategy='horovod' is not one of"):
        distribute.strategy("horovod")
    with pytest.raises(ValueError, match=r"no TPU could be resolved"):
        distribute.strategy("tpu")
    with pytest.raises(ValueError, match=r"mixed_precision='fp8' is not one of"):
        distribute.precision_policy("fp8")


def test_learning_rate_schedules_warm_up_decay_and_step():
    cosine = training.learning_rate_schedule("cosine", 0.1, epochs=10, steps_per_epoch=100, warmup_epochs=1)
    values = [float(cosine(step)) for step in (0, 100, 550, 999)]
    assert values[0] == pytest.approx(0.01) and values[1] == pytest.approx(0.1)
    assert values[1] > values[2] > values[3] >= 0
    step = training.learning_rate_schedule("step", 0.1, epochs=4, steps_per_epoch=10)
    assert [round(float(step(s)), 6) for s in (0, 21, 31)] == [0.1, 0.01, 0.001]
    assert training.learning_rate_schedule("constant", 0.1, epochs=1, steps_per_epoch=1) == 0.1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(epochs=0), r"epochs=0 must be a positive integer"),
        (dict(epochs=1, optimizer="lion"), r"optimizer='lion' is not one of"),
        (dict(epochs=1, schedule="linear"), r"schedule='linear' is not one of"),
        (dict(epochs=1, label_smoothing=1.0), r"label_smoothing=1.0 must be in \[0, 1\)"),
    ],
)
def test_bad_fit_arguments_get_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        training.fit(kzoo.lenet5(), digits(), **kwargs)


def test_a_repeating_dataset_needs_steps_per_epoch():
    with pytest.raises(ValueError, match="pass steps_per_epoch"):
        training.fit(kzoo.lenet5(), digits().repeat(), epochs=1)


def test_plot_history_and_evaluate_write_pngs(tmp_path):
    model = kzoo.lenet5()
    history = training.fit(model, digits(), digits("test"), epochs=2, verbose=0)
    curves = training.plot_history(history, str(tmp_path / "curves.png"))
    report = training.evaluate(model, digits("test", shuffle=False), plot_confusion=str(tmp_path / "confusion.png"))
    for path in (curves, tmp_path / "confusion.png"):
        assert open(path, "rb").read(4) == b"\x89PNG"
    confusion = np.array(report["confusion_matrix"])
    assert confusion.shape == (10, 10) and confusion.sum() == report["num_examples"] == 360
    assert report["accuracy"] == pytest.approx(np.trace(confusion) / 360)
    assert report["accuracy"] == pytest.approx(model.evaluate(digits("test"), verbose=0)[1], abs=1e-6)


@pytest.mark.skipif(not os.path.isdir(MNIST), reason="the shared MNIST test split is not beside this checkout")
def test_lenet5_reaches_97_percent_on_real_mnist_within_5_epochs():
    images = data.read_idx(os.path.join(MNIST, "t10k-images-idx3-ubyte.gz"))
    labels = data.read_idx(os.path.join(MNIST, "t10k-labels-idx1-ubyte.gz"))
    train = data.from_arrays(images[:8000], labels[:8000], batch_size=64, augment="mnist", seed=0)
    test = data.from_arrays(images[8000:], labels[8000:], batch_size=500, shuffle=False)
    model = kzoo.lenet5()
    training.fit(model, train, epochs=5, seed=0, verbose=0)
    assert training.evaluate(model, test)["accuracy"] >= 0.97
