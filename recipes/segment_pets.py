"""Semantic segmentation of Oxford-IIIT Pet (pet / background / outline) on a kzoo backbone, evaluated and exported.

    python recipes/segment_pets.py                                   # resnet18 (ImageNet) + U-Net, 160x160
    python recipes/segment_pets.py --head deeplabv3 --backbone resnet50_tv --export int8
    python recipes/segment_pets.py --images imgs/ --masks masks/ --num-classes 5   # your own folders
    python recipes/segment_pets.py --quick --export int8             # a smoke test that needs nothing

The pipeline of keras.io's segmentation example: TFDS `oxford_iiit_pet`,
masks 1-3 shifted to ids 0-2, images and masks resized together (masks
nearest-neighbour) and augmented together. The last 10% of the training
split validates and picks best.keras (by mean IoU); the test split is read
once, at the end. Folders are split 80/10/10 by --seed. Writes model.keras,
metrics.json (mean IoU, pixel accuracy, IoU per class), curves.png and
segmentation.png (image | truth | prediction), and with --export a verified
.tflite and its model card, to --output. --quick trains resnet20 (random
weights) on 96 canvases of scikit-learn's digits at 64x64 for 2 epochs.
"""

from __future__ import annotations

import json
import os

import _recipe  # noqa: E402  first (recipes/ is on sys.path): it loads TensorFlow without its start-up lines

import keras  # noqa: E402

from kzoo import data, export, segment, training  # noqa: E402
from kzoo._io import PlottingUnavailableError, save_json  # noqa: E402
from kzoo.cli import EXIT_CHECK_FAILED, EXIT_NOT_FOUND  # noqa: E402
from kzoo.weights import WeightsUnavailableError  # noqa: E402

RECIPE = "segment_pets"


def build_parser():
    parser = _recipe.parser(__doc__, quick="offline: resnet20 (random weights) and U-Net on 96 canvases of "
                                           "scikit-learn's digits at 64x64, 2 epochs, to its own folder; not a result")
    _recipe.add(parser, "--backbone", "resnet18")
    parser.add_argument("--head", default="unet", choices=list(segment.HEADS), help="the segmentation head")
    _recipe.add(parser, "--weights", "imagenet")
    _recipe.add(parser, "--dataset", "oxford_iiit_pet", help="a TFDS dataset with segmentation masks")
    _recipe.add(parser, "--data-dir")
    _recipe.add(parser, "--offline")
    _recipe.add(parser, "--images")
    parser.add_argument("--masks", metavar="DIR", help="the folder of masks for --images: single-channel PNGs of "
                                                       "class ids, named as the images")
    parser.add_argument("--num-classes", type=int, help="classes of --masks (or of another TFDS dataset)")
    parser.add_argument("--ignore-class", type=int, help="the mask id of unlabelled pixels (e.g. 255)")
    _recipe.add(parser, "--image-size", 160)
    _recipe.add(parser, "--batch-size", 16)
    _recipe.add(parser, "--epochs", 15)
    _recipe.add(parser, "--learning-rate", 1e-3)
    _recipe.add(parser, "--export", "none", choices=("none", "float32", "float16", "int8"))
    return parser


def load_data(args):
    """`(train, val, test, class_names, image_size)` from --quick, --images/--masks or the TFDS dataset."""
    options = dict(batch_size=args.batch_size, seed=args.seed, ignore_class=args.ignore_class)
    if args.quick:
        from kzoo.segment.canvases import CLASS_NAMES, digit_canvases

        images, labels = data.datasets.digits_arrays("all")
        made = {name: digit_canvases(images[part], labels[part], count, size=64, seed=args.seed + index)
                for index, (name, part, count) in enumerate((("train", slice(0, 1200), 96),
                                                             ("val", slice(1200, 1500), 24),
                                                             ("test", slice(1500, None), 24)))}
        splits = [segment.from_arrays(*made[name], num_classes=11, shuffle=name == "train", **options)
                  for name in ("train", "val", "test")]
        return (*splits, list(CLASS_NAMES), 64)
    if args.images or args.masks:
        if not (args.images and args.masks and args.num_classes):
            _recipe.fail(RECIPE, "--images needs --masks DIR and --num-classes N.", 2)
        for flag, folder in (("--images", args.images), ("--masks", args.masks)):
            if not os.path.isdir(folder):
                _recipe.fail(RECIPE, f"{flag} {folder}: no such folder.", EXIT_NOT_FOUND)
        folders = dict(num_classes=args.num_classes, image_size=args.image_size, validation_split=0.1,
                       test_split=0.1, **options)
        splits = [segment.from_directory(args.images, args.masks, subset=subset, augment=subset == "training",
                                         shuffle=subset == "training", **folders)
                  for subset in ("training", "validation", "test")]
        return (*splits, [str(i) for i in range(args.num_classes)], args.image_size)
    tfds = dict(image_size=args.image_size, data_dir=args.data_dir, download=not args.offline,
                num_classes=args.num_classes, **options)
    try:
        splits = [segment.load(args.dataset, split, augment=split == "train[:90%]", shuffle=split == "train[:90%]",
                               **tfds) for split in ("train[:90%]", "train[90%:]", "test")]
    except data.DatasetUnavailableError as error:
        _recipe.fail(RECIPE, f"{args.dataset} is {error.why}. Prepare it where there is network access and pass "
                             "--data-dir, train on your own folders with --images/--masks, or run --quick.",
                     _recipe.EXIT_UNAVAILABLE)
    return (*splits, splits[0].class_names, args.image_size)


def main(argv=None):
    args = build_parser().parse_args(argv)
    output = _recipe.output_folder(args, RECIPE, f"segment_{args.head}")
    keras.utils.set_random_seed(args.seed)
    train, val, test, class_names, size = load_data(args)
    backbone = "resnet20" if args.quick and args.backbone == "resnet18" else args.backbone
    weights = None if args.quick or args.weights == "none" else args.weights
    channels = 1 if args.quick else 3
    epochs = 2 if args.quick else args.epochs
    try:
        model = segment.build(backbone, len(class_names), head=args.head, weights=weights,
                              input_shape=(size, size, channels))
    except WeightsUnavailableError as error:
        _recipe.fail(RECIPE, f"{error} (--backbone {backbone}; --weights PATH, or --weights none)",
                     _recipe.EXIT_UNAVAILABLE)
    history = training.fit(model, train, val, epochs=epochs, learning_rate=args.learning_rate, seed=args.seed,
                           checkpoint_dir=os.path.join(output, "checkpoints"), verbose=2)
    best = keras.models.load_model(os.path.join(output, "checkpoints", "best.keras"))
    report = segment.evaluate(best, test, class_names=class_names)
    metrics = {"model": best.name, "backbone": backbone, "head": args.head, "weights": weights,
               "dataset": "digit canvases (--quick)" if args.quick else (args.images or args.dataset),
               "image_size": size, "epochs": epochs, "params": best.count_params(),
               "best_val_mean_iou": max(history.history["val_mean_iou"]),
               **{key: report[key] for key in ("mean_iou", "pixel_accuracy", "iou_per_class", "num_images")}}
    os.makedirs(output, exist_ok=True)
    from kzoo._io import atomic_write

    atomic_write(os.path.join(output, "model.keras"), best.save, suffix=".keras")
    skipped = []
    images, masks = next(iter(test))
    for name, draw in (("curves.png", lambda path: training.plot_history(history, path)),
                       ("segmentation.png", lambda path: segment.plot(best, images, masks, path,
                                                                      class_names=class_names,
                                                                      ignore_class=args.ignore_class))):
        try:
            draw(os.path.join(output, name))
        except PlottingUnavailableError:
            skipped.append(name)
    failed_export = None
    if args.export != "none":
        try:
            card = export.to_tflite(best, os.path.join(output, f"{best.name}_{args.export}.tflite"),
                                    mode=args.export, representative_data=train, verify_data=test, overwrite=True,
                                    min_agreement=None if args.quick else 0.95)
            metrics["export"] = {key: card.get(key) for key in ("mode", "size_bytes", "agreement",
                                                                 "mean_iou_vs_keras", "mean_iou", "keras_mean_iou",
                                                                 "latency_ms_median")}
        except export.ExportError as error:  # The model and its metrics are kept; the file is not.
            failed_export = str(error)
            metrics["export"] = {"mode": args.export, "refused": failed_export}
    save_json(metrics, os.path.join(output, "metrics.json"))
    print(json.dumps({key: metrics[key] for key in ("model", "mean_iou", "pixel_accuracy")}
                     | ({f"{args.export}_mean_iou": metrics["export"].get("mean_iou")} if "export" in metrics else {})))
    if skipped:
        print(f"{RECIPE}: matplotlib is not installed; skipped {', '.join(skipped)} (pip install matplotlib).")
    print(f"{RECIPE}: wrote {output}")
    if failed_export:
        _recipe.fail(RECIPE, f"--export {args.export}: {failed_export} The model and metrics.json are kept.",
                     EXIT_CHECK_FAILED)


if __name__ == "__main__":
    _recipe.run(main)
