"""Train a CIFAR ResNet (He et al. 2015) on CIFAR-10, evaluate it, and save the results.

    python recipes/cifar10_resnet.py                    # ResNet-20, 182 epochs, the paper's recipe
    python recipes/cifar10_resnet.py --schedule cosine  # cosine instead of the step schedule
    python recipes/cifar10_resnet.py --quick --offline  # 1 epoch smoke test, no download

The paper's recipe: 45k/5k train/validation split, 4-pixel pad-and-crop and
horizontal flips, SGD with momentum 0.9, weight decay 1e-4, batch 128,
learning rate 0.1 divided by 10 at 50% and 75% of training (32k and 48k of
64k iterations). ResNet-20 reaches 91.25% test accuracy in the paper.
"""

from __future__ import annotations

import time

import _recipe  # noqa: E402  first (recipes/ is on sys.path): it loads TensorFlow without its start-up lines

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import kzoo  # noqa: E402
from kzoo import data, distribute, training  # noqa: E402

RECIPE = "cifar10_resnet"

# He et al. 2015, Table 6 (ResNet-110: the best of five runs).
PAPER_TEST_ACCURACY = {"resnet20": 0.9125, "resnet32": 0.9249, "resnet44": 0.9283,
                       "resnet56": 0.9303, "resnet110": 0.9357}


def build_parser():
    parser = _recipe.parser(__doc__, quick="1 epoch, a smoke test, to its own folder; offline it trains on "
                                           "the embedded digits instead of CIFAR-10")
    _recipe.add(parser, "--model", "resnet20", choices=list(PAPER_TEST_ACCURACY))
    _recipe.add(parser, "--epochs", 182)
    _recipe.add(parser, "--batch-size", 128)
    _recipe.add(parser, "--learning-rate", 0.1)
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="L2 weight decay")
    parser.add_argument("--schedule", choices=["step", "cosine"], default="step",
                        help="step: divide by 10 at 50%% and 75%% of training (the paper); cosine")
    _recipe.add(parser, "--data-dir")
    _recipe.add(parser, "--offline")
    _recipe.add(parser, "--strategy", "auto", choices=distribute.STRATEGIES)
    return parser


def load_data(args):
    """Returns (dataset name, train, validation, test)."""
    common = dict(data_dir=args.data_dir, download=not args.offline)
    try:
        train = data.load("cifar10", "train[:45000]", batch_size=args.batch_size, augment="cifar",
                          seed=args.seed, **common)
        val = data.load("cifar10", "train[45000:]", batch_size=1000, shuffle=False, **common)
        test = data.load("cifar10", "test", batch_size=1000, shuffle=False, **common)
        return "cifar10", train, val, test
    except data.DatasetUnavailableError as error:
        if not args.quick:
            _recipe.fail(RECIPE, f"CIFAR-10 is {error.why}. Prepare it with TFDS where there is network access "
                                 "and give its folder as --data-dir DIR; --quick runs a smoke test on the "
                                 "embedded digits instead.", _recipe.EXIT_UNAVAILABLE)
        print(f"{RECIPE}: CIFAR-10 cannot be had here; the --quick run trains on the embedded "
              "digits (as 32x32 RGB) instead.", flush=True)

    def rgb(dataset):
        return dataset.map(lambda x, y: (tf.image.grayscale_to_rgb(x), y))

    train = rgb(data.load("digits", "train[:90%]", batch_size=args.batch_size, image_size=32, augment="cifar",
                          seed=args.seed))
    val = rgb(data.load("digits", "train[90%:]", batch_size=1000, image_size=32, shuffle=False))
    test = rgb(data.load("digits", "test", batch_size=1000, image_size=32, shuffle=False))
    return "digits", train, val, test


def main(argv=None):
    args = build_parser().parse_args(argv)
    output = _recipe.output_folder(args, RECIPE, f"{args.model}_cifar10")
    strategy = distribute.strategy(args.strategy)  # First: "multi_worker" must come before TensorFlow runs.
    keras.utils.set_random_seed(args.seed)  # Before anything random: the weights, the pipeline, dropout.
    epochs = 1 if args.quick else args.epochs
    dataset, train, val, test = load_data(args)
    model = kzoo.get_model(args.model, num_classes=10)
    start = time.perf_counter()
    history = training.fit(
        model, train, val, epochs=epochs, optimizer="sgd", learning_rate=args.learning_rate,
        weight_decay=args.weight_decay, schedule=args.schedule, checkpoint_dir=output, seed=args.seed,
        strategy=strategy,
    )
    seconds = time.perf_counter() - start
    if not distribute.is_chief():
        print("Training done; the chief worker evaluates and writes the files.")
        return None
    metrics = training.save_artifacts(
        output, model, history, test, dataset=dataset, schedule=args.schedule, quick=args.quick,
        train_seconds=round(seconds, 1), seed=args.seed, paper_test_accuracy=PAPER_TEST_ACCURACY[args.model],
    )
    result = f"\n{args.model} on {dataset}: test accuracy {metrics['test_accuracy']:.4f} after " \
             f"{_recipe.epochs(epochs)} ({seconds:.0f} s)"
    if args.quick:
        print(f"{result}: a smoke test, not a result; the paper's {metrics['paper_test_accuracy']:.4f} is after "
              f"182 epochs on CIFAR-10. Files in {output}.")
    else:
        print(f"{result}; the paper: {metrics['paper_test_accuracy']:.4f}. Files in {output}.")
    return metrics


if __name__ == "__main__":
    _recipe.run(main)
