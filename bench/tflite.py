"""TFLite export: size and latency of every mode against float32, and the accuracy targets on real MNIST.

Part 1, for lenet5, resnet20 and resnet50 (random weights: size and speed do
not depend on them): one JSON line per model and mode with the file size and
the median LiteRT latency at batch 1, and both as ratios to float32 in the
same run.

Part 2, on the real MNIST test split in `../shared/data/mnist` (first 8,000
images to train, last 2,000 to measure), the chain of
recipes/compress_and_export.py: one JSON line per exported file, then one
line with the targets (int8/edgetpu size <= 0.30x float32, agreement >= 99%,
accuracy drop <= 0.5 points; pruned to 80%: drop <= 1 point, gzip <= 0.35x;
float16 size <= 0.52x, max abs difference <= 1e-2).

    python bench/tflite.py [--models lenet5 resnet20 resnet50] [--skip-accuracy]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kzoo  # noqa: E402
from kzoo import export  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST = os.path.join(ROOT, "..", "shared", "data", "mnist")
INPUTS = {"lenet5": (28, 28, 1), "resnet20": (32, 32, 3), "resnet50": (224, 224, 3)}


def latency_ms(path, image, runs):
    model = export.TFLiteModel(path)
    for _ in range(3):
        model.run_one(image)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.run_one(image)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def size_and_latency(name, folder, runs):
    shape = INPUTS[name]
    keras.utils.set_random_seed(0)
    model = kzoo.get_model(name, input_shape=shape, num_classes=10)
    rng = np.random.RandomState(0)
    calibration = [rng.rand(8, *shape).astype("float32") for _ in range(4)]
    image = rng.rand(*shape).astype("float32")
    reference = {}
    for mode in export.MODES:
        path = os.path.join(folder, f"{name}_{mode}.tflite")
        start = time.perf_counter()
        try:
            report = export.to_tflite(model, path, mode=mode, representative_data=calibration, overwrite=True)
        except export.ExportError as error:  # A refused file is a result too.
            print(json.dumps({"bench": "tflite_latency", "model": name, "mode": mode,
                              "refused": str(error).splitlines()[0]}), flush=True)
            continue
        convert_s = time.perf_counter() - start
        latency = latency_ms(path, image, runs)
        reference = reference or {"size": report["size_bytes"], "latency": latency}
        print(json.dumps({
            "bench": "tflite_latency", "model": name, "input": list(shape), "mode": mode,
            "size_bytes": report["size_bytes"], "size_vs_float32": round(report["size_bytes"] / reference["size"], 3),
            "gzip_bytes": report["gzip_bytes"], "latency_ms_median": round(latency, 3),
            "latency_vs_float32": round(latency / reference["latency"], 3), "convert_s": round(convert_s, 1),
            "threads": os.cpu_count(), "batch": 1,
        }), flush=True)
    keras.backend.clear_session()


def accuracy_targets(folder):
    sys.path.insert(0, os.path.join(ROOT, "recipes"))
    import compress_and_export as recipe

    args = recipe.build_parser().parse_args(["--mnist-idx", MNIST, "--output", folder])
    keras.utils.set_random_seed(args.seed)
    model = recipe.dense_model(args)
    _, train, test = recipe.load_data(args, (28, 28, 1))
    rows = recipe.compress_and_export(model, train, test, folder, epochs=args.epochs,
                                      prune_epochs=args.prune_epochs, qat_epochs=args.qat_epochs,
                                      sparsity=args.sparsity, seed=args.seed)
    for row in rows:
        print(json.dumps({"bench": "tflite_accuracy", "data": "mnist test split 8000/2000", **row}), flush=True)
    by = {(row["mode"], row["model"]): row for row in rows}
    dense, pruned = by[("float32", "dense")], by[("float32", "pruned")]
    float16 = by[("float16", "pruned")]
    checks = {
        "int8_ptq_size_vs_float32": (by[("int8", "dense")]["size_vs_float32"], "<=", 0.30),
        "int8_ptq_agreement": (by[("int8", "dense")]["agreement_with_dense_float"], ">=", 0.99),
        "int8_ptq_accuracy_drop_points": (round(100 * (dense["accuracy"] - by[("int8", "dense")]["accuracy"]), 2),
                                          "<=", 0.5),
        "pqat_int8_size_vs_float32": (by[("int8", "pruned+PQAT")]["size_vs_float32"], "<=", 0.30),
        "pqat_int8_agreement_with_its_float": (by[("int8", "pruned+PQAT")]["agreement_with_source"], ">=", 0.99),
        "edgetpu_size_vs_float32": (by[("edgetpu", "pruned+PQAT")]["size_vs_float32"], "<=", 0.30),
        "edgetpu_agreement_with_its_float": (by[("edgetpu", "pruned+PQAT")]["agreement_with_source"], ">=", 0.99),
        "edgetpu_accuracy_drop_vs_dense_points": (
            round(100 * (dense["accuracy"] - by[("edgetpu", "pruned+PQAT")]["accuracy"]), 2), "<=", 0.5),
        "pruned_accuracy_drop_points": (round(100 * (dense["accuracy"] - pruned["accuracy"]), 2), "<=", 1.0),
        "pruned_weights_gzip_vs_dense": (round(pruned["weights_gzip_kb"] / dense["weights_gzip_kb"], 3), "<=", 0.35),
        "float16_size_vs_float32": (float16["size_vs_float32"], "<=", 0.52),
        "float16_max_abs_diff": (float16["max_abs_diff_vs_source"], "<=", 1e-2),
    }
    summary = {name: {"value": value, "target": f"{op} {target}",
                      "met": value <= target if op == "<=" else value >= target}
               for name, (value, op, target) in checks.items()}
    print(json.dumps({"bench": "tflite_targets", **summary}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(INPUTS), choices=list(INPUTS))
    parser.add_argument("--runs", type=int, default=50, help="timed runs per file")
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            size_and_latency(name, folder, args.runs)
        if not args.skip_accuracy:
            if not os.path.isdir(MNIST):
                print(json.dumps({"bench": "tflite_accuracy", "skipped": f"{MNIST} is not here"}), flush=True)
            else:
                accuracy_targets(os.path.join(folder, "mnist"))


if __name__ == "__main__":
    main()
