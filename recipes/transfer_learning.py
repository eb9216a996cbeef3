"""Retrain an ImageNet-pretrained backbone for your own classes, evaluate it, and optionally export a .tflite.

    python recipes/transfer_learning.py                                 # resnet50 on tf_flowers, mode "top"
    python recipes/transfer_learning.py --images photos/ --mode full    # a folder with one sub-folder per class
    python recipes/transfer_learning.py --weights resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 --export int8
    python recipes/transfer_learning.py --quick --export int8           # a smoke test that needs nothing

Phase 1 trains the new head, phase 2 (modes "top" and "full") unfreezes the
top stage or everything at a tenth of the learning rate (`kzoo.transfer`).
Writes model.keras, curves.png, confusion.png, metrics.json (and the .tflite
with its model card) to --output. Offline, the ImageNet weights come from the
Keras cache or --weights PATH; without them it says where to put the file.
`--quick` trains the small CIFAR ResNet-20 (unless --backbone is given) from
random weights on 60 digit images it writes to a temporary folder, and
leaves only its results behind.
"""

from __future__ import annotations

import os
import tempfile
import time

import _recipe  # noqa: E402  first (recipes/ is on sys.path): it loads TensorFlow without its start-up lines

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kzoo  # noqa: E402
from kzoo import data, export, training, transfer  # noqa: E402
from kzoo._io import save_json  # noqa: E402
from kzoo.weights import WeightsUnavailableError  # noqa: E402


RECIPE = "transfer_learning"
QUICK_CLASSES = 3
QUICK_IMAGES_PER_CLASS = 20
QUICK_BACKBONE = "resnet20"  # 0.27M parameters: a smoke run leaves megabytes, not hundreds of them.


def build_parser():
    parser = _recipe.parser(__doc__, quick=f"1+1 epochs at 64x64 of {QUICK_BACKBONE} (unless --backbone), "
                                           "random weights and 60 digit images: a smoke test, to its own folder")
    _recipe.add(parser, "--backbone", help=f"{_recipe.FLAGS['--backbone']['help']}; default resnet50 "
                                           f"({QUICK_BACKBONE} with --quick)")
    _recipe.add(parser, "--weights", "imagenet")
    _recipe.add(parser, "--dataset", "tf_flowers", help="a TFDS name (used when --images is not given)")
    _recipe.add(parser, "--images")
    _recipe.add(parser, "--data-dir")
    _recipe.add(parser, "--offline")
    parser.add_argument("--mode", choices=transfer.MODES, default="top",
                        help="head: train the new head only; top: then the top stage; full: then everything")
    parser.add_argument("--trainable-from", default=None, help="with --mode top: stage or layer, e.g. conv4")
    _recipe.add(parser, "--image-size", 224)
    _recipe.add(parser, "--batch-size", 32)
    parser.add_argument("--head-epochs", type=int, default=5, help="epochs of phase 1 (the new head)")
    parser.add_argument("--fine-tune-epochs", type=int, default=5, help="epochs of phase 2 (modes top and full)")
    _recipe.add(parser, "--learning-rate", 1e-3, help="phase 1's learning rate; phase 2 uses a tenth of it")
    _recipe.add(parser, "--export", "none", choices=["none", *export.MODES])
    return parser


def write_quick_images(folder):
    """A small folder of real images: scikit-learn digits 0-2 as 64x64 RGB PNGs, one sub-folder per digit."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in range(QUICK_CLASSES):
        os.makedirs(os.path.join(folder, str(label)), exist_ok=True)
        chosen = np.flatnonzero(digits.target == label)[:QUICK_IMAGES_PER_CLASS]
        for index in chosen:
            grey = np.kron(digits.images[index] / 16.0, np.ones((8, 8)))[..., None]
            keras.utils.save_img(os.path.join(folder, str(label), f"{index}.png"), np.repeat(grey, 3, axis=-1) * 255.0,
                                 scale=False)
    return folder


def write_quick_weights(args, path):
    """Random backbone weights, saved as a user's own weights file would be."""
    keras.utils.set_random_seed(args.seed)
    kzoo.get_model(args.backbone, include_top=False, input_shape=(args.image_size, args.image_size, 3)).save_weights(path)
    return path


def load_data(args):
    """(name, train, validation, test, class_names)."""
    common = dict(batch_size=args.batch_size, image_size=args.image_size, seed=args.seed)
    augment = kzoo.augment.imagenet(image_size=args.image_size, seed=args.seed)
    if args.images:  # 80/10/10 per class, the same split in the three calls (it depends on the seed only).
        if not os.path.isdir(args.images):
            _recipe.fail(RECIPE, f"--images {args.images}: no such folder. Give a folder with one sub-folder "
                                 "of images per class.", _recipe.EXIT_NOT_FOUND)

        def subset(name, **kwargs):
            return data.from_directory(args.images, validation_split=0.1, test_split=0.1, subset=name,
                                       **common, **kwargs)

        train = subset("training", augment=augment)
        val, test = subset("validation", shuffle=False), subset("test", shuffle=False)
        return getattr(args, "images_label", args.images), train, val, test, train.class_names
    load = dict(data_dir=args.data_dir, download=not args.offline, **common)
    try:
        train = data.load(args.dataset, "train[:80%]", augment=augment, **load)
        val = data.load(args.dataset, "train[80%:90%]", shuffle=False, **load)
        test = data.load(args.dataset, "train[90%:]", shuffle=False, **load)
    except data.DatasetUnavailableError as error:
        _recipe.fail(RECIPE, f"--dataset {args.dataset}: the dataset is {error.why}. Prepare it with TFDS where "
                             "there is network access and give its folder as --data-dir DIR, or train on your own "
                             "images with --images DIR (one sub-folder per class).", _recipe.EXIT_UNAVAILABLE)
    return args.dataset, train, val, test, train.class_names


def merged(*histories):
    """One History over both phases, for the curves and metrics."""
    history = keras.callbacks.History()
    history.history = {}
    for phase in filter(None, histories):
        for key, values in phase.history.items():
            history.history.setdefault(key, []).extend(values)
    history.epoch = list(range(len(history.history.get("loss", []))))
    return history


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.backbone = args.backbone or (QUICK_BACKBONE if args.quick else "resnet50")
    output = _recipe.output_folder(args, RECIPE, f"transfer_{args.backbone}")
    keras.utils.set_random_seed(args.seed)  # Before anything random: the head's weights, the pipeline, dropout.
    weights_label = args.weights
    with tempfile.TemporaryDirectory(prefix="kzoo-transfer-quick-") as scratch:  # What only --quick needs.
        if args.quick:
            args.image_size, args.batch_size, args.head_epochs = 64, 8, 1
            args.fine_tune_epochs = 0 if args.mode == "head" else 1
            if not args.images:
                args.images = write_quick_images(os.path.join(scratch, "images"))
                args.images_label = f"{QUICK_CLASSES} classes of digit images (--quick)"
            if args.weights == "imagenet":
                args.weights = write_quick_weights(args, os.path.join(scratch, f"{args.backbone}_random.weights.h5"))
                weights_label = "random (--quick)"
                print(f"--quick: random {args.backbone} weights and {QUICK_CLASSES} classes of digit images, "
                      "in a temporary folder; a smoke test, not a result.")
        return train_and_save(args, output, weights_label)


def train_and_save(args, output, weights_label):
    """Both phases, then model.keras, metrics.json and the pictures (and the .tflite): the metrics."""
    name, train, val, test, class_names = load_data(args)
    num_classes = len(class_names)
    try:
        model = transfer.build(args.backbone, num_classes, weights=None if args.weights == "none" else args.weights,
                               input_shape=(args.image_size, args.image_size, 3), mode=args.mode,
                               trainable_from=args.trainable_from)
    except WeightsUnavailableError as error:  # Neither cached nor downloadable: say where the file goes.
        _recipe.fail(RECIPE, f"{error} Here: --weights PATH.", _recipe.EXIT_UNAVAILABLE)
    start = time.perf_counter()
    phases = transfer.fine_tune(
        model, train, val, head_epochs=args.head_epochs,
        fine_tune_epochs=0 if args.mode == "head" else args.fine_tune_epochs,
        unfreeze="full" if args.mode == "full" else "top", trainable_from=args.trainable_from,
        learning_rate=args.learning_rate, checkpoint_dir=output, seed=args.seed, verbose=2,
    )
    seconds = time.perf_counter() - start
    facts = dict(backbone=args.backbone, weights=weights_label, dataset=name, mode=args.mode, quick=args.quick,
                 trainable_params=int(sum(np.prod(w.shape) for w in model.trainable_weights)),
                 train_seconds=round(seconds, 1), seed=args.seed)
    metrics = training.save_artifacts(output, model, merged(*phases), test, **facts)  # Kept, whatever export does.
    if args.export != "none":
        path = os.path.join(output, f"{model.name}_{args.export}.tflite")
        report = export.to_tflite(model, path, mode=args.export, representative_data=train.take(8),
                                  verify_data=test, overwrite=True)
        metrics.update(tflite=os.path.basename(path), tflite_agreement=report["agreement"],
                       tflite_accuracy=report["accuracy"], tflite_kb=round(report["size_bytes"] / 1024, 1))
        save_json(metrics, os.path.join(output, "metrics.json"))
    print(f"\n{args.backbone} -> {name} ({args.mode}): test accuracy {metrics['test_accuracy']:.4f} "
          f"({seconds:.0f} s of training). Files in {output}: "
          f"{', '.join(sorted(f for f in os.listdir(output) if '.' in f))}")
    return metrics


if __name__ == "__main__":
    _recipe.run(main)
