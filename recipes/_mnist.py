"""The recipes' MNIST source: TFDS MNIST, MNIST's original idx files, or the embedded digits when MNIST cannot be had."""

from __future__ import annotations

import os

from kzoo import data
from _recipe import EXIT_UNAVAILABLE, add, fail  # recipes/ is on sys.path

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


def load_mnist_idx(folder: str, recipe: str, *, train_batch: int, test_batch: int, image_size=None, seed=0,
                   validation: bool = True):
    """Returns (dataset name, train, validation, test) from MNIST's original idx files (`--mnist-idx`).

    The first 8,000 test-split images train (the last 800 of those
    validate, unless `validation=False`), the last 2,000 test.
    """
    missing = [name for name in MNIST_TEST_FILES if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        fail(recipe, f"--mnist-idx {folder}: {', '.join(missing)} not found there. Give the folder that holds "
                     "MNIST's original t10k idx files (as yann.lecun.com published them).", EXIT_UNAVAILABLE)
    (train_images, train_labels), (test_images, test_labels) = read_mnist_test_split(folder)
    common = dict(image_size=image_size, num_classes=10)
    kept = 7200 if validation else 8000
    train = data.from_arrays(train_images[:kept], train_labels[:kept], batch_size=train_batch, augment="mnist",
                             seed=seed, **common)
    val = (data.from_arrays(train_images[kept:], train_labels[kept:], batch_size=test_batch, shuffle=False, **common)
           if validation else None)
    test = data.from_arrays(test_images, test_labels, batch_size=test_batch, shuffle=False, **common)
    return f"mnist test split ({kept:,} / {8000 - kept:,} / 2,000)", train, val, test


def add_source_flags(parser) -> None:
    """The flags `load_mnist_or_digits` reads: --dataset, --data-dir, --offline, --mnist-idx."""
    add(parser, "--dataset", "auto", choices=["auto", "mnist", "digits"],
        help="auto: MNIST, or the embedded digits when MNIST cannot be had; mnist: MNIST or stop")
    add(parser, "--data-dir")
    add(parser, "--offline")
    add(parser, "--mnist-idx")


def load_mnist_or_digits(args, recipe: str, *, train_batch: int, test_batch: int, image_size=None):
    """Returns (dataset name, train, validation, test).

    With `args.mnist_idx`, MNIST's original idx files (`load_mnist_idx`).
    Otherwise the validation set is the last 10% of the training split (TFDS
    slicing, the same for the digits), so the test split is only read at
    the end. `args.dataset` is "auto" (MNIST, else the digits with one line
    saying so), "mnist" (stop, saying which flags help, when it cannot be
    had) or "digits"; `args.data_dir`, `args.offline` and `args.seed` are
    used as given.
    """
    if args.mnist_idx:
        return load_mnist_idx(args.mnist_idx, recipe, train_batch=train_batch, test_batch=test_batch,
                              image_size=image_size, seed=args.seed)
    common = dict(image_size=image_size, data_dir=args.data_dir, download=not args.offline)
    name = "digits" if args.dataset == "digits" else "mnist"
    try:
        train = data.load(name, "train[:90%]", batch_size=train_batch, augment="mnist", seed=args.seed, **common)
        val = data.load(name, "train[90%:]", batch_size=test_batch, shuffle=False, **common)
        test = data.load(name, "test", batch_size=test_batch, shuffle=False, **common)
        return name, train, val, test
    except data.DatasetUnavailableError as error:
        if args.dataset == "mnist":
            fail(recipe, f"--dataset mnist: MNIST is {error.why}. Prepare it with TFDS where there is network "
                         "access and give its folder as --data-dir DIR, give MNIST's original idx files as "
                         "--mnist-idx DIR, or train on the embedded digits with --dataset digits.", EXIT_UNAVAILABLE)
        print(f"{recipe}: MNIST cannot be had here (offline and not in the TFDS folder); "
              "using the embedded scikit-learn digits instead (--dataset digits says so up front).", flush=True)
        args.dataset = "digits"
        return load_mnist_or_digits(args, recipe, train_batch=train_batch, test_batch=test_batch,
                                    image_size=image_size)
