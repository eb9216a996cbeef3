"""Segmentation figures: the per-pixel confusion matrix, IoU per class, mean IoU, pixel accuracy; coloured pictures.

NumPy only, so that `kzoo.export` verifies a `.tflite` file with the same
definitions as `evaluate` measures a Keras model: IoU = TP / (TP + FP + FN)
per class, the mean over the classes that occur in the truth or the
predictions (Keras' `MeanIoU` skips those that do neither), pixels of
`ignore_class` left out.
"""

from __future__ import annotations

import numpy as np

from kzoo.data import checks


def confusion_matrix(truth, predicted, num_classes: int, ignore_class: int | None = None) -> np.ndarray:
    """Pixel counts: rows the true class, columns the predicted one (`np.bincount`, which is exact and fast)."""
    truth, predicted = np.asarray(truth).ravel(), np.asarray(predicted).ravel()
    if ignore_class is not None:
        keep = truth != ignore_class
        truth, predicted = truth[keep], predicted[keep]
    return np.bincount(truth.astype(np.int64) * num_classes + predicted, minlength=num_classes ** 2).reshape(
        num_classes, num_classes)


def scores(confusion, class_names=None) -> dict:
    """`{"mean_iou", "pixel_accuracy", "iou_per_class"}` from a confusion matrix; a class that occurs nowhere
    has IoU None and is left out of the mean."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
    iou = np.where(union > 0, true_positive / np.maximum(union, 1), np.nan)
    names = class_names or [str(i) for i in range(len(confusion))]
    return {
        "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
        "pixel_accuracy": float(true_positive.sum() / max(confusion.sum(), 1)),
        "iou_per_class": {name: (None if np.isnan(value) else float(value)) for name, value in zip(names, iou)},
    }


def predict_masks(model, images) -> np.ndarray:
    """The top class per pixel, (batch, height, width) int32."""
    import keras  # Only here: the figures above are NumPy and serve `kzoo.export` too.

    return keras.ops.convert_to_numpy(model(images, training=False)).argmax(-1).astype(np.int32)


def evaluate(model, data, *, ignore_class: int | None = None, class_names=None) -> dict:
    """Mean IoU, pixel accuracy and IoU per class of a segmentation model on `(images, masks)` data.

    Args:
        model: A model with per-pixel outputs (batch, height, width, classes).
        data: Batched `(images, masks)` (a `kzoo.segment` pipeline, any
            iterable of batches) or a tuple of arrays.
        ignore_class: Masks' id of unlabelled pixels; default the pipeline's `ignore_class`.
        class_names: Names for `iou_per_class`; default the data's `class_names`.

    Returns:
        `{"mean_iou", "pixel_accuracy", "iou_per_class", "confusion_matrix", "num_images"}`.

    Raises:
        ValueError: For images that do not fit the model, masks of another size, or ids beyond its classes.
    """
    num_classes = model.outputs[0].shape[-1]
    ignore_class = getattr(data, "ignore_class", None) if ignore_class is None else ignore_class
    confusion, count = np.zeros((num_classes, num_classes), dtype=np.int64), 0
    for images, masks in checks.batches(data, "data", num_classes=num_classes, masks=True, ignore_class=ignore_class):
        checks.fits_model(images.shape[1:], model.inputs[0].shape[1:], "data")
        if masks is None:
            raise ValueError("segment.evaluate needs (images, masks) batches; this data has images only.")
        confusion += confusion_matrix(masks, predict_masks(model, images), num_classes, ignore_class)
        count += len(images)
    return {**scores(confusion, class_names or getattr(data, "class_names", None)),
            "confusion_matrix": confusion.tolist(), "num_images": count}


def palette(num_colours: int = 256) -> np.ndarray:
    """PASCAL VOC's colour map (class 0 black), uint8 (num_colours, 3): distinct colours for any class count."""
    colours = np.zeros((num_colours, 3), dtype=np.uint8)
    for index in range(num_colours):
        value, shift = index, 7
        while value:
            for channel in range(3):
                colours[index, channel] |= ((value >> channel) & 1) << shift
            value >>= 3
            shift -= 1
    return colours


def colour_masks(masks, ignore_class: int | None = None) -> np.ndarray:
    """Masks of class ids as RGB uint8 images (VOC's colours; `ignore_class` pixels white)."""
    masks = np.asarray(masks).astype(np.int64)
    colours = palette(max(256, int(masks.max()) + 1))[np.clip(masks, 0, None)]
    if ignore_class is not None:
        colours[masks == ignore_class] = 255
    return colours


def plot(model, images, masks, path: str, *, class_names=None, ignore_class: int | None = None,
         max_images: int = 4) -> str:
    """Writes image | truth | prediction rows, the masks coloured, as a PNG; returns the path.

    Args:
        model: A segmentation model.
        images, masks: Arrays (or a batch), images in [0, 1] or uint8.
        path: Where the PNG goes (written atomically).
        class_names: A legend of the classes that occur.
        ignore_class: Drawn white in the truth.
        max_images: Rows at most.

    Raises:
        kzoo._io.PlottingUnavailableError (an ImportError): Without matplotlib.
    """
    from kzoo._io import pyplot, save_figure

    plt = pyplot("segment.plot")
    images = checks.unit_images(np.asarray(images)[:max_images], "images")
    masks = checks.class_masks(np.asarray(masks)[:max_images], "masks", count=len(images), size=images.shape[1:3])
    predicted = predict_masks(model, images)
    figure, axes = plt.subplots(len(images), 3, figsize=(7.5, 2.5 * len(images)), squeeze=False)
    for row, (image, truth, guess) in enumerate(zip(images, masks, predicted)):
        panels = (image.squeeze(), colour_masks(truth, ignore_class), colour_masks(guess))
        for column, (axis, panel, title) in enumerate(zip(axes[row], panels, ("image", "truth", "prediction"))):
            axis.imshow(panel, cmap="gray" if panel.ndim == 2 else None)
            axis.set_title(title if row == 0 else "")
            axis.axis("off")
    if class_names:
        from matplotlib.patches import Patch

        present = sorted(set(np.unique(masks)) | set(np.unique(predicted)))
        colours = palette(max(256, len(class_names)))
        handles = [Patch(color=colours[i] / 255, label=class_names[i]) for i in present if i < len(class_names)]
        figure.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=7)
    figure.tight_layout(rect=(0, 0.05 if class_names else 0, 1, 1))
    save_figure(figure, path)
    plt.close(figure)
    return path
