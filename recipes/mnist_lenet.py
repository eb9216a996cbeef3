"""Train LeNet-5 on MNIST, evaluate it, and save the model, curves and metrics.

    python recipes/mnist_lenet.py            # 15 epochs on MNIST, to saved_models/lenet5_mnist/
    python recipes/mnist_lenet.py --quick    # 2 epochs, a smoke test

Offline and without a prepared MNIST, it says so in one line and trains on
the embedded scikit-learn digits instead; `--dataset mnist` refuses that.
The last 10% of the training split validates (and picks best.keras); the
test split is read once, at the end. `--seed` makes a run repeat exactly.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import kzoo  # noqa: E402
from kzoo import distribute, training  # noqa: E402
from _mnist import load_mnist_or_digits  # noqa: E402  (recipes/ is on sys.path)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dataset", choices=["auto", "mnist", "digits"], default="auto",
                        help="auto: MNIST, or the embedded digits when MNIST cannot be had")
    parser.add_argument("--data-dir", default=None, help="TFDS data folder")
    parser.add_argument("--offline", action="store_true", help="never download; use what data_dir holds")
    parser.add_argument("--output", default=os.path.join("saved_models", "lenet5_mnist"))
    parser.add_argument("--strategy", choices=distribute.STRATEGIES, default="auto",
                        help="multi_worker: one of the workers TF_CONFIG names (see python -m kzoo.launch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 epochs: a smoke test")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    strategy = distribute.strategy(args.strategy)  # First: "multi_worker" must come before TensorFlow runs.
    keras.utils.set_random_seed(args.seed)  # Before anything random: the weights, the pipeline, dropout.
    epochs = 2 if args.quick else args.epochs
    dataset, train, val, test = load_mnist_or_digits(args, "mnist_lenet", train_batch=args.batch_size,
                                                     test_batch=1000)
    model = kzoo.lenet5()
    start = time.perf_counter()
    history = training.fit(model, train, val, epochs=epochs, checkpoint_dir=args.output, seed=args.seed,
                           strategy=strategy)
    seconds = time.perf_counter() - start
    if not distribute.is_chief():
        print("Training done; the chief worker evaluates and writes the files.")
        return None
    metrics = training.save_artifacts(args.output, model, history, test, dataset=dataset,
                                      train_seconds=round(seconds, 1), seed=args.seed)
    print(f"\nlenet5 on {dataset}: test accuracy {metrics['test_accuracy']:.4f} after {epochs} epochs "
          f"({seconds:.0f} s). Files in {args.output}: "
          f"{', '.join(sorted(f for f in os.listdir(args.output) if '.' in f))}")
    return metrics


if __name__ == "__main__":
    main()
