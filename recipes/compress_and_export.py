"""Train (or load) a model, prune it to 80%, fine-tune it quantization-aware, export verified .tflite files.

    python recipes/compress_and_export.py                      # LeNet-5 on MNIST
    python recipes/compress_and_export.py --mnist-idx DIR      # MNIST from its original idx files:
                                                               # first 8,000 train, last 2,000 test
    python recipes/compress_and_export.py --model resnet20 --quick

It prints one table (mode, size, gzip size, sparsity, accuracy, agreement
with the dense float model, latency) and writes it as `report.json` with the
`.tflite` files and their model cards in `--output`. Offline and without
MNIST, it says so in one line and uses the embedded scikit-learn digits.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import kzoo  # noqa: E402
from kzoo import compress, data, export, training  # noqa: E402
from kzoo._io import save_json  # noqa: E402
from _mnist import MNIST_TEST_FILES, load_mnist_or_digits, read_mnist_test_split  # noqa: E402  (recipes/ is on sys.path)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5", help="any registry name (kzoo list)")
    parser.add_argument("--load", default=None, help="start from this trained .keras model instead of training")
    parser.add_argument("--dataset", choices=["auto", "mnist", "digits"], default="auto")
    parser.add_argument("--mnist-idx", default=None,
                        help=f"folder with {MNIST_TEST_FILES[0]} and its labels: first 8,000 train, last 2,000 test")
    parser.add_argument("--data-dir", default=None, help="TFDS data folder")
    parser.add_argument("--offline", action="store_true", help="never download; use what data_dir holds")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs of the dense model")
    parser.add_argument("--prune-epochs", type=int, default=6)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--output", default=None, help="default saved_models/compress_<model>")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="one epoch per stage: a smoke test")
    return parser.parse_args(argv)


def load_data(args, input_shape):
    """(dataset name, train, test) at the model's input shape."""
    size, channels = input_shape[:2], input_shape[-1]

    def fit_channels(dataset):
        return dataset.map(lambda x, y: (tf.image.grayscale_to_rgb(x), y)) if channels == 3 else dataset

    if args.mnist_idx:
        (train_images, train_labels), (test_images, test_labels) = read_mnist_test_split(args.mnist_idx)
        common = dict(image_size=size, seed=args.seed)
        train = data.from_arrays(train_images, train_labels, batch_size=64, augment="mnist", **common)
        test = data.from_arrays(test_images, test_labels, batch_size=500, shuffle=False, **common)
        return "mnist test split (8,000 / 2,000)", fit_channels(train), fit_channels(test)
    dataset, train, _, test = load_mnist_or_digits(args, "compress_and_export", train_batch=64, test_batch=500,
                                                   image_size=size)
    return dataset, fit_channels(train), fit_channels(test)


def dense_model(args):
    if args.load:
        return keras.models.load_model(args.load)
    entry = kzoo.models._registry.model_entry(args.model)
    shape = (28, 28, 1) if entry.family.name == "lenet" else (32, 32, 3)
    return kzoo.get_model(args.model, input_shape=shape, num_classes=10)


def compress_and_export(model, train, test, output, *, epochs, prune_epochs, qat_epochs, sparsity, seed=0):
    """The whole chain; returns the table rows (one dict per exported file)."""
    if epochs:
        training.fit(model, train, epochs=epochs, seed=seed, verbose=0)
    pruned = compress.prune(model, train, target_sparsity=sparsity, epochs=prune_epochs)
    pqat = compress.quantize_aware(pruned, train, epochs=qat_epochs, preserve_sparsity=True)
    calibration = train.take(8)
    plan = [("float32", "dense", model), ("int8", "dense", model), ("float32", "pruned", pruned), ("float16", "pruned", pruned),
            ("int8", "pruned+PQAT", pqat), ("edgetpu", "pruned+PQAT", pqat)]
    rows, float32_size = [], None
    weights = {"dense": compress.sparsity_report(model), "pruned": compress.sparsity_report(pruned)}
    for mode, stage, source in plan:
        path = os.path.join(output, f"{model.name}_{stage.replace('+', '_').lower()}_{mode}.tflite")
        exported = export.to_tflite(source, path, mode=mode, representative_data=calibration,
                                    verify_data=test, overwrite=True)
        against_dense = export.verify(path, test, reference=model)
        float32_size = float32_size or exported["size_bytes"]
        rows.append({
            "mode": mode, "model": stage, "size_kb": round(exported["size_bytes"] / 1024, 1),
            "size_vs_float32": round(exported["size_bytes"] / float32_size, 3),
            "gzip_kb": round(exported["gzip_bytes"] / 1024, 1),
            "sparsity": weights[stage.split("+")[0]]["sparsity"],
            "weights_gzip_kb": round(weights[stage.split("+")[0]]["gzip_bytes"] / 1024, 1),
            "accuracy": exported["accuracy"], "agreement_with_dense_float": against_dense["agreement"],
            "agreement_with_source": exported["agreement"], "max_abs_diff_vs_source": exported["max_abs_diff"],
            "latency_ms": exported["latency_ms_median"], "file": os.path.basename(path),
        })
    return rows


def print_table(rows):
    header = ["mode", "model", "size_kb", "size_vs_float32", "gzip_kb", "sparsity", "accuracy",
              "agreement_with_dense_float", "agreement_with_source", "latency_ms"]
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in header]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(str(row[h]).ljust(w) for h, w in zip(header, widths)))


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    model = dense_model(args)
    output = args.output or os.path.join("saved_models", f"compress_{model.name}")
    dataset, train, test = load_data(args, tuple(model.inputs[0].shape[1:]))
    if args.quick:
        args.epochs, args.prune_epochs, args.qat_epochs = min(args.epochs, 1), 1, 1
    rows = compress_and_export(model, train, test, output, epochs=0 if args.load else args.epochs,
                               prune_epochs=args.prune_epochs, qat_epochs=args.qat_epochs,
                               sparsity=args.sparsity, seed=args.seed)
    save_json({"model": model.name, "dataset": dataset, "rows": rows}, os.path.join(output, "report.json"))
    print(f"\n{model.name} on {dataset} ({output}):")
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
