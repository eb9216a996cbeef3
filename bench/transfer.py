"""A real transfer experiment that runs offline: MNIST digits 0-4 -> digits 5-9 from 20 images per class.

    python bench/transfer.py                       # lenet5 and resnet20, 3 draws of the 100 images
    python bench/transfer.py --models lenet5 --draws 5

On the real MNIST test split in `../shared/data/mnist` (`--mnist-idx`): each
model is pretrained on digits 0-4 of the first 8,000 images, then retrained
for digits 5-9 from 20 labelled images per class (drawn from the same first
8,000), and measured on digits 5-9 of the last 2,000. Arms: `kzoo.transfer`
modes head, top and full, a linear probe on the frozen features, and the same
network trained from scratch on the same 100 images, each with the same
augmentation, epochs and learning-rate grid (each arm is summarised at its
best rate, scratch included: a fair baseline). One JSON object per arm, rate
and draw, then one summary line per model with the target: every transfer
mode beats scratch, and the best by >= 10 points.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kzoo  # noqa: E402
from kzoo import data, training, transfer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "recipes"))
from _mnist import MNIST_TEST_FILES, read_mnist_test_split  # noqa: E402

MNIST = os.path.join(ROOT, "..", "shared", "data", "mnist")
# Input and head pooling per model: LeNet's 5x5x16 map keeps its layout
# (flatten), ResNet-20 ends in global average pooling as published.
SETUPS = {"lenet5": ((28, 28, 1), "flatten"), "resnet20": ((32, 32, 3), "avg")}
MODES = ("head", "top", "full")


def to_input(images, shape):
    """uint8 28x28 digits -> float32 in [0, 1] at the model's input shape."""
    x = tf.convert_to_tensor(images[..., None], tf.float32) / 255.0
    if shape[:2] != (28, 28):
        x = tf.image.resize(x, shape[:2])
    if shape[-1] == 3:
        x = tf.image.grayscale_to_rgb(x)
    return x.numpy()


def pretrain(name, shape, images, labels, epochs, seed, folder):
    """Trains the whole registry model on digits 0-4; returns its saved `.keras` file."""
    chosen = labels < 5
    train = data.from_arrays(to_input(images[chosen], shape), labels[chosen], batch_size=64, seed=seed)
    model = kzoo.get_model(name, input_shape=shape, num_classes=5)
    start = time.perf_counter()
    history = training.fit(model, train, epochs=epochs, seed=seed, verbose=0)
    path = os.path.join(folder, f"{name}_digits0-4.keras")
    model.save(path)
    return path, history.history["accuracy"][-1], time.perf_counter() - start


def few_shot(images, labels, per_class, seed):
    """`per_class` images of each digit 5-9, labels 0-4."""
    rng = np.random.default_rng(seed)
    index = np.concatenate([rng.choice(np.flatnonzero(labels == d), per_class, replace=False) for d in range(5, 10)])
    return images[index], labels[index] - 5


def run_arm(arm, name, shape, pooling, weights, train, test, args, rate, seed):
    """Trains one arm at peak learning rate `rate` (phase 2 of fine_tune at a tenth); returns (accuracy, seconds)."""
    start = time.perf_counter()
    epochs = args.head_epochs + args.fine_tune_epochs
    if arm == "linear_probe":
        probe = transfer.linear_probe(name, train, test, weights=weights, input_shape=shape, pooling=pooling)
        return probe["accuracy"], time.perf_counter() - start
    if arm == "scratch":  # The same network, every layer (BN included) trained from random weights.
        model = transfer.build(name, 5, weights=None, mode="full", freeze_batchnorm=False,
                               input_shape=shape, pooling=pooling)
        training.fit(model, train, epochs=epochs, learning_rate=rate, seed=seed, verbose=0)
    elif arm == "head":
        model = transfer.build(name, 5, weights=weights, input_shape=shape, pooling=pooling)
        training.fit(model, train, epochs=epochs, learning_rate=rate, seed=seed, verbose=0)
    else:
        model = transfer.build(name, 5, weights=weights, input_shape=shape, pooling=pooling)
        transfer.fine_tune(model, train, head_epochs=args.head_epochs, fine_tune_epochs=args.fine_tune_epochs,
                           learning_rate=rate, unfreeze=arm, seed=seed, verbose=0)
    return training.evaluate(model, test)["accuracy"], time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--mnist-idx", default=MNIST, help=f"folder with {MNIST_TEST_FILES[0]} and its labels")
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--draws", type=int, default=3, help="draws of the few-shot images (seeds 0..draws-1)")
    parser.add_argument("--head-epochs", type=int, default=30, help="phase 1; scratch and head train for both phases")
    parser.add_argument("--fine-tune-epochs", type=int, default=30)
    parser.add_argument("--learning-rates", type=float, nargs="+", default=[1e-3, 1e-2],
                        help="every arm runs at each; the summary takes each arm's best")
    parser.add_argument("--augment", choices=["mnist", "none"], default="mnist")
    args = parser.parse_args()
    (images, labels), (test_images, test_labels) = read_mnist_test_split(args.mnist_idx)
    unseen = test_labels >= 5
    augment = None if args.augment == "none" else args.augment
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            shape, pooling = SETUPS[name]
            weights, pretrain_accuracy, seconds = pretrain(name, shape, images, labels, args.pretrain_epochs, 0, folder)
            print(json.dumps({"bench": "transfer_pretrain", "model": name, "digits": "0-4",
                              "images": int((labels < 5).sum()), "epochs": args.pretrain_epochs,
                              "train_accuracy": round(float(pretrain_accuracy), 4), "seconds": round(seconds, 1)}),
                  flush=True)
            test = data.from_arrays(to_input(test_images[unseen], shape), test_labels[unseen] - 5,
                                    batch_size=500, shuffle=False)
            results = {}  # (arm, learning rate) -> accuracies over the draws
            for draw in range(args.draws):
                few_images, few_labels = few_shot(images, labels, args.per_class, seed=draw)
                train = data.from_arrays(to_input(few_images, shape), few_labels, batch_size=20, seed=draw,
                                         augment=augment)
                plan = [(arm, rate) for arm in ("scratch", *MODES) for rate in args.learning_rates]
                for arm, rate in [*plan, ("linear_probe", None)]:
                    accuracy, seconds = run_arm(arm, name, shape, pooling, weights, train, test, args, rate, draw)
                    results.setdefault((arm, rate), []).append(accuracy)
                    print(json.dumps({"bench": "transfer_arm", "model": name, "arm": arm, "learning_rate": rate,
                                      "draw": draw, "train_images": len(few_labels), "augment": args.augment,
                                      "test_images": int(unseen.sum()), "accuracy": round(accuracy, 4),
                                      "seconds": round(seconds, 1)}), flush=True)
            means = {key: float(np.mean(values)) for key, values in results.items()}
            best = {}
            for (arm, rate), value in means.items():
                if arm not in best or value > best[arm][0]:
                    best[arm] = (value, rate)
            gains = {mode: round(100 * (best[mode][0] - best["scratch"][0]), 1) for mode in MODES}
            print(json.dumps({
                "bench": "transfer_summary", "model": name, "draws": args.draws, "per_class": args.per_class,
                "augment": args.augment,
                "mean_accuracy_per_learning_rate": {f"{arm}@{rate}": round(v, 4) for (arm, rate), v in means.items()},
                "best": {arm: {"accuracy": round(v, 4), "learning_rate": r} for arm, (v, r) in best.items()},
                "points_over_scratch": gains,
                "every_mode_beats_scratch": all(gain > 0 for gain in gains.values()),
                "best_mode_gain_at_least_10_points": max(gains.values()) >= 10,
            }), flush=True)


if __name__ == "__main__":
    main()
