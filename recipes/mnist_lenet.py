"""Train LeNet-5 on MNIST, evaluate it, and save the model, curves and metrics.

    python recipes/mnist_lenet.py                     # 15 epochs on MNIST, to saved_models/lenet5_mnist/
    python recipes/mnist_lenet.py --mnist-idx DIR     # MNIST from its original idx files (t10k: 8,000 / 2,000)
    python recipes/mnist_lenet.py --quick             # 2 epochs, a smoke test, to saved_models/lenet5_mnist_quick/

Offline and without a prepared MNIST, it says so in one line and trains on
the embedded scikit-learn digits instead; `--dataset mnist` refuses that.
The last 10% of the training split validates (and picks best.keras); the
test split is read once, at the end. `--seed` makes a run repeat exactly.
"""

from __future__ import annotations

import os
import time

import _recipe  # noqa: E402  first (recipes/ is on sys.path): it loads TensorFlow without its start-up lines

import keras  # noqa: E402

import kzoo  # noqa: E402
from kzoo import distribute, training  # noqa: E402
from _mnist import add_source_flags, load_mnist_or_digits  # noqa: E402

RECIPE = "mnist_lenet"


def build_parser():
    parser = _recipe.parser(__doc__)
    _recipe.add(parser, "--epochs", 15)
    _recipe.add(parser, "--batch-size", 128)
    add_source_flags(parser)
    _recipe.add(parser, "--strategy", "auto", choices=distribute.STRATEGIES)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    output = _recipe.output_folder(args, RECIPE, "lenet5_mnist")
    strategy = distribute.strategy(args.strategy)  # First: "multi_worker" must come before TensorFlow runs.
    keras.utils.set_random_seed(args.seed)  # Before anything random: the weights, the pipeline, dropout.
    epochs = 2 if args.quick else args.epochs
    dataset, train, val, test = load_mnist_or_digits(args, RECIPE, train_batch=args.batch_size, test_batch=1000)
    model = kzoo.lenet5()
    start = time.perf_counter()
    history = training.fit(model, train, val, epochs=epochs, checkpoint_dir=output, seed=args.seed,
                           strategy=strategy)
    seconds = time.perf_counter() - start
    if not distribute.is_chief():
        print("Training done; the chief worker evaluates and writes the files.")
        return None
    metrics = training.save_artifacts(output, model, history, test, dataset=dataset, quick=args.quick,
                                      train_seconds=round(seconds, 1), seed=args.seed)
    smoke = " (--quick: a smoke test, not a result)" if args.quick else ""
    print(f"\nlenet5 on {dataset}: test accuracy {metrics['test_accuracy']:.4f} after {_recipe.epochs(epochs)} "
          f"({seconds:.0f} s){smoke}. Files in {output}: "
          f"{', '.join(sorted(f for f in os.listdir(output) if '.' in f))}")
    return metrics


if __name__ == "__main__":
    _recipe.run(main)
