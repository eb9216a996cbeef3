"""MVTec AD's folder layout, loaded in one call: `train/good`, `test/<defect>`, `ground_truth/<defect>/*_mask.png`."""

from __future__ import annotations

import os

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def load_mvtec(category_dir: str, *, image_size: int = 224, channels: int = 3) -> dict:
    """One MVTec AD category (or any folder laid out the same way) as arrays.

    Args:
        category_dir: The category's folder, e.g. `mvtec_anomaly_detection/bottle`.
        image_size: Images and masks are resized to this square size (masks
            nearest-neighbour, so they stay binary).
        channels: 3 (RGB; grey categories are repeated) or 1.

    Returns:
        `{"train": (n, S, S, C) float32 in [0, 1], "test": (m, S, S, C),
        "test_labels": (m,) 1 = defect, "test_masks": (m, S, S) 0/1,
        "test_defects": (m,) defect type names ("good" for normal)}`.

    Raises:
        FileNotFoundError: For a folder without `train/good` or `test`; the
            message shows the layout expected.
    """
    train_dir, test_dir = os.path.join(category_dir, "train", "good"), os.path.join(category_dir, "test")
    if not (os.path.isdir(train_dir) and os.path.isdir(test_dir)):
        raise FileNotFoundError(
            f"{category_dir!r} is not laid out as an MVTec AD category: it needs train/good/*.png (normal images), "
            "test/<defect or good>/*.png and, for pixel metrics, ground_truth/<defect>/<name>_mask.png."
        )
    train = np.stack([_read(path, image_size, channels) for path in _images(train_dir)])
    test, labels, masks, defects = [], [], [], []
    for defect in sorted(os.listdir(test_dir)):
        folder = os.path.join(test_dir, defect)
        if not os.path.isdir(folder):
            continue
        for path in _images(folder):
            test.append(_read(path, image_size, channels))
            labels.append(int(defect != "good"))
            defects.append(defect)
            stem = os.path.splitext(os.path.basename(path))[0]
            mask_path = os.path.join(category_dir, "ground_truth", defect, f"{stem}_mask.png")
            if defect != "good" and os.path.exists(mask_path):
                masks.append((_read(mask_path, image_size, 1, nearest=True)[..., 0] > 0.5).astype("uint8"))
            else:
                masks.append(np.zeros((image_size, image_size), "uint8"))
    if not test:
        raise FileNotFoundError(f"{test_dir!r} holds no images in sub-folders (test/good, test/<defect>).")
    return {"train": train, "test": np.stack(test), "test_labels": np.array(labels, "int32"),
            "test_masks": np.stack(masks), "test_defects": np.array(defects)}


def _images(folder):
    names = sorted(name for name in os.listdir(folder) if name.lower().endswith(IMAGE_SUFFIXES))
    return [os.path.join(folder, name) for name in names]


def _read(path, size, channels, nearest=False):
    import tensorflow as tf

    image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
    image = tf.image.resize(image, (size, size), method="nearest" if nearest else "bilinear")
    return np.clip(image.numpy() / 255.0, 0, 1).astype("float32")
