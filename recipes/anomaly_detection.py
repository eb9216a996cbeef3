"""Anomaly detection on one MVTec AD category: fit on good parts, set the threshold, evaluate, write the detector.

    python recipes/anomaly_detection.py --data-dir mvtec_anomaly_detection/bottle [--method patchcore]
        [--backbone wide_resnet50_2] [--image-size 224] [--coreset-ratio 0.1] [--export float32] [--quick]

The category's test images are split in two halves, stratified by defect type
and seeded: the first half sets the threshold (F1-optimal), the second is
scored once, so no figure is measured on the images that chose the cut.
Writes detector.keras, metrics.json, heatmaps.png and roc.png (and with
--export a verified .tflite) to --output. --quick runs offline on generated
textures with planted defects (resnet18 with random weights at 64x64): a
smoke test, not a result.
"""

from __future__ import annotations

import json
import os

import _recipe
import numpy as np

from kzoo import anomaly
from kzoo._io import save_json
from kzoo.cli import EXIT_CHECK_FAILED, EXIT_NOT_FOUND, EXIT_UNAVAILABLE
from kzoo.export import ExportError
from kzoo.weights import WeightsUnavailableError

RECIPE = "anomaly_detection"


def build_parser():
    parser = _recipe.parser(__doc__, quick="offline: generated textures with planted defects, resnet18 (random "
                                           "weights) at 64x64, to its own folder; not a result")
    _recipe.add(parser, "--data-dir")
    parser.add_argument("--method", default="patchcore", choices=anomaly.METHODS, help="the detector")
    _recipe.add(parser, "--backbone", help=f"{_recipe.FLAGS['--backbone']['help']}; default wide_resnet50_2 "
                                           "(resnet18 with --quick)")
    _recipe.add(parser, "--image-size", 224)
    parser.add_argument("--coreset-ratio", type=float, default=0.1, help="PatchCore: fraction of patches kept")
    _recipe.add(parser, "--export", "none", choices=("none", "float32", "float16"))
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    output = _recipe.output_folder(args, RECIPE, f"anomaly_{args.method}", keeps="detector.keras")
    if args.quick:
        data, backbone, weights, size = generated(args.seed), args.backbone or "resnet18", None, 64
    else:
        if not args.data_dir:
            _recipe.fail(RECIPE, "give --data-dir CATEGORY_FOLDER (an MVTec AD category, e.g. "
                                 "mvtec_anomaly_detection/bottle), or --quick for generated data.", 2)
        try:
            data = anomaly.load_mvtec(args.data_dir, image_size=args.image_size)
        except FileNotFoundError as error:
            _recipe.fail(RECIPE, f"--data-dir {args.data_dir}: {error}", EXIT_NOT_FOUND)
        backbone, weights, size = args.backbone or "wide_resnet50_2", "imagenet", args.image_size
    options = dict(coreset_ratio=args.coreset_ratio if not args.quick else 0.5) if args.method == "patchcore" else {}
    detector_class = {"patchcore": anomaly.PatchCore, "padim": anomaly.PaDiM, "knn": anomaly.KNN}[args.method]
    try:
        detector = detector_class(backbone, weights=weights, image_size=size, seed=args.seed, **options)
    except WeightsUnavailableError as error:
        _recipe.fail(RECIPE, f"{error} (--backbone {backbone})", EXIT_UNAVAILABLE)
    detector.fit(data["train"])
    threshold_half, test_half = split_test(data["test_labels"], data["test_defects"], args.seed)
    detector.set_threshold(data["test"][threshold_half], data["test_labels"][threshold_half])
    report = anomaly.evaluate(detector, data["test"][test_half], data["test_labels"][test_half],
                              masks=data["test_masks"][test_half])
    report.update(method=args.method, backbone=backbone, weights=weights, image_size=size,
                  threshold=detector.threshold, train_images=len(data["train"]),
                  threshold_images=int(len(threshold_half)), quick=args.quick)
    os.makedirs(output, exist_ok=True)
    detector.save(os.path.join(output, "detector.keras"))
    shown = np.concatenate([test_half[data["test_labels"][test_half] == 0][:2],
                            test_half[data["test_labels"][test_half] == 1][:4]])
    skipped = []
    for name, draw in (("heatmaps.png", lambda path: anomaly.plot(detector, data["test"][shown], path,
                                                                  masks=data["test_masks"][shown])),
                       ("roc.png", lambda path: roc_curve(detector, data["test"][test_half],
                                                          data["test_labels"][test_half], path))):
        try:
            draw(os.path.join(output, name))
        except ImportError:
            skipped.append(name)
    failed_export = None
    if args.export != "none":
        try:
            export = anomaly.export_tflite(detector, os.path.join(output, f"detector_{args.export}.tflite"),
                                           mode=args.export, check_images=data["test"][test_half][:8],
                                           overwrite=True)
            report["export"] = {"mode": args.export, "size_bytes": export["size_bytes"],
                                "max_abs_diff": export["max_abs_diff"]}
        except ExportError as error:  # The detector and its metrics are kept; the file is not.
            failed_export = str(error)
            report["export"] = {"mode": args.export, "refused": failed_export}
    save_json(report, os.path.join(output, "metrics.json"))
    print(json.dumps({key: report[key] for key in ("method", "image_auroc", "pixel_auroc", "f1")}))
    if skipped:
        print(f"{RECIPE}: matplotlib is not installed; skipped {', '.join(skipped)} (pip install matplotlib).")
    print(f"{RECIPE}: wrote {output}")
    if failed_export:
        _recipe.fail(RECIPE, f"--export {args.export}: {failed_export} The detector and metrics.json are kept.",
                     EXIT_CHECK_FAILED)


def split_test(labels, defects, seed):
    """Two halves of the test set, each defect type (and the good images) split evenly, seeded."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for defect in sorted(set(defects)):
        index = rng.permutation(np.flatnonzero(defects == defect))
        first.extend(index[: len(index) // 2])
        second.extend(index[len(index) // 2:])
    first, second = np.sort(first), np.sort(second)
    if len(set(labels[first])) < 2 or len(set(labels[second])) < 2:
        _recipe.fail(RECIPE, "the test set needs at least 2 normal and 2 defective images to split.", 2)
    return first, second


def roc_curve(detector, images, labels, path):
    from sklearn.metrics import roc_auc_score, roc_curve as curve

    from kzoo._io import pyplot, save_figure

    plt = pyplot("anomaly_detection roc")
    scores = detector.predict(images)["scores"]
    false_positive, true_positive, _ = curve(labels, scores)
    figure, axis = plt.subplots(figsize=(4, 4))
    axis.plot(false_positive, true_positive, label=f"AUROC {roc_auc_score(labels, scores):.3f}")
    axis.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    axis.set_xlabel("false positive rate")
    axis.set_ylabel("true positive rate")
    axis.legend(loc="lower right")
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def generated(seed):
    """An MVTec-like category from generated textures: 24 good training images, 8 good and 8 defective tests."""
    rng = np.random.default_rng(seed)
    size = 64
    y, x = np.mgrid[0:size, 0:size] / size

    def textures(count):
        phases = rng.uniform(0, 2 * np.pi, count)
        base = 0.5 + 0.25 * np.sin(2 * np.pi * 4 * x[None] + phases[:, None, None])
        return np.clip(base[..., None] + rng.normal(0, 0.02, (count, size, size, 3)), 0, 1).astype("float32")

    test = textures(16)
    masks = np.zeros((16, size, size), "uint8")
    for index in range(8, 16):
        top, left = rng.integers(4, size - 20, 2)
        test[index, top:top + 14, left:left + 14] = [1.0, 0.1, 0.1]
        masks[index, top:top + 14, left:left + 14] = 1
    return {"train": textures(24), "test": test, "test_labels": np.array([0] * 8 + [1] * 8, "int32"),
            "test_masks": masks, "test_defects": np.array(["good"] * 8 + ["square"] * 8)}


if __name__ == "__main__":
    _recipe.run(main)
