"""The recipes, run as a user runs them: offline, they fall back or refuse as promised."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kzoo.cli import EXIT_EXISTS, EXIT_UNAVAILABLE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_IDX = os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist")
ARTIFACTS = {"model.keras", "history.csv", "curves.png", "confusion.png", "metrics.json"}


def run_recipe(name, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "recipes", name), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.mark.slow
def test_mnist_quick_falls_back_to_digits_offline_and_writes_its_files(tmp_path):
    out = tmp_path / "run"
    result = run_recipe("mnist_lenet.py", "--quick", "--offline", "--data-dir", str(tmp_path / "tfds"),
                        "--output", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == ""  # TensorFlow's start-up lines are held back (--verbose shows them).
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


@pytest.mark.slow
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
    args = Namespace(dataset="digits", data_dir=None, offline=True, seed=0, mnist_idx=None)
    _, train, val, test = mnist.load_mnist_or_digits(args, "test", train_batch=2000, test_batch=2000)
    parts = [{image.tobytes() for image in np.asarray(next(iter(d))[0])} for d in (train, val, test)]
    assert [len(part) for part in parts] == [1293, 144, 360]  # The digits' images are all distinct.
    assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]


@pytest.mark.slow
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


@pytest.mark.slow
def test_mnist_with_dataset_mnist_refuses_the_fallback_in_flags(tmp_path):
    result = run_recipe("mnist_lenet.py", "--dataset", "mnist", "--offline",
                        "--data-dir", str(tmp_path), "--output", str(tmp_path / "run"))
    assert result.returncode == EXIT_UNAVAILABLE
    assert "--dataset mnist: MNIST is not prepared in" in result.stderr
    assert all(flag in result.stderr for flag in ("--data-dir DIR", "--mnist-idx DIR", "--dataset digits"))
    assert "data_dir=" not in result.stderr and not (tmp_path / "run").exists()


def test_mnist_reads_the_original_idx_files_and_holds_validation_out(tmp_path, monkeypatch):
    mnist_lenet = recipe_module("mnist_lenet", monkeypatch)
    metrics = mnist_lenet.main(["--mnist-idx", MNIST_IDX, "--epochs", "1", "--output", str(tmp_path / "run")])
    assert metrics["dataset"] == "mnist test split (7,200 / 800 / 2,000)"
    assert metrics["test_examples"] == 2000 and metrics["test_accuracy"] > 0.5
    with pytest.raises(SystemExit) as stop:
        mnist_lenet.main(["--mnist-idx", str(tmp_path), "--output", str(tmp_path / "other")])
    assert stop.value.code == EXIT_UNAVAILABLE


def test_quick_runs_go_to_their_own_folder_and_no_run_replaces_a_model_unasked(tmp_path, monkeypatch, capsys):
    mnist_lenet = recipe_module("mnist_lenet", monkeypatch)
    monkeypatch.chdir(tmp_path)
    mnist_lenet.main(["--quick", "--dataset", "digits"])
    quick = tmp_path / "saved_models" / "lenet5_mnist_quick"
    assert (quick / "model.keras").exists() and not (tmp_path / "saved_models" / "lenet5_mnist").exists()
    before = (quick / "model.keras").stat().st_mtime_ns
    with pytest.raises(SystemExit) as stop:
        mnist_lenet.main(["--quick", "--dataset", "digits"])
    assert stop.value.code == EXIT_EXISTS and "--overwrite" in capsys.readouterr().err
    assert (quick / "model.keras").stat().st_mtime_ns == before
    mnist_lenet.main(["--quick", "--dataset", "digits", "--overwrite"])
    assert (quick / "model.keras").stat().st_mtime_ns != before


def test_recipe_outputs_get_the_mode_a_normal_write_gives(tmp_path, monkeypatch):
    mnist_lenet = recipe_module("mnist_lenet", monkeypatch)
    old = os.umask(0o027)
    try:
        mnist_lenet.main(["--quick", "--dataset", "digits", "--output", str(tmp_path / "run")])
    finally:
        os.umask(old)
    files = [f for f in os.listdir(tmp_path / "run") if os.path.isfile(tmp_path / "run" / f)]
    assert ARTIFACTS | {"best.keras"} <= set(files)
    assert {f: oct((tmp_path / "run" / f).stat().st_mode & 0o777) for f in files} == {f: "0o640" for f in files}


@pytest.mark.slow
def test_cifar10_quick_runs_offline(tmp_path):
    out = tmp_path / "run"
    result = run_recipe("cifar10_resnet.py", "--quick", "--offline", "--data-dir", str(tmp_path / "tfds"),
                        "--output", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "CIFAR-10 cannot be had here" in result.stdout
    assert "after 1 epoch (" in result.stdout and "a smoke test, not a result" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "resnet20" and metrics["paper_test_accuracy"] == 0.9125
    assert ARTIFACTS <= set(os.listdir(out))


@pytest.mark.slow
def test_cifar10_full_run_offline_stops_with_the_reason_in_flags(tmp_path):
    result = run_recipe("cifar10_resnet.py", "--offline", "--data-dir", str(tmp_path), "--output", str(tmp_path / "o"))
    assert result.returncode == EXIT_UNAVAILABLE
    assert "CIFAR-10 is not prepared in" in result.stderr and "--data-dir DIR" in result.stderr
    assert "--quick" in result.stderr and "data_dir=" not in result.stderr


@pytest.mark.slow
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


@pytest.mark.slow
def test_transfer_learning_quick_exports_int8_and_leaves_a_small_footprint(tmp_path):
    out = tmp_path / "run"
    result = run_recipe("transfer_learning.py", "--quick", "--export", "int8", "--output", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "a smoke test, not a result" in result.stdout
    assert ARTIFACTS - {"history.csv"} <= set(os.listdir(out))
    assert {"head", "fine_tune"} <= set(os.listdir(out))  # Each phase's checkpoints and logs.
    assert not any(name.endswith(".weights.h5") or name == "quick_images" for name in os.listdir(out))
    footprint = sum(os.path.getsize(os.path.join(folder, f)) for folder, _, files in os.walk(out) for f in files)
    assert footprint < 20 * 2**20, f"{footprint / 2**20:.0f} MB"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backbone"] == "resnet20" and metrics["mode"] == "top" and metrics["epochs_run"] == 2
    assert metrics["weights"] == "random (--quick)" and metrics["quick"] is True
    assert metrics["test_examples"] == 6  # 10% of each class's 20 images, none of them seen in training.
    assert metrics["tflite_agreement"] >= 0.9 and (out / metrics["tflite"]).exists()
    assert (out / metrics["tflite"].replace(".tflite", ".md")).exists()


def test_transfer_learning_without_imagenet_weights_says_where_to_put_the_file(tmp_path, monkeypatch, keras_home,
                                                                                capsys):
    import dataclasses

    from kzoo import weights

    transfer_learning = recipe_module("transfer_learning", monkeypatch)

    record = weights.get_record("resnet50")
    unreachable = dataclasses.replace(record.no_top, url="http://127.0.0.1:9/resnet50_notop.h5")
    monkeypatch.setitem(weights.RECORDS, ("resnet50", "imagenet"), dataclasses.replace(record, no_top=unreachable))
    images = transfer_learning.write_quick_images(str(tmp_path / "images"))
    with pytest.raises(SystemExit) as stop:
        transfer_learning.main(["--images", images, "--image-size", "32", "--output", str(tmp_path / "run")])
    message = capsys.readouterr().err
    assert stop.value.code == EXIT_UNAVAILABLE
    assert os.path.join(keras_home, "models", record.no_top.file_name) in message and "--weights PATH" in message


@pytest.mark.slow
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


def test_every_flag_two_recipes_share_has_one_definition_and_the_readme_table_is_current(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "recipes"))
    import _recipe

    taken = {}
    for name in _recipe.RECIPES:
        for action in __import__(name).build_parser()._actions:
            if action.option_strings and action.option_strings[0] != "-h":
                taken.setdefault(action.option_strings[0], []).append(name)
    shared = {flag for flag, recipes in taken.items() if len(recipes) > 1}
    assert shared <= set(_recipe.FLAGS), f"define {sorted(shared - set(_recipe.FLAGS))} once, in recipes/_recipe.py"
    readme = open(os.path.join(ROOT, "README.md")).read()
    start = readme.index("<!-- recipe-flags:start -->") + len("<!-- recipe-flags:start -->")
    assert readme[start:readme.index("<!-- recipe-flags:end -->")].strip() == _recipe.flags_table(), (
        "README's recipe flags table is stale: regenerate it with `python recipes/_recipe.py`.")


@pytest.mark.slow
def test_anomaly_detection_quick_finds_the_planted_defects_and_exports_faithfully(tmp_path):
    out = tmp_path / "run"
    result = run_recipe("anomaly_detection.py", "--quick", "--export", "float32", "--output", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["image_auroc"] >= 0.9 and metrics["pixel_auroc"] >= 0.9 and metrics["quick"]
    assert metrics["threshold_images"] == 8 and metrics["samples"] == 8  # The halves: threshold, then test.
    assert max(metrics["export"]["max_abs_diff"].values()) <= 1e-3
    assert {"detector.keras", "metrics.json", "heatmaps.png", "roc.png", "detector_float32.tflite"} <= set(
        os.listdir(out))
    refused = run_recipe("anomaly_detection.py", "--quick", "--output", str(out))
    assert refused.returncode == EXIT_EXISTS and "--overwrite" in refused.stderr
    missing = run_recipe("anomaly_detection.py", "--data-dir", str(tmp_path / "nothing"), "--output", str(tmp_path / "x"))
    assert missing.returncode == 3 and "--data-dir" in missing.stderr and "train/good" in missing.stderr


@pytest.mark.slow
def test_adversarial_mnist_quick_trains_both_models_attacks_them_and_exports(tmp_path):
    out = tmp_path / "run"
    result = run_recipe("adversarial_mnist.py", "--quick", "--offline", "--data-dir", str(tmp_path / "tfds"),
                        "--export", "int8", "--output", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "standard pgd-5" in result.stdout and "a smoke test, not a result" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epsilons"] == [0.0, 0.1, 0.2, 0.3] and metrics["samples"] == 200
    for row in metrics["models"].values():
        assert row["pgd"][0] == row["fgsm"][0] and all(p <= f for p, f in zip(row["pgd"], row["fgsm"]))
        assert 0.0 <= row["tflite_int8"]["pgd_eps_0.3"] <= row["tflite_int8"]["clean"] <= 1.0
    assert {"robustness.png", "examples.png", "curves_standard.png", "curves_adversarial.png",
            "standard_int8.tflite", "adversarial_int8.tflite"} <= set(os.listdir(out))
    refused = run_recipe("adversarial_mnist.py", "--eps", "-0.1", "--output", str(tmp_path / "x"))
    assert refused.returncode == 2 and "--eps -0.1" in refused.stderr


@pytest.mark.slow
def test_segment_pets_quick_trains_on_digit_canvases_and_exports_a_verified_int8_file(tmp_path):
    out = tmp_path / "run"
    result = run_recipe("segment_pets.py", "--quick", "--export", "int8", "--output", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert {"model.keras", "metrics.json", "curves.png", "segmentation.png", "checkpoints"} <= set(os.listdir(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backbone"] == "resnet20" and metrics["head"] == "unet" and metrics["epochs"] == 2
    assert len(metrics["iou_per_class"]) == 11 and metrics["num_images"] == 24
    assert 0.0 <= metrics["mean_iou"] <= 1.0 and metrics["export"]["mode"] == "int8"
    assert (out / f"{metrics['model']}_int8.tflite").exists() and metrics["export"]["agreement"] > 0.5


def test_segment_pets_offline_without_the_dataset_says_what_to_do_in_flags(tmp_path, monkeypatch, capsys):
    segment_pets = recipe_module("segment_pets", monkeypatch)
    with pytest.raises(SystemExit) as stop:
        segment_pets.main(["--offline", "--data-dir", str(tmp_path / "tfds"), "--output", str(tmp_path / "run")])
    assert stop.value.code == EXIT_UNAVAILABLE
    message = capsys.readouterr().err
    assert "oxford_iiit_pet is not prepared in" in message and "--images/--masks" in message and "--quick" in message
    with pytest.raises(SystemExit) as stop:
        segment_pets.main(["--images", str(tmp_path), "--output", str(tmp_path / "run")])
    assert stop.value.code == 2 and "--images needs --masks DIR and --num-classes N" in capsys.readouterr().err
