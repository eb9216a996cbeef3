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
import tensorflow as tf

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


@pytest.mark.slow
@pytest.mark.parametrize("adversarial", ["", "pgd"])
def test_a_killed_fit_resumes_at_the_next_epoch_and_finishes(tmp_path, adversarial):
    script = """
        import json, os, sys
        import keras, kzoo
        from kzoo import data, robust, training

        class KillAfterFirstEpoch(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if os.environ.get("KILL") and epoch == 0:
                    os._exit(3)  # As abrupt as a lost machine.

        train = data.load("digits", batch_size=128, seed=0)
        attack = robust.PGD(eps=0.1, step=0.05, steps=2) if os.environ.get("ADVERSARIAL") else None
        history = training.fit(kzoo.lenet5(), train, epochs=3, checkpoint_dir=sys.argv[1], seed=0,
                               callbacks=[KillAfterFirstEpoch()], adversarial=attack, verbose=0)
        print(json.dumps(history.epoch))
    """
    killed = run_python(script, str(tmp_path), env={"KILL": "1", "ADVERSARIAL": adversarial})
    assert killed.returncode == 3, killed.stderr[-2000:]
    assert os.path.isdir(tmp_path / "backup")
    resumed = run_python(script, str(tmp_path), env={"ADVERSARIAL": adversarial})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout.strip().splitlines()[-1]) == [1, 2]
    with open(tmp_path / "history.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1", "2"]
    # The adversarial train step is installed on the instance for the run only: the kept model is a plain one.
    assert keras.models.load_model(tmp_path / "best.keras").count_params() == kzoo.lenet5().count_params()


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(MNIST), reason="the shared MNIST test split is not beside this checkout")
def test_lenet5_reaches_97_percent_on_real_mnist_within_5_epochs():
    images = data.read_idx(os.path.join(MNIST, "t10k-images-idx3-ubyte.gz"))
    labels = data.read_idx(os.path.join(MNIST, "t10k-labels-idx1-ubyte.gz"))
    train = data.from_arrays(images[:8000], labels[:8000], batch_size=64, augment="mnist", seed=0)
    test = data.from_arrays(images[8000:], labels[8000:], batch_size=500, shuffle=False)
    model = kzoo.lenet5()
    training.fit(model, train, epochs=5, seed=0, verbose=0)
    assert training.evaluate(model, test)["accuracy"] >= 0.97


@pytest.mark.slow
def test_the_same_seed_repeats_a_run_exactly_and_another_seed_does_not():
    def run(seed, built_first):
        keras.utils.set_random_seed(seed)  # As a recipe starts (tf.data's seeds combine with TF's global one).
        train = digits(augment="mnist", seed=seed)
        if built_first:
            model = kzoo.lenet5()
            training.fit(model, train, epochs=1, seed=seed, verbose=0)
            return model.get_weights()
        return training.fit(kzoo.lenet5, train, epochs=1, seed=seed, verbose=0).model.get_weights()

    for built_first in (True, False):
        first, again, other = run(3, built_first), run(3, built_first), run(4, built_first)
        assert all(np.array_equal(a, b) for a, b in zip(first, again))
        assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_fit_takes_arrays_through_the_same_checks_as_the_pipelines(caplog):
    rng = np.random.RandomState(0)
    pixels, labels = rng.randint(0, 256, (64, 28, 28, 1)).astype("uint8"), rng.randint(0, 10, 64)
    with caplog.at_level("WARNING", logger="kzoo"):
        from_floats = training.fit(kzoo.lenet5, (pixels.astype("float32"), labels), (pixels, labels),
                                   epochs=1, batch_size=16, seed=0, verbose=0)
    assert "float pixels from 0 to 255 read as 0-255" in caplog.text
    from_uint8 = training.fit(kzoo.lenet5, (pixels, labels), epochs=1, batch_size=16, seed=0, verbose=0)
    assert from_floats.history["loss"] == from_uint8.history["loss"]  # The same images, scaled the same way.
    assert "val_accuracy" in from_floats.history
    with pytest.raises(ValueError, match=r"train: labels has class id 10, but there are num_classes=10"):
        training.fit(kzoo.lenet5(), (pixels, labels + 1), epochs=1)
    with pytest.raises(ValueError, match=r"train: images has float values from -1 to 1"):
        training.fit(kzoo.lenet5(), (pixels / 127.5 - 1.0, labels), epochs=1)
    with pytest.raises(ValueError, match=r"batch_size=16 is for \(images, labels\) arrays"):
        training.fit(kzoo.lenet5(), digits(), epochs=1, batch_size=16)


def test_fit_refuses_data_that_does_not_fit_the_model_before_training():
    model = kzoo.lenet5(num_classes=5)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"train has 10 classes but the model outputs 5: build it with num_classes=10"):
        training.fit(model, digits(), epochs=1)
    rgb = digits().map(lambda x, y: (tf.image.grayscale_to_rgb(x), y))
    with pytest.raises(ValueError, match=r"train has 3-channel images .* the model takes 1-channel images"):
        training.fit(kzoo.lenet5(), rgb, epochs=1)
    with pytest.raises(ValueError, match=r"val has 1-channel images .*tf.image.grayscale_to_rgb"):
        training.fit(kzoo.get_model("resnet20"), digits(image_size=32).map(
            lambda x, y: (tf.image.grayscale_to_rgb(x), y)), digits("test", image_size=32), epochs=1)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_evaluate_checks_what_it_is_given():
    model = kzoo.lenet5(num_classes=5)
    with pytest.raises(ValueError, match=r"data's labels has class id 9, but there are num_classes=5"):
        training.evaluate(model, digits("test"))
    images = np.random.RandomState(0).randint(0, 256, (8, 28, 28, 1)).astype("uint8")
    as_uint8 = training.evaluate(model, (images, np.arange(8) % 5))
    as_unit = training.evaluate(model, (images / 255.0, np.arange(8) % 5))
    assert as_uint8 == as_unit


def test_save_artifacts_keeps_the_model_and_metrics_without_matplotlib(tmp_path, monkeypatch, caplog):
    model = kzoo.lenet5()
    history = training.fit(model, digits(), epochs=1, verbose=0)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # As if the optional extra were not installed.
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with caplog.at_level("WARNING", logger="kzoo"):
        metrics = training.save_artifacts(str(tmp_path), model, history, digits("test", shuffle=False))
    assert sorted(os.listdir(tmp_path)) == ["metrics.json", "model.keras"]
    assert json.loads((tmp_path / "metrics.json").read_text())["test_accuracy"] == metrics["test_accuracy"]
    assert "Skipped curves.png and confusion.png" in caplog.text and "pip install 'kzoo[plot]'" in caplog.text
    with pytest.raises(ImportError, match=r"training.plot_history needs matplotlib.*pip install 'kzoo\[plot\]'"):
        training.plot_history(history, str(tmp_path / "curves.png"))


def test_written_files_get_the_usual_mode_not_a_temporary_files(tmp_path):
    from kzoo._io import save_json

    mask = os.umask(0o022)
    try:
        path = save_json({"a": 1}, str(tmp_path / "a.json"))
    finally:
        os.umask(mask)
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)


def test_fit_refuses_a_model_with_several_outputs_and_says_what_to_do(digits):
    model = kzoo.googlenet(aux_logits=True, num_classes=10, input_shape=(32, 32, 1))
    with pytest.raises(ValueError, match=r"3 outputs.*loss_weights=\[1.0, 0.3, 0.3\]"):
        training.fit(model, digits[0], epochs=1)
