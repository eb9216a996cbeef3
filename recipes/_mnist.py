"""The recipes' MNIST source: TFDS MNIST, or the embedded digits when MNIST cannot be had and the user allows it."""

from __future__ import annotations

import os
import sys

from kzoo import data

# MNIST's original test-split files (as in ../shared/data/mnist): the
# recipes and benchmarks train on the first 8,000 and measure on the last 2,000.
MNIST_TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def read_mnist_test_files(folder: str):
    """Returns (images, labels) of MNIST's test split: 10,000 uint8 28x28 images and int32 labels."""
    images = data.read_idx(os.path.join(folder, MNIST_TEST_FILES[0]))
    labels = data.read_idx(os.path.join(folder, MNIST_TEST_FILES[1])).astype("int32")
    return images, labels


def read_mnist_test_split(folder: str):
    """Returns ((train images, labels), (test images, labels)): the first 8,000 and the last 2,000, uint8 / int32."""
    images, labels = read_mnist_test_files(folder)
    return (images[:8000], labels[:8000]), (images[-2000:], labels[-2000:])


def load_mnist_or_digits(args, recipe: str, *, train_batch: int, test_batch: int, image_size=None):
    """Returns (dataset name, train, validation, test).

    The validation set is the last 10% of the training split (TFDS slicing,
    the same for the digits), so the test split is only read at the end.
    `args.dataset` is "auto" (MNIST, else the digits with one line saying
    so), "mnist" (exit with the reason when it cannot be had) or "digits";
    `args.data_dir`, `args.offline` and `args.seed` are used as given.
    """
    common = dict(image_size=image_size, data_dir=args.data_dir, download=not args.offline)
    name = "digits" if args.dataset == "digits" else "mnist"
    try:
        train = data.load(name, "train[:90%]", batch_size=train_batch, augment="mnist", seed=args.seed, **common)
        val = data.load(name, "train[90%:]", batch_size=test_batch, shuffle=False, **common)
        test = data.load(name, "test", batch_size=test_batch, shuffle=False, **common)
        return name, train, val, test
    except data.DatasetUnavailableError as error:
        if args.dataset == "mnist":
            sys.exit(f"{recipe}: {error}")
        print(f"{recipe}: MNIST cannot be had here (offline and not in the TFDS folder); "
              "using the embedded scikit-learn digits instead.", flush=True)
        args.dataset = "digits"
        return load_mnist_or_digits(args, recipe, train_batch=train_batch, test_batch=test_batch,
                                    image_size=image_size)
