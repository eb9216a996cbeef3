"""TFLite export for mobile CPUs, the GPU delegate and the Edge TPU, verified in LiteRT before it is kept.

`to_tflite` converts with TensorFlow's TFLite converter, writes the file
atomically, runs it in the LiteRT interpreter against the Keras model, and
writes a model card (`<name>.json`, `<name>.md`) beside it.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from kzoo import _backend
from kzoo._io import atomic_write, save_json, usual_mode
from kzoo.data import checks

tf = _backend.tensorflow("kzoo.export (the TFLite converter)", backend=True)

MODES = ("float32", "dynamic", "float16", "int8", "edgetpu")
MODE_NOTES = {
    "float32": "float32 weights and activations (reference)",
    "dynamic": "int8 weights, float activations (dynamic-range quantization)",
    "float16": "float16 weights, for the TFLite GPU delegate",
    "int8": "int8 weights and activations, float input and output",
    "edgetpu": "int8 weights, activations, input and output; batch 1; integer ops only (edgetpu_compiler input)",
}


class ExportError(RuntimeError):
    """The converted model is not what the mode promises, or fails its check against the Keras model."""


def to_tflite(model, path: str, *, mode: str = "float32", representative_data=None, verify_data=None,
              overwrite: bool = False, calibration_samples: int = 200, min_agreement: float | None = None,
              num_threads: int | None = None) -> dict:
    """Converts a Keras model to `.tflite`, checks it in LiteRT, keeps it, and writes its model card.

    Args:
        model: A Keras 3 model, or a tf_keras model (e.g. from
            `kzoo.compress.quantize_aware`).
        path: Output `.tflite` file.
        mode: One of "float32", "dynamic", "float16", "int8", "edgetpu".
        representative_data: Calibration images for "int8" and "edgetpu": a
            dataset (or iterable) of image batches or `(images, labels)`
            batches, or an image array; images as the model takes them (in
            [0, 1], or uint8 0-255: see `kzoo.data.checks`). Fed to the
            converter one image at a time. A quantization-aware model needs none.
        verify_data: `(images, labels)` batches (or arrays) to compare the
            `.tflite` with the Keras model on (agreement, accuracies, max difference).
        overwrite: Replace an existing file (otherwise it is kept and this raises).
        calibration_samples: Images taken from `representative_data`.
        min_agreement: If set, the file is kept only when its top-1
            agreement with the Keras model on `verify_data` (per pixel for a
            segmentation model) reaches this.
        num_threads: Interpreter threads for the latency figure (default: all cores).

    Returns:
        The report (also written as the model card): mode, sizes, gzip size,
        input/output types, float operators, and with `verify_data` the
        agreement, max abs difference, both accuracies and median latency.

    Raises:
        ValueError: Bad mode, missing or empty calibration data, or data whose
            image shape, values or labels do not fit the model (as `kzoo.data.checks` says).
        FileExistsError: `path` exists and `overwrite` is False.
        ExportError: "edgetpu" output still has float operators, or the
            agreement is below `min_agreement`. Nothing is written then.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}.")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it, or choose another path.")
    input_shape = tuple(model.inputs[0].shape[1:])
    quantization_aware = is_quantization_aware(model)
    samples = None
    if mode in ("int8", "edgetpu") and not (quantization_aware and representative_data is None):
        if representative_data is None:
            raise ValueError(
                f'mode="{mode}" quantizes activations and needs representative_data= (a few hundred training '
                "images), or a quantization-aware model from kzoo.compress.quantize_aware."
            )
        samples = _images(representative_data, input_shape, calibration_samples, "representative_data")
    converter = _converter(model, input_shape, batch_one=mode == "edgetpu")
    _configure(converter, mode, samples)
    flatbuffer = _quietly(converter.convert)
    float_ops = float_operators(flatbuffer)
    if mode == "edgetpu" and float_ops:
        raise ExportError(
            f"The edgetpu model still has float operators {sorted(set(float_ops))}; the Edge TPU compiler "
            "would leave them on the CPU. Replace those layers or export with mode=\"int8\"."
        )
    report = {"mode": mode, "note": MODE_NOTES[mode], "source": model.name, "input_shape": list(input_shape),
              "quantization_aware": quantization_aware, "size_bytes": len(flatbuffer),
              "gzip_bytes": len(gzip.compress(flatbuffer, compresslevel=9, mtime=0)), "float_operators": float_ops}

    def write_and_check(temporary):
        with open(temporary, "wb") as f:
            f.write(flatbuffer)
        written = TFLiteModel(temporary, num_threads=1)
        report.update(input_dtype=np.dtype(written.input["dtype"]).name,
                      output_dtype=np.dtype(written.output["dtype"]).name)
        if verify_data is not None:
            report.update(verify(temporary, verify_data, reference=model, num_threads=num_threads))
            if min_agreement is not None and report["agreement"] < min_agreement:
                unit = "pixels of " if len(model.outputs[0].shape) == 4 else ""
                raise ExportError(
                    f"{mode} model agrees with the Keras model on {report['agreement']:.2%} of "
                    f"{unit}{report['samples']} images, below min_agreement={min_agreement:.2%}; not kept."
                )

    atomic_write(path, write_and_check, ".tflite")
    report["path"] = path
    write_model_card(report, path)
    return report


def is_quantization_aware(model) -> bool:
    """True for a TFMOT quantization-aware model (its fake-quant ranges make calibration unnecessary)."""
    return any(type(layer).__name__ in ("QuantizeWrapper", "QuantizeWrapperV2", "QuantizeLayer")
               for layer in getattr(model, "layers", ()))


def _converter(model, input_shape, batch_one: bool):
    if batch_one:  # The converter takes the batch size from the model's input: fix it at 1.
        if is_keras3(model):
            import keras

            images = keras.Input(batch_shape=(1, *input_shape), dtype=model.inputs[0].dtype)
            model = keras.Model(images, model(images), name=model.name)
        else:
            import tf_keras

            images = tf_keras.Input(batch_size=1, shape=input_shape, dtype=model.inputs[0].dtype)
            model = tf_keras.Model(images, model(images), name=model.name)
    return tf.lite.TFLiteConverter.from_keras_model(model)


def is_keras3(model) -> bool:
    return type(model).__module__.startswith("keras.")


def _configure(converter, mode, samples):
    if mode == "float32":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if samples is not None:
        converter.representative_dataset = lambda: ([sample[None]] for sample in samples)
    if mode in ("int8", "edgetpu") and samples is not None:
        # Integer-only kernels; a QAT model (no samples) is already integer where
        # it was quantized, and asking for this would demand calibration data.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if mode == "edgetpu":
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8


def _images(data, input_shape, limit, argument):
    """Up to `limit` single images from batches (or `(images, labels)` batches, or an array), checked."""
    images = []
    for batch, _ in checks.batches(data, argument, masks="auto"):  # Labels (or masks) are not used.
        checks.fits_model(batch.shape[1:], input_shape, argument)
        images.extend(batch[: limit - len(images)])
        if len(images) >= limit:
            break
    if not images:
        raise ValueError(f"{argument} yielded no images: give it at least one batch (a few hundred images is typical).")
    return np.stack(images)


def _quietly(convert):
    """Runs the converter with its prints (concrete-function signatures, MLIR logs) silenced.

    The converter and TensorFlow's C++ side write straight to file descriptors
    1 and 2, so both are redirected; on failure the captured text is shown.
    """
    with tempfile.TemporaryFile(mode="w+b") as captured:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(captured.fileno(), 1)
            os.dup2(captured.fileno(), 2)
            # Python-level prints too, where sys.stdout is not file descriptor 1 (notebooks).
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                return convert()
        except Exception as error:
            captured.seek(0)
            tail = captured.read()[-3000:].decode(errors="replace")
            raise ExportError(f"The TFLite converter failed: {error}\n{tail}") from error
        finally:
            sys.stdout.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def float_operators(flatbuffer: bytes) -> list[str]:
    """Names of the operators that read or write float tensors (what the Edge TPU cannot run)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    floats = (schema.TensorType.FLOAT32, schema.TensorType.FLOAT16)
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    found = []
    for subgraph in model.subgraphs:
        for operator in subgraph.operators:
            code = model.operatorCodes[operator.opcodeIndex]
            tensors = [i for i in [*operator.inputs, *operator.outputs] if i >= 0]
            if any(subgraph.tensors[i].type in floats for i in tensors):
                found.append(names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM"))
    return found


def _interpreter(path, num_threads=None):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=num_threads or os.cpu_count())
    interpreter.allocate_tensors()
    return interpreter


class TFLiteModel:
    """A `.tflite` file in the LiteRT interpreter, called like a model on float image batches.

    int8 inputs and outputs are quantized and dequantized with the file's own
    scale and zero point; the batch runs one image at a time (the Edge TPU
    batch is 1, and that is how a phone runs it).
    """

    def __init__(self, path: str, num_threads: int | None = None):
        self.path = path
        self.interpreter = _interpreter(path, num_threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self.input["shape"][1:])

    def run_one(self, image: np.ndarray) -> np.ndarray:
        value = image[None]
        scale, zero_point = self.input["quantization"]
        if self.input["dtype"] in (np.int8, np.uint8):
            info = np.iinfo(self.input["dtype"])
            value = np.clip(np.round(value / scale + zero_point), info.min, info.max)
        self.interpreter.set_tensor(self.input["index"], value.astype(self.input["dtype"]))
        self.interpreter.invoke()
        output = self.interpreter.get_tensor(self.output["index"])[0].astype(np.float32)
        scale, zero_point = self.output["quantization"]
        if self.output["dtype"] in (np.int8, np.uint8):
            output = (output - zero_point) * scale
        return output

    def __call__(self, images) -> np.ndarray:
        return np.stack([self.run_one(image) for image in np.asarray(images, np.float32)])

    def run_all(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Every output for one float image, by the output's name in the file (for models with several)."""
        self.run_one(image)
        outputs = {}
        for detail in self.interpreter.get_output_details():
            value = self.interpreter.get_tensor(detail["index"])[0].astype(np.float32)
            scale, zero_point = detail["quantization"]
            if detail["dtype"] in (np.int8, np.uint8):
                value = (value - zero_point) * scale
            outputs[detail["name"]] = value
        return outputs


def verify(path: str, data, *, reference=None, num_threads: int | None = None, max_samples: int | None = None) -> dict:
    """Runs a `.tflite` on `(images, labels)` batches, against a Keras model when given.

    Args:
        path: The `.tflite` file.
        data: Batched `(images, labels)` (int or one-hot labels), or a tuple
            of arrays; images as `kzoo.data.checks` takes them.
        reference: The Keras model it came from (Keras 3 or tf_keras).
        num_threads: Interpreter threads.
        max_samples: Stop after this many images.

    Returns:
        samples, accuracy, median and p90 latency (ms, batch 1), and with a
        reference: its accuracy, top-1 agreement and max abs output difference.
        For a segmentation model (per-pixel outputs; `data` of `(images,
        masks)`) the same per pixel: "agreement" is the share of pixels whose
        top class matches the Keras model's, "mean_iou_vs_keras" the mean IoU
        of the file's masks against the Keras model's, and with masks
        "mean_iou" / "keras_mean_iou" and "accuracy" / "keras_accuracy" (of
        the pixels), `ignore_class` pixels (the data's) left out.
    """
    tflite = TFLiteModel(path, num_threads)
    segmentation = len(tflite.output["shape"]) == 4
    ignore_class = getattr(data, "ignore_class", None)
    outputs, expected, labels, latencies = [], [], [], []
    for images, batch_labels in checks.batches(data, "verify data", masks=segmentation, ignore_class=ignore_class):
        checks.fits_model(images.shape[1:], tflite.input_shape, f"verify data (for {path})")
        if max_samples is not None:
            images = images[: max_samples - len(outputs)]
        for image in images:
            start = time.perf_counter()
            outputs.append(tflite.run_one(image))
            latencies.append((time.perf_counter() - start) * 1e3)
        if reference is not None:
            expected.append(np.asarray(reference(images, training=False)))
        if batch_labels is not None:
            labels.append(batch_labels[: len(images)])
        if max_samples is not None and len(outputs) >= max_samples:
            break
    if not outputs:
        raise ValueError("verify data yielded no images.")
    outputs = np.stack(outputs)
    predicted = outputs.argmax(-1)
    report = {"samples": len(outputs), "latency_ms_median": round(statistics.median(latencies), 4),
              "latency_ms_p90": round(float(np.percentile(latencies, 90)), 4),
              "num_threads": num_threads or os.cpu_count()}
    labels = np.concatenate(labels) if labels else None
    if segmentation:
        return {**report, **_segmentation_report(outputs, np.concatenate(expected) if expected else None, labels,
                                                 ignore_class)}
    if labels is not None:
        report["accuracy"] = round(float(np.mean(predicted == labels)), 4)
    if reference is not None:
        expected = np.concatenate(expected)
        report["agreement"] = round(float(np.mean(predicted == expected.argmax(-1))), 4)
        report["max_abs_diff"] = float(np.abs(outputs - expected).max())
        if labels is not None:
            report["keras_accuracy"] = round(float(np.mean(expected.argmax(-1) == labels)), 4)
    return report


def _segmentation_report(outputs, expected, masks, ignore_class) -> dict:
    """`verify`'s figures per pixel, with `kzoo.segment`'s IoU definitions."""
    from kzoo.segment.evaluation import confusion_matrix, scores

    num_classes = outputs.shape[-1]
    predicted = outputs.argmax(-1)
    report = {}
    if masks is not None:
        figures = scores(confusion_matrix(masks, predicted, num_classes, ignore_class))
        report.update(mean_iou=round(figures["mean_iou"], 4), accuracy=round(figures["pixel_accuracy"], 4))
    if expected is not None:
        reference = expected.argmax(-1)
        report.update(agreement=round(float(np.mean(predicted == reference)), 4),
                      mean_iou_vs_keras=round(scores(confusion_matrix(reference, predicted, num_classes))["mean_iou"], 4),
                      max_abs_diff=float(np.abs(outputs - expected).max()))
        if masks is not None:
            figures = scores(confusion_matrix(masks, reference, num_classes, ignore_class))
            report.update(keras_mean_iou=round(figures["mean_iou"], 4),
                          keras_accuracy=round(figures["pixel_accuracy"], 4))
    return report


def write_model_card(report: dict, path: str) -> tuple[str, str]:
    """Writes `<name>.json` and `<name>.md` beside the model file (atomically)."""
    stem = os.path.splitext(path)[0]
    save_json(report, stem + ".json")
    rows = "\n".join(f"| {key} | {value} |" for key, value in report.items() if key != "float_operators")
    floats = sorted(set(report.get("float_operators", []))) or "none"
    text = (f"# {os.path.basename(path)}\n\n{report['note']}.\n\n| field | value |\n|---|---|\n{rows}\n\n"
            f"Float operators: {floats}.\n\nWritten by kzoo.export.to_tflite; figures measured with the "
            "LiteRT interpreter (ai_edge_litert) on this machine.\n")

    def write(temporary):
        with open(temporary, "w") as f:
            f.write(text)

    atomic_write(stem + ".md", write, ".md")
    return stem + ".json", stem + ".md"


def to_saved_model(model, path: str, *, overwrite: bool = False) -> str:
    """Exports a TensorFlow SavedModel folder (for TF Serving or the converter), atomically.

    Args:
        model: A Keras 3 or tf_keras model.
        path: Output folder.
        overwrite: Replace an existing folder.

    Returns:
        The path.
    """
    import shutil

    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(dir=parent)
    try:
        if is_keras3(model):
            _quietly(lambda: model.export(temporary, format="tf_saved_model", verbose=False))
        else:
            tf.saved_model.save(model, temporary)
        os.chmod(temporary, usual_mode(folder=True))
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return path
