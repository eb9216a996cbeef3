"""kzoo.export: every TFLite mode converts, runs in LiteRT and is checked; errors; atomic writes; CLI."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_close

import kzoo
from kzoo import cli, export


@pytest.fixture(scope="module")
def exports(trained_lenet, digits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tflite")
    return {mode: export.to_tflite(trained_lenet, str(folder / f"lenet5_{mode}.tflite"), mode=mode,
                                   representative_data=digits[0], verify_data=digits[1])
            for mode in export.MODES}


@pytest.mark.parametrize("mode", export.MODES)
def test_each_mode_runs_in_litert_and_agrees_with_keras(exports, mode):
    report = exports[mode]
    assert os.path.getsize(report["path"]) == report["size_bytes"]
    assert report["samples"] == 360 and report["agreement"] >= 0.97
    assert abs(report["accuracy"] - report["keras_accuracy"]) <= 0.02
    assert report["latency_ms_median"] > 0 and report["gzip_bytes"] < report["size_bytes"]
    card = json.load(open(report["path"].replace(".tflite", ".json")))
    assert card["mode"] == mode and card["agreement"] == report["agreement"]
    assert open(report["path"].replace(".tflite", ".md")).read().startswith(f"# lenet5_{mode}.tflite")


def test_modes_shrink_the_file_as_promised(exports):
    float32 = exports["float32"]["size_bytes"]
    assert exports["float16"]["size_bytes"] <= 0.55 * float32
    for mode in ("dynamic", "int8", "edgetpu"):
        assert exports[mode]["size_bytes"] <= 0.32 * float32
    assert exports["float16"]["max_abs_diff"] <= 1e-2 and exports["float32"]["max_abs_diff"] <= 1e-5


def test_edgetpu_has_int8_io_batch_one_and_no_float_operator(exports):
    report = exports["edgetpu"]
    assert report["input_dtype"] == "int8" and report["output_dtype"] == "int8"
    assert report["float_operators"] == []
    model = export.TFLiteModel(report["path"])
    assert list(model.input["shape_signature"]) == [1, 28, 28, 1]
    assert "CONV_2D" in exports["float32"]["float_operators"]  # The check does see float ops.
    assert exports["int8"]["input_dtype"] == "float32"  # int8 keeps float I/O for convenience.


def test_edgetpu_refuses_a_model_that_keeps_float_operators(digits, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "float_operators", lambda flatbuffer: ["SOFTMAX"])
    path = tmp_path / "m.tflite"
    with pytest.raises(export.ExportError, match=r"float operators \['SOFTMAX'\]"):
        export.to_tflite(kzoo.lenet5(), str(path), mode="edgetpu", representative_data=digits[0])
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(mode="int4"), ValueError, "mode='int4' is not one of"),
    (dict(mode="int8"), ValueError, "needs representative_data"),
    (dict(mode="int8", representative_data=tf.data.Dataset.from_tensor_slices(np.zeros((0, 1, 28, 28, 1), "float32"))),
     ValueError, "yielded no images"),
    (dict(mode="int8", representative_data=[np.zeros((2, 32, 32, 3), "float32")]), ValueError,
     r"has 3-channel images \(32, 32, 3\); the model takes 1-channel images \(28, 28, 1\)"),
    (dict(mode="float32", verify_data=[(np.zeros((2, 32, 32, 1), "float32"), np.zeros(2))]), ValueError,
     r"shape \(32, 32, 1\)"),
])
def test_bad_export_arguments_get_clear_errors_and_leave_no_file(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        export.to_tflite(kzoo.lenet5(), str(tmp_path / "m.tflite"), **kwargs)
    assert os.listdir(tmp_path) == []


def test_an_existing_file_is_kept_unless_overwrite(tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export.to_tflite(kzoo.lenet5(), str(path))
    assert path.read_bytes() == b"mine"
    export.to_tflite(kzoo.lenet5(), str(path), overwrite=True)
    assert path.read_bytes()[4:8] == b"TFL3"


def test_an_interrupted_export_leaves_no_partial_file(tmp_path, monkeypatch, digits):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "verify", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export.to_tflite(kzoo.lenet5(), str(tmp_path / "m.tflite"), verify_data=digits[1])
    assert os.listdir(tmp_path) == []


def test_a_low_agreement_is_not_kept(trained_lenet, digits, tmp_path):
    shuffled = digits[1].map(lambda x, y: (tf.reverse(x, axis=[1]), y))  # Any data: compare, do not keep.
    with pytest.raises(export.ExportError, match="below min_agreement=101.00%"):
        export.to_tflite(trained_lenet, str(tmp_path / "m.tflite"), verify_data=shuffled, min_agreement=1.01)
    assert os.listdir(tmp_path) == []


def test_to_saved_model_serves_the_same_outputs(trained_lenet, tmp_path):
    path = export.to_saved_model(trained_lenet, str(tmp_path / "saved"))
    loaded = tf.saved_model.load(path)
    x = np.random.RandomState(0).rand(3, 28, 28, 1).astype("float32")
    assert_close(loaded.serve(x), trained_lenet(x))
    with pytest.raises(FileExistsError):
        export.to_saved_model(trained_lenet, path)


def test_cli_export_then_verify(trained_lenet, tmp_path, capsys):
    model_path, out = str(tmp_path / "lenet5.keras"), str(tmp_path / "lenet5_int8.tflite")
    trained_lenet.save(model_path)
    assert cli.main(["export", model_path, "--mode", "int8", "--calibration", "digits", "--verify", "digits",
                     "--out", out]) == 0
    assert "agreement" in capsys.readouterr().out and os.path.exists(out)
    assert cli.main(["verify", out, "--data", "digits", "--reference", model_path, "--max-samples", "50"]) == 0
    printed = capsys.readouterr().out
    assert "samples              50" in printed and "accuracy" in printed
    assert cli.main(["export", model_path, "--out", out]) == cli.EXIT_EXISTS  # Kept, clear message.
    assert "--overwrite" in capsys.readouterr().err


def test_calibration_and_verify_data_follow_the_image_contract(exports, digits):
    images, labels = next(iter(digits[1]))
    pixels = np.round(np.asarray(images) * 255).astype("uint8")
    as_uint8 = export._images([(pixels, labels)], (28, 28, 1), 50, "representative_data")
    np.testing.assert_array_equal(as_uint8, export._images([(pixels / 255.0, labels)], (28, 28, 1), 50, "x"))
    assert as_uint8.dtype == np.float32 and as_uint8.max() == 1.0  # uint8 calibration is scaled, not fed 0-255.
    with pytest.raises(ValueError, match=r"representative_data has float values from 0 to 255, outside \[0, 1\]"):
        export._images([(pixels.astype("float32"), labels)], (28, 28, 1), 50, "representative_data")
    path = exports["float32"]["path"]
    assert export.verify(path, (pixels, np.asarray(labels)))["accuracy"] == \
        export.verify(path, [(pixels / 255.0, labels)])["accuracy"]
    with pytest.raises(ValueError, match=r"verify data \(for .*\) has 3-channel images .* the model takes 1-channel images"):
        export.verify(path, [(np.repeat(pixels, 3, axis=-1), labels)])
    with pytest.raises(ValueError, match=r"verify data's labels has a negative class id"):
        export.verify(path, [(pixels, -np.ones(len(pixels)))])


def test_cli_export_says_when_the_data_does_not_fit_the_model(tmp_path, capsys):
    path = str(tmp_path / "rgb.keras")
    kzoo.get_model("resnet20").save(path)
    code = cli.main(["export", path, "--mode", "int8", "--calibration", "digits", "--out", str(tmp_path / "m.tflite")])
    assert code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--calibration has 1-channel images" in err and "representative_data" not in err
    assert not (tmp_path / "m.tflite").exists()


def test_exported_files_get_the_mode_a_normal_write_gives(trained_lenet, digits, tmp_path):
    old = os.umask(0o027)
    try:
        export.to_tflite(trained_lenet, str(tmp_path / "m.tflite"), verify_data=digits[1])
        export.to_saved_model(trained_lenet, str(tmp_path / "saved"))
    finally:
        os.umask(old)
    modes = {name: oct((tmp_path / name).stat().st_mode & 0o777) for name in os.listdir(tmp_path)}
    assert modes == {"m.tflite": "0o640", "m.json": "0o640", "m.md": "0o640", "saved": "0o750"}
