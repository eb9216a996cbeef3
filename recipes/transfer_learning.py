"""Retrain an ImageNet-pretrained backbone for your own classes, evaluate it, and optionally export a .tflite.

    python recipes/transfer_learning.py                                 # resnet50 on tf_flowers, mode "top"
    python recipes/transfer_learning.py --data-dir photos/ --mode full  # a folder with one sub-folder per class
    python recipes/transfer_learning.py --weights resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 --export int8
    python recipes/transfer_learning.py --quick --export int8           # a smoke test that needs nothing

Phase 1 trains the new head, phase 2 (modes "top" and "full") unfreezes the
top stage or everything at a tenth of the learning rate (`kzoo.transfer`).
Writes model.keras, curves.png, confusion.png, metrics.json (and the .tflite
with its model card) to --output. Offline, the ImageNet weights come from the
Keras cache or --weights PATH; without them it says where to put the file.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kzoo  # noqa: E402
from kzoo import data, export, training, transfer  # noqa: E402
from kzoo._io import save_json  # noqa: E402

QUICK_CLASSES = 3
QUICK_IMAGES_PER_CLASS = 20


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50", help="any registry name (kzoo list)")
    parser.add_argument("--weights", default="imagenet", help="'imagenet' (Keras cache or download), a weights file, or 'none'")
    parser.add_argument("--dataset", default="tf_flowers", help="a TFDS name (used when --data-dir is not given)")
    parser.add_argument("--data-dir", default=None,
                        help="a folder with one sub-folder of images per class (split 80/10/10 per class by --seed)")
    parser.add_argument("--tfds-dir", default=None, help="TFDS data folder")
    parser.add_argument("--offline", action="store_true", help="never download a dataset")
    parser.add_argument("--mode", choices=transfer.MODES, default="top")
    parser.add_argument("--trainable-from", default=None, help="with --mode top: stage or layer, e.g. conv4")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--head-epochs", type=int, default=5)
    parser.add_argument("--fine-tune-epochs", type=int, default=5)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--export", choices=["none", *export.MODES], default="none")
    parser.add_argument("--output", default=None, help="default saved_models/transfer_<backbone>")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="1+1 epochs at 64x64 on a small image folder and random weights it writes itself")
    return parser.parse_args(argv)


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
    if args.data_dir:  # 80/10/10 per class, the same split in the three calls (it depends on the seed only).
        def subset(name, **kwargs):
            return data.from_directory(args.data_dir, validation_split=0.1, test_split=0.1, subset=name,
                                       **common, **kwargs)

        train = subset("training", augment=augment)
        val, test = subset("validation", shuffle=False), subset("test", shuffle=False)
        return args.data_dir, train, val, test, train.class_names
    load = dict(data_dir=args.tfds_dir, download=not args.offline, **common)
    train = data.load(args.dataset, "train[:80%]", augment=augment, **load)
    val = data.load(args.dataset, "train[80%:90%]", shuffle=False, **load)
    test = data.load(args.dataset, "train[90%:]", shuffle=False, **load)
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
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)  # Before anything random: the head's weights, the pipeline, dropout.
    output = args.output or os.path.join("saved_models", f"transfer_{args.backbone}")
    os.makedirs(output, exist_ok=True)
    if args.quick:
        args.image_size, args.batch_size, args.head_epochs = 64, 8, 1
        args.fine_tune_epochs = 0 if args.mode == "head" else 1
        args.data_dir = args.data_dir or write_quick_images(os.path.join(output, "quick_images"))
        if args.weights == "imagenet":
            args.weights = write_quick_weights(args, os.path.join(output, f"{args.backbone}_random_notop.weights.h5"))
            print(f"--quick: random {args.backbone} weights ({args.weights}) and {QUICK_CLASSES} classes of "
                  f"digit images ({args.data_dir}); a smoke test, not a result.")
    name, train, val, test, class_names = load_data(args)
    num_classes = len(class_names)
    try:
        model = transfer.build(args.backbone, num_classes, weights=None if args.weights == "none" else args.weights,
                               input_shape=(args.image_size, args.image_size, 3), mode=args.mode,
                               trainable_from=args.trainable_from)
    except RuntimeError as error:  # ImageNet weights neither cached nor downloadable: say where the file goes.
        sys.exit(f"transfer_learning: {error} Here: --weights PATH.")
    start = time.perf_counter()
    phases = transfer.fine_tune(
        model, train, val, head_epochs=args.head_epochs,
        fine_tune_epochs=0 if args.mode == "head" else args.fine_tune_epochs,
        unfreeze="full" if args.mode == "full" else "top", trainable_from=args.trainable_from,
        learning_rate=args.learning_rate, checkpoint_dir=output, seed=args.seed, verbose=2,
    )
    seconds = time.perf_counter() - start
    facts = dict(backbone=args.backbone, weights=args.weights, dataset=name, mode=args.mode,
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
    main()
