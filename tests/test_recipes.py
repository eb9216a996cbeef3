"""The recipes, run as a user runs them: offline, they fall back or refuse as promised."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = {"model.keras", "history.csv", "curves.png", "confusion.png", "metrics.json"}


def run_recipe(name, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "recipes", name), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_mnist_quick_falls_back_to_digits_offline_and_writes_its_files(tmp_path):
    out = tmp_path / "run"
    result = run_recipe("mnist_lenet.py", "--quick", "--offline", "--data-dir", str(tmp_path / "tfds"),
                        "--output", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "MNIST cannot be had here" in result.stdout and "embedded scikit-learn digits" in result.stdout
    assert ARTIFACTS <= set(os.listdir(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "digits" and metrics["epochs_run"] == 2 and metrics["params"] == 61_706
    assert 0.0 < metrics["test_accuracy"] <= 1.0


def recipe_module(name, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "recipes"))
    return __import__(name)


def saved_weights(path):
    import keras

    return keras.models.load_model(path).get_weights()


def test_mnist_recipe_repeats_exactly_with_the_same_seed(tmp_path, monkeypatch):
    recipe = recipe_module("mnist_lenet", monkeypatch)
    runs = [recipe.main(["--quick", "--dataset", "digits", "--seed", str(seed), "--output", str(tmp_path / name)])
            for name, seed in (("a", 5), ("b", 5), ("c", 6))]
    assert runs[0]["test_accuracy"] == runs[1]["test_accuracy"]
    first, again, other = (saved_weights(tmp_path / name / "model.keras") for name in "abc")
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    assert not all(np.array_equal(x, y) for x, y in zip(first, other))


def test_mnist_recipe_validates_on_held_out_training_images_not_on_the_test_split(monkeypatch):
    from argparse import Namespace

    mnist = recipe_module("_mnist", monkeypatch)
    args = Namespace(dataset="digits", data_dir=None, offline=True, seed=0)
    _, train, val, test = mnist.load_mnist_or_digits(args, "test", train_batch=2000, test_batch=2000)
    parts = [{image.tobytes() for image in np.asarray(next(iter(d))[0])} for d in (train, val, test)]
    assert [len(part) for part in parts] == [1293, 144, 360]  # The digits' images are all distinct.
    assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]


def test_mnist_quick_without_matplotlib_writes_everything_else_and_says_what_it_skipped(tmp_path):
    blocked = ("import runpy, sys; sys.modules['matplotlib'] = None; "
               f"sys.path.insert(0, {os.path.join(ROOT, 'recipes')!r}); sys.argv = sys.argv[1:]; "
               "runpy.run_path(sys.argv[0], run_name='__main__')")
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-c", blocked, os.path.join(ROOT, "recipes", "mnist_lenet.py"),
                             "--quick", "--dataset", "digits", "--output", str(out)],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test accuracy" in result.stdout
    assert "Skipped curves.png and confusion.png" in result.stderr and "pip install 'kzoo[plot]'" in result.stderr
    assert {"model.keras", "best.keras", "history.csv", "metrics.json"} <= set(os.listdir(out))
    assert not {"curves.png", "confusion.png"} & set(os.listdir(out))


def test_mnist_with_dataset_mnist_refuses_the_fallback(tmp_path):
    result = run_recipe("mnist_lenet.py", "--dataset", "mnist", "--offline",
                        "--data-dir", str(tmp_path), "--output", str(tmp_path / "run"))
    assert result.returncode == 1
    assert "Dataset 'mnist' is not prepared in" in result.stderr and '"digits"' in result.stderr
    assert not (tmp_path / "run").exists()


def test_cifar10_quick_runs_offline(tmp_path):
    out = tmp_path / "run"
    result = run_recipe("cifar10_resnet.py", "--quick", "--offline", "--data-dir", str(tmp_path / "tfds"),
                        "--output", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "CIFAR-10 cannot be had here" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "resnet20" and metrics["paper_test_accuracy"] == 0.9125
    assert ARTIFACTS <= set(os.listdir(out))


def test_cifar10_full_run_offline_stops_with_the_reason(tmp_path):
    result = run_recipe("cifar10_resnet.py", "--offline", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "Dataset 'cifar10' is not prepared" in result.stderr


def test_compress_and_export_quick_runs_offline_and_prints_its_table(tmp_path):
    out = tmp_path / "run"
    result = run_recipe("compress_and_export.py", "--quick", "--offline", "--data-dir", str(tmp_path / "tfds"),
                        "--output", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "embedded scikit-learn digits" in result.stdout and "agreement_with_dense_float" in result.stdout
    report = json.loads((out / "report.json").read_text())
    rows = {(row["mode"], row["model"]): row for row in report["rows"]}
    assert set(rows) == {("float32", "dense"), ("int8", "dense"), ("float32", "pruned"), ("float16", "pruned"),
                         ("int8", "pruned+PQAT"), ("edgetpu", "pruned+PQAT")}
    assert abs(rows[("int8", "pruned+PQAT")]["sparsity"] - 0.8) <= 0.01
    assert rows[("edgetpu", "pruned+PQAT")]["size_vs_float32"] < 0.32
    for row in report["rows"]:
        assert (out / row["file"]).exists() and (out / row["file"].replace(".tflite", ".md")).exists()


def test_transfer_learning_quick_writes_its_weights_and_images_and_exports_int8(tmp_path):
    out = tmp_path / "run"
    result = run_recipe("transfer_learning.py", "--quick", "--export", "int8", "--output", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "a smoke test, not a result" in result.stdout
    assert (out / "resnet50_random_notop.weights.h5").exists() and len(os.listdir(out / "quick_images")) == 3
    assert ARTIFACTS - {"history.csv"} <= set(os.listdir(out))
    assert {"head", "fine_tune"} <= set(os.listdir(out))  # Each phase's checkpoints and logs.
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backbone"] == "resnet50" and metrics["mode"] == "top" and metrics["epochs_run"] == 2
    assert metrics["test_examples"] == 6  # 10% of each class's 20 images, none of them seen in training.
    assert metrics["tflite_agreement"] >= 0.9 and (out / metrics["tflite"]).exists()
    assert (out / metrics["tflite"].replace(".tflite", ".md")).exists()


def test_transfer_learning_without_imagenet_weights_says_where_to_put_the_file(tmp_path, monkeypatch, keras_home):
    import dataclasses

    from kzoo import weights

    transfer_learning = recipe_module("transfer_learning", monkeypatch)

    record = weights.get_record("resnet50")
    unreachable = dataclasses.replace(record.no_top, url="http://127.0.0.1:9/resnet50_notop.h5")
    monkeypatch.setitem(weights.RECORDS, ("resnet50", "imagenet"), dataclasses.replace(record, no_top=unreachable))
    images = transfer_learning.write_quick_images(str(tmp_path / "images"))
    with pytest.raises(SystemExit) as stop:
        transfer_learning.main(["--data-dir", images, "--image-size", "32", "--output", str(tmp_path / "run")])
    message = str(stop.value.code)
    assert os.path.join(keras_home, "models", record.no_top.file_name) in message and "--weights PATH" in message


def test_transfer_learning_keeps_the_trained_model_when_the_export_fails(tmp_path, monkeypatch):
    transfer_learning = recipe_module("transfer_learning", monkeypatch)

    def failing_export(*args, **kwargs):
        raise transfer_learning.export.ExportError("the converter failed")

    monkeypatch.setattr(transfer_learning.export, "to_tflite", failing_export)
    out = tmp_path / "run"
    with pytest.raises(transfer_learning.export.ExportError):
        transfer_learning.main(["--quick", "--backbone", "resnet20", "--export", "int8", "--output", str(out)])
    assert {"model.keras", "metrics.json"} <= set(os.listdir(out))
    assert json.loads((out / "metrics.json").read_text())["backbone"] == "resnet20"
