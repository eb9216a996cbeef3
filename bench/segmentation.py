"""Segmentation heads on one backbone and budget: mean IoU on digit canvases, Keras and int8 `.tflite`, ms/image.

Data: `../shared/data/mnist` (MNIST's t10k file). Canvases of 1-3 digits
(`kzoo.segment.canvases`, 11 classes: background and the ten digits, each
pixel of a digit's ink labelled with its class) are made for training from
the first 8,000 images (canvases from the last 800 of those validate) and
for testing from the last 2,000, read once at the end. Every head trains on
the same backbone (random weights: ImageNet files cannot be downloaded here),
epochs, learning rate and seed; its int8 file is calibrated on training
canvases and verified on the test canvases. One JSON object per line.

    python bench/segmentation.py [--backbone resnet18] [--epochs 6] [--train 4000] [--plot PNG]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST = os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist")
HEADS = ("fcn32s", "fcn16s", "fcn8s", "unet", "deeplabv3")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--heads", default=",".join(HEADS))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train", type=int, default=4000, help="training canvases (a tenth as many validate)")
    parser.add_argument("--test", type=int, default=1000, help="test canvases")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--deeplab-output-stride", type=int, default=16,
                        help="DeepLabV3's backbone stride (Chen et al. train at 16; 8 took 13x the time of fcn8s "
                             "per epoch on 2 CPU cores)")
    parser.add_argument("--plot", metavar="PNG", help="write image | truth | prediction of the best head here")
    args = parser.parse_args()
    import keras

    from kzoo import data, export, segment, training
    from kzoo.segment.canvases import CLASS_NAMES, digit_canvases

    images = data.read_idx(os.path.join(MNIST, "t10k-images-idx3-ubyte.gz"))
    labels = data.read_idx(os.path.join(MNIST, "t10k-labels-idx1-ubyte.gz")).astype("int32")
    shape = (args.size, args.size, 1)
    train_x, train_m = digit_canvases(images[:7200], labels[:7200], args.train, size=args.size, seed=0)
    val_x, val_m = digit_canvases(images[7200:8000], labels[7200:8000], max(args.train // 10, 1), size=args.size,
                                  seed=1)
    test_x, test_m = digit_canvases(images[8000:], labels[8000:], args.test, size=args.size, seed=2)
    train = segment.from_arrays(train_x, train_m, batch_size=args.batch_size, seed=0, num_classes=11)
    val = segment.from_arrays(val_x, val_m, batch_size=100, shuffle=False, num_classes=11)
    test = segment.from_arrays(test_x, test_m, batch_size=100, shuffle=False, num_classes=11)
    cpu = platform.processor() or platform.machine()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for head in args.heads.split(","):
            keras.utils.set_random_seed(0)
            stride = {"output_stride": args.deeplab_output_stride} if head == "deeplabv3" else {}
            model = segment.build(args.backbone, 11, head=head, weights=None, input_shape=shape, **stride)
            start = time.perf_counter()
            history = training.fit(model, train, val, epochs=args.epochs, learning_rate=args.learning_rate, seed=0,
                                   verbose=0)
            seconds = (time.perf_counter() - start) / args.epochs
            report = segment.evaluate(model, test, class_names=list(CLASS_NAMES))
            start = time.perf_counter()
            model.predict(test_x[:200].astype("float32") / 255.0, batch_size=100, verbose=0)
            keras_ms = (time.perf_counter() - start) / 200 * 1e3
            int8 = export.to_tflite(model, os.path.join(folder, f"{head}.tflite"), mode="int8",
                                    representative_data=train, verify_data=test)
            results[head] = (report["mean_iou"], model)
            print(json.dumps({
                "bench": "segmentation", "head": head, "backbone": args.backbone,
                "output_stride": model.feature_info[-1].reduction, "params": model.count_params(),
                "epochs": args.epochs, "train_canvases": args.train, "seconds_per_epoch": round(seconds, 1),
                "val_mean_iou": round(history.history["val_mean_iou"][-1], 4),
                "test_mean_iou": round(report["mean_iou"], 4), "test_pixel_accuracy": round(report["pixel_accuracy"], 4),
                "iou_per_class": {k: None if v is None else round(v, 3) for k, v in report["iou_per_class"].items()},
                "int8_mean_iou": int8["mean_iou"], "int8_pixel_agreement": int8["agreement"],
                "int8_mean_iou_vs_keras": int8["mean_iou_vs_keras"], "int8_bytes": int8["size_bytes"],
                "keras_ms_per_image_batch100": round(keras_ms, 3), "int8_ms_per_image": int8["latency_ms_median"],
                "cpu": cpu,
            }), flush=True)
    best = max(results, key=lambda head: results[head][0])
    print(json.dumps({"bench": "segmentation", "best_head": best, "best_test_mean_iou": round(results[best][0], 4),
                      "target": 0.80}), flush=True)
    if args.plot:
        segment.plot(results[best][1], test_x[:4], test_m[:4], args.plot, class_names=list(CLASS_NAMES))
        print(json.dumps({"bench": "segmentation", "picture": args.plot}), flush=True)


if __name__ == "__main__":
    main()
