"""Anomaly detection on data that is here: one-class MNIST, textures with planted defects, and the coreset's cost.

ImageNet weights cannot be downloaded on this machine, so every figure names
its backbone:
- (a) `mnist`: PANDA's one-class protocol on MNIST's t10k file. For each digit
  k, fit on the k's among the first 8,000 images (at most --per-digit of
  them), score the last 2,000 (k normal, the rest anomalous): image AUROC per
  digit and the mean, for KNN, PatchCore and PaDiM, with resnet20 trained on
  scikit-learn's digits (another source of the same classes, as ImageNet is
  for CIFAR) and with random weights.
- (b) `textures`: 64x64 crops of scikit-image's texture photographs (brick,
  grass, gravel) with defects pasted in (scratches, blobs, patches of another
  texture) and their masks: image and pixel AUROC per texture, and the
  largest difference between the exported float32 .tflite's scores and the
  in-memory ones.
- (c) `cost`: on the brick texture at 64x64 and 128x128, PatchCore's fit
  time, bank size, image AUROC and predict ms/image with coreset 1.0, 0.1 and 0.01.

One JSON object per result line. Needs scikit-image for (b) and (c) (a bench-only
dependency): pip install scikit-image.

    python bench/anomaly.py [--parts mnist,textures,cost] [--per-digit 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST = os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist")
METHODS = ("knn", "patchcore", "padim")


def emit(**row):
    print(json.dumps({"bench": "anomaly", "cpu": platform.processor() or platform.machine(), **row}), flush=True)


def detector(method, backbone, weights, size, seed=0, **options):
    from kzoo import anomaly

    if method == "knn":
        return anomaly.KNN(backbone, weights=weights, image_size=size, seed=seed, **options)
    if method == "patchcore":
        stages = options.pop("stages", (1, 2))
        return anomaly.PatchCore(backbone, weights=weights, image_size=size, stages=stages, seed=seed, **options)
    return anomaly.PaDiM(backbone, weights=weights, image_size=size, stages=options.pop("stages", (0, 1, 2)),
                         seed=seed, **options)


def digits_backbone(folder: str) -> str:
    """resnet20 trained on scikit-learn's digits (28x28 grey), saved without its classifier; returns the file."""
    import kzoo
    from kzoo import data, training

    train = data.load("digits", "train", batch_size=64, seed=0)
    val = data.load("digits", "test", batch_size=120, shuffle=False)
    model = kzoo.resnet20(input_shape=(28, 28, 1), num_classes=10)
    history = training.fit(model, train, val, epochs=15, learning_rate=0.05, seed=0, verbose=0)
    backbone = kzoo.resnet20(input_shape=(28, 28, 1), include_top=False)
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    path = os.path.join(folder, "resnet20_digits.weights.h5")
    backbone.save_weights(path)
    emit(part="mnist", backbone_training="resnet20 on scikit-learn's digits, 15 epochs",
         val_accuracy=round(float(history.history["val_accuracy"][-1]), 4))
    return path


def one_class_mnist(per_digit: int):
    from sklearn.metrics import roc_auc_score

    from kzoo.data import read_idx

    images = read_idx(os.path.join(MNIST, "t10k-images-idx3-ubyte.gz")).astype("float32")[..., None] / 255.0
    labels = read_idx(os.path.join(MNIST, "t10k-labels-idx1-ubyte.gz")).astype("int64")
    train_x, train_y, test_x, test_y = images[:8000], labels[:8000], images[8000:], labels[8000:]
    with tempfile.TemporaryDirectory() as folder:
        backbones = {"resnet20 (scikit-learn digits)": digits_backbone(folder), "resnet20 (random)": None}
        for backbone_name, weights in backbones.items():
            for method in METHODS:
                aurocs, start = [], time.perf_counter()
                for digit in range(10):
                    normal = train_x[train_y == digit][:per_digit]
                    options = {"knn": {}, "patchcore": dict(stages=(1, 2), coreset_ratio=0.1),
                               "padim": dict(stages=(0, 1, 2))}[method]
                    det = detector(method, "resnet20", weights, 28, input_channels=1, batch_size=64, **options)
                    det.fit(normal)
                    scores = det.predict(test_x)["scores"]  # Before a threshold: the raw scores.
                    aurocs.append(float(roc_auc_score((test_y != digit).astype(int), scores)))
                emit(part="mnist", backbone=backbone_name, method=method, per_digit_train=per_digit,
                     auroc_per_digit=[round(a, 4) for a in aurocs], mean_auroc=round(float(np.mean(aurocs)), 4),
                     seconds=round(time.perf_counter() - start, 1))


def texture_set(name, seed, size=64, count=(40, 20, 20)):
    """Normal crops of one texture for fitting and testing, and test crops with pasted defects and masks."""
    from skimage import data as samples

    textures = {"brick": samples.brick(), "grass": samples.grass(), "gravel": samples.gravel()}
    source = textures[name].astype("float32") / 255.0
    other = textures["gravel" if name != "gravel" else "brick"].astype("float32") / 255.0
    rng = np.random.default_rng(seed)

    def crops(image, n):
        tops, lefts = rng.integers(0, image.shape[0] - size, n), rng.integers(0, image.shape[1] - size, n)
        return np.stack([np.repeat(image[t:t + size, l:l + size, None], 3, axis=2) for t, l in zip(tops, lefts)])

    train, normal_test, defective = crops(source, count[0]), crops(source, count[1]), crops(source, count[2])
    masks = np.zeros(defective.shape[:3], "uint8")
    y, x = np.mgrid[0:size, 0:size]
    for index, image in enumerate(defective):
        kind = index % 3
        if kind == 0:  # A scratch: a thin dark line at a random angle.
            angle, offset = rng.uniform(0, np.pi), rng.uniform(-10, 10)
            mask = np.abs((x - size / 2) * np.sin(angle) - (y - size / 2) * np.cos(angle) - offset) < 1.5
            image[mask] *= 0.2
        elif kind == 1:  # A blob: a bright disc.
            cy, cx, r = *rng.integers(12, size - 12, 2), rng.integers(5, 9)
            mask = (y - cy) ** 2 + (x - cx) ** 2 < r ** 2
            image[mask] = np.clip(image[mask] + 0.5, 0, 1)
        else:  # A patch of another texture.
            top, left = rng.integers(4, size - 20, 2)
            mask = np.zeros((size, size), bool)
            mask[top:top + 16, left:left + 16] = True
            image[mask] = crops(other, 1)[0][mask]
        masks[index] = mask
    test = np.concatenate([normal_test, defective])
    labels = np.array([0] * len(normal_test) + [1] * len(defective))
    all_masks = np.concatenate([np.zeros(normal_test.shape[:3], "uint8"), masks])
    return train, test, labels, all_masks


def textures_part():
    from kzoo import anomaly

    for name in ("brick", "grass", "gravel"):
        train, test, labels, masks = texture_set(name, seed=0)
        for method in METHODS:
            det = detector(method, "resnet18", None, 64, coreset_ratio=0.1) if method == "patchcore" else \
                detector(method, "resnet18", None, 64)
            det.fit(train)
            half = np.arange(len(test)) % 2 == 0  # Threshold on even images, measure on odd ones.
            det.set_threshold(test[half], labels[half])
            report = anomaly.evaluate(det, test[~half], labels[~half], masks=masks[~half])
            row = dict(part="textures", texture=name, backbone="resnet18 (random weights)", method=method,
                       image_auroc=round(report["image_auroc"], 4), f1=report["f1"],
                       pixel_auroc=None if report["pixel_auroc"] is None else round(report["pixel_auroc"], 4))
            if method == "patchcore":
                with tempfile.TemporaryDirectory() as folder:
                    exported = anomaly.export_tflite(det, os.path.join(folder, "d.tflite"), check_images=test[:10])
                row["tflite_float32_max_abs_diff"] = exported["max_abs_diff"]
            emit(**row)


def cost_part():
    for size in (64, 128):
        cost_rows(size)


def cost_rows(size):
    from sklearn.metrics import roc_auc_score

    train, test, labels, _ = texture_set("brick", seed=1, size=size, count=(80, 20, 20))
    for ratio in (1.0, 0.1, 0.01):
        det = detector("patchcore", "resnet18", None, size, coreset_ratio=ratio, batch_size=2)
        start = time.perf_counter()
        det.fit(train)
        fit_s = time.perf_counter() - start
        det.predict(test[:4])  # Warm-up: graph tracing.
        start = time.perf_counter()
        scores = det.predict(test)["scores"]
        predict_ms = (time.perf_counter() - start) / len(test) * 1e3
        bank = det.model.get_layer("nearest_neighbour").bank.shape
        emit(part="cost", backbone="resnet18 (random weights)", texture="brick", image_size=size, coreset_ratio=ratio,
             train_images=len(train), bank_size=int(bank[0]), feature_dim=int(bank[1]),
             fit_s=round(fit_s, 2), predict_ms_per_image=round(predict_ms, 2),
             image_auroc=round(float(roc_auc_score(labels, scores)), 4))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="mnist,textures,cost")
    parser.add_argument("--per-digit", type=int, default=300, help="normal training images per digit in (a)")
    args = parser.parse_args()
    import keras

    keras.utils.set_random_seed(0)
    parts = args.parts.split(",")
    if "textures" in parts:
        textures_part()
    if "cost" in parts:
        cost_part()
    if "mnist" in parts:
        one_class_mnist(args.per_digit)


if __name__ == "__main__":
    main()
