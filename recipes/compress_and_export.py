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

import os

import _recipe  # noqa: E402  first (recipes/ is on sys.path): it loads TensorFlow without its start-up lines

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import kzoo  # noqa: E402
from kzoo import compress, export, training  # noqa: E402
from kzoo._io import save_json  # noqa: E402
from _mnist import add_source_flags, load_mnist_idx, load_mnist_or_digits  # noqa: E402


RECIPE = "compress_and_export"


def build_parser():
    parser = _recipe.parser(__doc__, quick="1 epoch per stage, a smoke test, to its own folder")
    _recipe.add(parser, "--model", "lenet5")
    parser.add_argument("--load", default=None, metavar="MODEL.keras",
                        help="start from this trained .keras model instead of training one")
    add_source_flags(parser)
    _recipe.add(parser, "--epochs", 5, help="training epochs of the dense model")
    _recipe.add(parser, "--batch-size", 64)
    parser.add_argument("--prune-epochs", type=int, default=6, help="fine-tuning epochs while pruning")
    parser.add_argument("--qat-epochs", type=int, default=2, help="quantization-aware fine-tuning epochs")
    parser.add_argument("--sparsity", type=float, default=0.8, help="fraction of weights pruned to zero")
    return parser


def load_data(args, input_shape):
    """(dataset name, train, test) at the model's input shape."""
    size, channels = input_shape[:2], input_shape[-1]

    def fit_channels(dataset):
        return dataset.map(lambda x, y: (tf.image.grayscale_to_rgb(x), y)) if channels == 3 else dataset

    if args.mnist_idx:  # All 8,000 train: this recipe holds no validation split out.
        dataset, train, _, test = load_mnist_idx(args.mnist_idx, RECIPE, train_batch=args.batch_size,
                                                 test_batch=500, image_size=size, seed=args.seed, validation=False)
    else:
        dataset, train, _, test = load_mnist_or_digits(args, RECIPE, train_batch=args.batch_size, test_batch=500,
                                                       image_size=size)
    return dataset, fit_channels(train), fit_channels(test)


def dense_model(args):
    if args.load:
        return keras.models.load_model(args.load)
    entry = kzoo.models.model_entry(args.model)
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
    args = build_parser().parse_args(argv)
    if args.load and not os.path.isfile(args.load):
        _recipe.fail(RECIPE, f"--load {args.load}: no such file. Give a model saved with model.save('....keras'), "
                             "e.g. saved_models/lenet5_mnist/model.keras.", _recipe.EXIT_NOT_FOUND)
    keras.utils.set_random_seed(args.seed)
    model = dense_model(args)
    output = _recipe.output_folder(args, RECIPE, f"compress_{model.name}", keeps="report.json")
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
    _recipe.run(main)
