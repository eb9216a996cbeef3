"""Transfer learning on real data that is here: does a pretrained backbone beat training from scratch on few labels?

    python bench/transfer.py                                   # both experiments, lenet5 and resnet20
    python bench/transfer.py --experiments mnist-to-digits --models lenet5 --draws 5

Two experiments, on the MNIST test split in `../shared/data/mnist` (`--mnist-idx`):
- `mnist-to-digits` (the case transfer is for: a broader source, another
  distribution): pretrain on all 10,000 MNIST test-split images (10 classes),
  then learn scikit-learn's digits (8x8 scans by other writers, upsampled to
  28x28) from 5 or 10 labelled images per class; the other digits are split
  in two at random, half to choose the learning rate, half to measure.
- `mnist-0-4-to-5-9` (a narrower source): pretrain on digits 0-4 of the first
  8,000 images, learn digits 5-9 from 20 labelled images per class drawn from
  the same 8,000 (up to 1,000 other 5-9s of them choose the learning rate),
  and measure on the 5-9s of the last 2,000.

Arms: scratch (the same network, every layer trained from random weights),
`kzoo.transfer` modes head, top and full, and a linear probe on the frozen
features. Every arm gets the same augmentation, epochs and learning-rate grid;
each arm's rate is chosen by its mean validation accuracy over the draws, and
its test accuracy is read at that rate only. One JSON object per run, then
one summary line per (experiment, model, labelled images per class) with
the targets: every mode beats scratch, and the best by >= 10 points.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kzoo  # noqa: E402
from kzoo import data, training, transfer  # noqa: E402
from kzoo.data import checks  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "recipes"))
from _mnist import MNIST_TEST_FILES, read_mnist_test_files  # noqa: E402

MNIST = os.path.join(ROOT, "..", "shared", "data", "mnist")
# Input and head pooling per model: LeNet's 5x5x16 map keeps its layout
# (flatten), ResNet-20 ends in global average pooling as published.
SETUPS = {"lenet5": ((28, 28, 1), "flatten"), "resnet20": ((32, 32, 3), "avg")}
MODES = ("head", "top", "full")
ARMS = ("scratch", *MODES)
EXPERIMENTS = ("mnist-to-digits", "mnist-0-4-to-5-9")
VALIDATION_CAP = 1000  # Validation images per draw in mnist-0-4-to-5-9.


def to_input(images, shape):
    """Images (uint8 0-255 or float in [0, 1], 28x28) -> float32 in [0, 1] at the model's input shape."""
    x = tf.convert_to_tensor(checks.unit_images(images, "images"))
    x = x[..., None] if x.shape.rank == 3 else x
    if tuple(shape[:2]) != tuple(x.shape[1:3]):
        x = tf.image.resize(x, shape[:2])
    if shape[-1] == 3:
        x = tf.image.grayscale_to_rgb(x)
    return x.numpy()


def sklearn_digits():
    """scikit-learn's 1,797 digits as kzoo embeds them: 28x28x1 in [0, 1]."""
    images, labels = next(iter(data.load("digits", "all", batch_size=2000, shuffle=False)))
    return images.numpy(), labels.numpy()


def experiment(name, mnist_folder):
    """(source images, source labels, target pool images, pool labels, fixed test or None, classes)."""
    images, labels = read_mnist_test_files(mnist_folder)
    if name == "mnist-to-digits":
        pool_images, pool_labels = sklearn_digits()
        return images, labels, pool_images, pool_labels, None, 10
    first, last = slice(0, 8000), slice(-2000, None)
    source = labels[first] < 5
    pool = labels[first] >= 5
    test = labels[last] >= 5
    return (images[first][source], labels[first][source], images[first][pool], labels[first][pool] - 5,
            (images[last][test], labels[last][test] - 5), 5)


def draw_split(pool_labels, per_class, fixed_test, seed):
    """Indices into the pool: `per_class` labelled images of each class, validation, and test (None: fixed)."""
    rng = np.random.default_rng(seed)
    labelled = np.concatenate([rng.choice(np.flatnonzero(pool_labels == c), per_class, replace=False)
                               for c in np.unique(pool_labels)])
    rest = rng.permutation(np.setdiff1d(np.arange(len(pool_labels)), labelled))
    if fixed_test is not None:
        return labelled, rest[:VALIDATION_CAP], None
    half = len(rest) // 2
    return labelled, rest[:half], rest[half:]


def pretrain(name, shape, images, labels, classes, epochs, seed, folder):
    """Trains the whole registry model on the source; returns its saved `.keras` file."""
    keras.utils.set_random_seed(seed)  # tf.data's shuffle seed combines with the global one: set it first.
    train = data.from_arrays(to_input(images, shape), labels, batch_size=64, seed=seed)
    start = time.perf_counter()
    history = training.fit(lambda: kzoo.get_model(name, input_shape=shape, num_classes=classes), train,
                           epochs=epochs, seed=seed, verbose=0)
    path = os.path.join(folder, f"{name}_source.keras")
    history.model.save(path)
    return path, history.history["accuracy"][-1], time.perf_counter() - start


def run_arm(arm, name, shape, pooling, weights, classes, train, evaluations, args, rate, seed):
    """Trains one arm at peak learning rate `rate` (phase 2 of fine_tune at a tenth).

    Returns ({evaluation name: accuracy}, seconds).
    """
    start = time.perf_counter()
    epochs = args.head_epochs + args.fine_tune_epochs
    if arm == "linear_probe":  # No learning rate: scikit-learn's logistic regression, C=1.
        extractor = transfer.feature_extractor(name, weights=weights, input_shape=shape, pooling=pooling)
        accuracies = {key: transfer.linear_probe(extractor, train, value)["accuracy"]
                      for key, value in evaluations.items()}
        return accuracies, time.perf_counter() - start
    keras_seed = seed * 100 + ARMS.index(arm)
    keras.utils.set_random_seed(keras_seed)  # The new head (and scratch's weights) repeat.
    if arm == "scratch":  # The same network, every layer (BN included) trained from random weights.
        model = transfer.build(name, classes, weights=None, mode="full", freeze_batchnorm=False,
                               input_shape=shape, pooling=pooling)
        training.fit(model, train, epochs=epochs, learning_rate=rate, seed=keras_seed, verbose=0)
    elif arm == "head":
        model = transfer.build(name, classes, weights=weights, input_shape=shape, pooling=pooling)
        training.fit(model, train, epochs=epochs, learning_rate=rate, seed=keras_seed, verbose=0)
    else:
        model = transfer.build(name, classes, weights=weights, input_shape=shape, pooling=pooling)
        transfer.fine_tune(model, train, head_epochs=args.head_epochs, fine_tune_epochs=args.fine_tune_epochs,
                           learning_rate=rate, unfreeze=arm, seed=keras_seed, verbose=0)
    accuracies = {key: training.evaluate(model, value)["accuracy"] for key, value in evaluations.items()}
    return accuracies, time.perf_counter() - start


def summarise(results, experiment_name, model, per_class, args):
    """Each arm at the rate of its best mean validation accuracy, with that rate's mean test accuracy."""
    chosen = {}
    for (arm, rate), runs in results.items():
        validation = float(np.mean([run["validation"] for run in runs]))
        if arm not in chosen or validation > chosen[arm]["validation"]:
            tests = [run["test"] for run in runs]
            chosen[arm] = {"validation": validation, "learning_rate": rate, "test": float(np.mean(tests)),
                           "test_std": float(np.std(tests))}
    gains = {mode: round(100 * (chosen[mode]["test"] - chosen["scratch"]["test"]), 1)
             for mode in (*MODES, "linear_probe")}
    return {
        "bench": "transfer_summary", "experiment": experiment_name, "model": model, "per_class": per_class,
        "draws": args.draws, "augment": args.augment,
        "chosen": {arm: {key: round(value, 4) if isinstance(value, float) and key != "learning_rate" else value
                         for key, value in entry.items()} for arm, entry in chosen.items()},
        "points_over_scratch": gains,
        "every_mode_beats_scratch": all(gains[mode] > 0 for mode in MODES),
        "best_transfer_gain_at_least_10_points": max(gains.values()) >= 10,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=EXPERIMENTS)
    parser.add_argument("--models", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--mnist-idx", default=MNIST, help=f"folder with {MNIST_TEST_FILES[0]} and its labels")
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--per-class", type=int, nargs="+", default=None,
                        help="labelled images per class (default: 5 10 for mnist-to-digits, 20 for the other)")
    parser.add_argument("--draws", type=int, default=5, help="draws of the labelled images (seeds 0..draws-1)")
    parser.add_argument("--head-epochs", type=int, default=30, help="phase 1; scratch and head train for both phases")
    parser.add_argument("--fine-tune-epochs", type=int, default=30)
    parser.add_argument("--learning-rates", type=float, nargs="+", default=[1e-3, 1e-2, 3e-2],
                        help="every arm runs at each; validation accuracy chooses")
    parser.add_argument("--augment", choices=["mnist", "none"], default="mnist")
    args = parser.parse_args()
    augment = None if args.augment == "none" else args.augment
    with tempfile.TemporaryDirectory() as folder:
        for experiment_name in args.experiments:
            source_x, source_y, pool_x, pool_y, fixed_test, classes = experiment(experiment_name, args.mnist_idx)
            shots = args.per_class or ([5, 10] if experiment_name == "mnist-to-digits" else [20])
            for name in args.models:
                shape, pooling = SETUPS[name]
                weights, source_accuracy, seconds = pretrain(name, shape, source_x, source_y, len(np.unique(source_y)),
                                                            args.pretrain_epochs, 0, folder)
                print(json.dumps({"bench": "transfer_pretrain", "experiment": experiment_name, "model": name,
                                  "images": len(source_y), "classes": int(len(np.unique(source_y))),
                                  "epochs": args.pretrain_epochs, "train_accuracy": round(float(source_accuracy), 4),
                                  "seconds": round(seconds, 1)}), flush=True)
                pool = to_input(pool_x, shape)
                fixed = None if fixed_test is None else data.from_arrays(
                    to_input(fixed_test[0], shape), fixed_test[1], batch_size=500, shuffle=False)
                for per_class in shots:
                    results = {}  # (arm, learning rate) -> [{"validation", "test"}] over the draws
                    for draw in range(args.draws):
                        labelled, validation, test = draw_split(pool_y, per_class, fixed_test, seed=draw)
                        keras.utils.set_random_seed(draw)  # Each draw's pipeline, whatever ran before it.
                        train = data.from_arrays(pool[labelled], pool_y[labelled], batch_size=min(20, len(labelled)),
                                                 seed=draw, augment=augment, num_classes=classes)

                        def held_out(index):
                            return data.from_arrays(pool[index], pool_y[index], batch_size=500, shuffle=False,
                                                    num_classes=classes)

                        evaluations = {"validation": held_out(validation),
                                       "test": fixed if test is None else held_out(test)}
                        plan = [(arm, rate) for arm in ARMS for rate in args.learning_rates]
                        for arm, rate in [*plan, ("linear_probe", None)]:
                            accuracies, seconds = run_arm(arm, name, shape, pooling, weights, classes, train,
                                                          evaluations, args, rate, draw)
                            results.setdefault((arm, rate), []).append(accuracies)
                            print(json.dumps({
                                "bench": "transfer_arm", "experiment": experiment_name, "model": name, "arm": arm,
                                "learning_rate": rate, "draw": draw, "per_class": per_class,
                                "train_images": len(labelled), "validation_images": len(validation),
                                "test_images": len(fixed_test[1]) if test is None else len(test),
                                "augment": args.augment,
                                **{key: round(value, 4) for key, value in accuracies.items()},
                                "seconds": round(seconds, 1)}), flush=True)
                    print(json.dumps(summarise(results, experiment_name, name, per_class, args)), flush=True)


if __name__ == "__main__":
    main()
