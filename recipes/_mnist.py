"""The recipes' MNIST source: TFDS MNIST, or the embedded digits when MNIST cannot be had and the user allows it."""

from __future__ import annotations

import sys

from kzoo import data


def load_mnist_or_digits(args, recipe: str, *, train_batch: int, test_batch: int, image_size=None):
    """Returns (dataset name, train, test).

    `args.dataset` is "auto" (MNIST, else the digits with one line saying
    so), "mnist" (exit with the reason when it cannot be had) or "digits";
    `args.data_dir`, `args.offline` and `args.seed` are used as given.
    """
    common = dict(image_size=image_size, data_dir=args.data_dir, download=not args.offline)
    name = "digits" if args.dataset == "digits" else "mnist"
    try:
        train = data.load(name, "train", batch_size=train_batch, augment="mnist", seed=args.seed, **common)
        test = data.load(name, "test", batch_size=test_batch, shuffle=False, **common)
        return name, train, test
    except data.DatasetUnavailableError as error:
        if args.dataset == "mnist":
            sys.exit(f"{recipe}: {error}")
        print(f"{recipe}: MNIST cannot be had here (offline and not in the TFDS folder); "
              "using the embedded scikit-learn digits instead.", flush=True)
        args.dataset = "digits"
        return load_mnist_or_digits(args, recipe, train_batch=train_batch, test_batch=test_batch,
                                    image_size=image_size)
