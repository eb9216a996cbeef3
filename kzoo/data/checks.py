"""The contract for images and labels wherever they enter kzoo: checked once, the same way everywhere.

Images: float32 in [0, 1], or uint8 0-255 (scaled by 1/255). A whole NumPy
array of float pixels in 0-255 (`x.astype("float32")`) is scaled too, with
one logged line; any other float outside [0, 1], NaN or inf is refused.
Labels: integer class ids from 0 to `num_classes - 1`.
"""

from __future__ import annotations

import logging

import numpy as np

# Float images may overshoot [0, 1] by this much (resampling round-off); they are clipped.
RANGE_SLACK = 1e-3
_FIX = ("kzoo takes float images in [0, 1] or uint8 images 0-255: divide 0-255 floats by 255, "
        "or give them as uint8 (x.astype('uint8'))")


def unit_images(images, argument: str, *, whole: bool = True, keep_uint8: bool = False) -> np.ndarray:
    """Checks an image array and returns it as float32 in [0, 1] (or uint8, with `keep_uint8`).

    Args:
        images: (n, height, width, channels) or (height, width, channels) pixels.
        argument: How the user named this data (an argument or a flag), for messages.
        whole: The array is all the data. Only then are float values in
            0-255 recognised as 0-255 pixels and scaled (one logged line); a
            batch of a stream cannot tell, and is refused instead.
        keep_uint8: Return 0-255 pixels as uint8 (a pipeline caches them compactly).

    Raises:
        ValueError: For no images, a non-numeric array, NaN or inf, or
            values outside [0, 1] that are not 0-255 pixels; the message
            says what was seen and what to pass.
    """
    images = np.asarray(images)
    if images.size == 0:
        raise ValueError(f"{argument} is empty (shape {images.shape}); give at least one image.")
    if images.dtype == np.uint8:
        return images if keep_uint8 else images.astype(np.float32) / 255.0
    if images.dtype == bool or not np.issubdtype(images.dtype, np.number):
        raise ValueError(f"{argument} has dtype {images.dtype}; {_FIX}.")
    low, high = float(np.min(images)), float(np.max(images))
    if np.issubdtype(images.dtype, np.integer):
        if low < 0 or high > 255:
            raise ValueError(
                f"{argument} holds integers from {low:g} to {high:g}, outside 0-255 (a 16-bit or signed image?); "
                f"{_FIX}."
            )
        images = images.astype(np.uint8)
        return images if keep_uint8 else images.astype(np.float32) / 255.0
    if not np.isfinite(low) or not np.isfinite(high):
        raise ValueError(f"{argument} contains NaN or infinite values; remove or repair those images.")
    if low >= -RANGE_SLACK and high <= 1.0 + RANGE_SLACK:
        return np.clip(images, 0.0, 1.0).astype(np.float32)
    if whole and low >= 0 and 2.0 <= high <= 255.0:
        logging.getLogger("kzoo").warning(
            "%s: float pixels from %g to %g read as 0-255 and scaled by 1/255 to kzoo's [0, 1].", argument, low, high
        )
        return images.astype(np.float32) / 255.0
    raise ValueError(f"{argument} has float values from {low:g} to {high:g}, outside [0, 1]; {_FIX}."
                     + (" Normalised images (mean 0, std 1) must be given unnormalised: each kzoo model "
                        "normalises its own input." if low < 0 else ""))


def class_ids(labels, argument: str, *, num_classes: int | None = None, count: int | None = None) -> np.ndarray:
    """Checks labels and returns them as int32 class ids.

    Args:
        labels: Shape (n,) or (n, 1): integers, or floats with integer values.
        argument: How the user named the labels, for messages.
        num_classes: Ids must be below this, when given.
        count: The number of images the labels go with, when known.

    Raises:
        ValueError: For one-hot or other shapes, non-integer, negative or
            too large ids, or a count that differs from the images'.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        hint = " one-hot labels: pass labels.argmax(axis=1)." if labels.ndim == 2 else ""
        raise ValueError(f"{argument} has shape {labels.shape}; give one class id per image, shape (n,).{hint}")
    if count is not None and len(labels) != count:
        raise ValueError(f"{argument} has {len(labels)} labels for {count} images; give one label per image.")
    if labels.size == 0:
        raise ValueError(f"{argument} is empty; give one class id per image.")
    if not np.issubdtype(labels.dtype, np.number) or labels.dtype == bool:
        raise ValueError(f"{argument} has dtype {labels.dtype}; give integer class ids 0, 1, 2, ...")
    if np.issubdtype(labels.dtype, np.floating):
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            raise ValueError(
                f"{argument} has values that are not integers (e.g. {labels[bad][0].item()!r}); labels are class ids "
                "0, 1, 2, ... (probabilities or one-hot rows: pass labels.argmax(axis=1))."
            )
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise ValueError(f"{argument} has a negative class id ({low}); ids run from 0 to num_classes - 1.")
    if num_classes is not None and high >= num_classes:
        raise ValueError(
            f"{argument} has class id {high}, but there are num_classes={num_classes} (ids 0 to {num_classes - 1}); "
            "give the right num_classes, or build the model for more classes."
        )
    return labels.astype(np.int32)


def class_masks(masks, argument: str, *, num_classes: int | None = None, count: int | None = None,
                size: tuple | None = None, ignore_class: int | None = None) -> np.ndarray:
    """Checks segmentation masks and returns them as int32 class ids, shape (n, height, width).

    Args:
        masks: (n, height, width) or (n, height, width, 1) class ids per pixel.
        argument: How the user named the masks, for messages.
        num_classes: Ids must be below this (or equal `ignore_class`), when given.
        count: The number of images the masks go with, when known.
        size: The images' (height, width), which the masks must have, when known.
        ignore_class: An id that marks pixels without a label (e.g. 255), allowed beyond `num_classes`.

    Raises:
        ValueError: For another rank, size or count, non-integer or negative ids, or ids of no class.
    """
    masks = np.asarray(masks)
    if masks.ndim == 4 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    if masks.ndim != 3:
        hint = " They look like colour images: masks hold one class id per pixel." if masks.ndim == 4 else ""
        raise ValueError(f"{argument} has shape {masks.shape}; give one mask per image, (n, height, width) class "
                         f"ids.{hint}")
    if count is not None and len(masks) != count:
        raise ValueError(f"{argument} has {len(masks)} masks for {count} images; give one mask per image.")
    if size is not None and tuple(masks.shape[1:]) != tuple(size):
        raise ValueError(f"{argument} are {masks.shape[1]}x{masks.shape[2]} but the images are {size[0]}x{size[1]}: "
                         "give masks of the images' size (resize them with nearest-neighbour sampling, never "
                         "bilinear, which blends class ids).")
    if masks.size == 0:
        raise ValueError(f"{argument} is empty; give one mask per image.")
    if not np.issubdtype(masks.dtype, np.number) or masks.dtype == bool:
        raise ValueError(f"{argument} has dtype {masks.dtype}; give integer class ids 0, 1, 2, ... per pixel.")
    if np.issubdtype(masks.dtype, np.floating) and (~np.isfinite(masks) | (masks != np.round(masks))).any():
        raise ValueError(f"{argument} has values that are not integers; masks hold class ids per pixel (scores or "
                         "probabilities: pass their argmax over the classes).")
    labelled = masks if ignore_class is None else masks[masks != ignore_class]
    if labelled.size and int(labelled.min()) < 0:
        raise ValueError(f"{argument} has a negative class id ({int(labelled.min())}); ids run from 0 to "
                         "num_classes - 1.")
    if num_classes is not None and labelled.size and int(labelled.max()) >= num_classes:
        ignored = "" if ignore_class is None else f" and ignore_class={ignore_class}"
        raise ValueError(
            f"{argument} has class id {int(labelled.max())}, but there are num_classes={num_classes} (ids 0 to "
            f"{num_classes - 1}{ignored}): give the right num_classes, or mark unlabelled pixels with ignore_class."
        )
    return masks.astype(np.int32)


def image_label_arrays(images, labels, caller: str, *, num_classes: int | None = None,
                       ignore_class: int | None = None):
    """Checked `(images, labels)` arrays: images (n, height, width, channels) as `unit_images(keep_uint8=True)`.

    A (n, height, width) array gets one channel. Labels of rank 3 and more are
    segmentation masks (`class_masks`, with `ignore_class`). `caller` names the function for messages.

    Raises:
        ValueError: For no images, lengths that differ, a wrong rank, channels-first images, or bad values.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(
            f"{caller} needs images of shape (n, height, width[, channels]); got images {images.shape} "
            f"and labels {np.shape(labels)}."
        )
    if looks_channels_first(images.shape[1:]):
        raise ValueError(f"{caller} got images of shape {images.shape}, which look channels-first; kzoo "
                         "takes channels last: np.transpose(images, (0, 2, 3, 1)).")
    images = unit_images(images, "images", keep_uint8=True)
    if np.ndim(labels) >= 3:
        return images, class_masks(labels, "masks", num_classes=num_classes, count=len(images),
                                   size=images.shape[1:3], ignore_class=ignore_class)
    return images, class_ids(labels, "labels", num_classes=num_classes, count=len(images))


def looks_channels_first(image_shape) -> bool:
    """True for an image shape (height, width, channels) whose first axis looks like the channels."""
    return image_shape[0] in (1, 3) and image_shape[-1] not in (1, 3, 4)


def fits_model(image_shape, input_shape, argument: str) -> None:
    """Raises a ValueError when images of `image_shape` (height, width, channels) cannot feed a model input.

    A None in `input_shape` accepts any size there.
    """
    image_shape, input_shape = tuple(image_shape), tuple(input_shape)
    if len(image_shape) != 3 or len(input_shape) != 3:
        raise ValueError(f"{argument} has images of shape {image_shape}; the model takes {input_shape}.")
    channels, wanted = image_shape[-1], input_shape[-1]
    if channels is not None and wanted is not None and channels != wanted:
        if looks_channels_first(image_shape):
            fix = "they look channels-first: move the channels last, e.g. np.transpose(x, (0, 2, 3, 1))"
        elif channels == 1 and wanted == 3:
            fix = "convert grey to RGB (tf.image.grayscale_to_rgb), or build the model with input_shape=(..., 1)"
        else:
            fix = f"give {wanted}-channel images, or build the model with input_shape=(..., {channels})"
        raise ValueError(f"{argument} has {channels}-channel images {image_shape}; the model takes {wanted}-channel "
                         f"images {input_shape}: {fix}.")
    for have, want in zip(image_shape[:2], input_shape[:2]):
        if have is not None and want is not None and have != want:
            raise ValueError(
                f"{argument} has images of shape {image_shape}, the model takes {input_shape}: resize them "
                "(e.g. kzoo.data.load(..., image_size=...)) or use a model built for that size."
            )


def is_array_pair(data) -> bool:
    """True for a tuple `(images, labels)` of NumPy arrays, the form `fit`, `evaluate` and friends take besides datasets."""
    return isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], np.ndarray)


def batches(data, argument: str, *, num_classes: int | None = None, masks: bool | str = False,
            ignore_class: int | None = None):
    """Yields `(images, labels)` NumPy batches, images float32 in [0, 1], labels int ids or None.

    Args:
        data: A dataset or iterable of image batches or `(images, labels)`
            batches, a tuple `(images, labels)` of arrays, or an image array
            (taken whole: 0-255 floats are scaled, see `unit_images`).
            One-hot labels become class ids.
        argument: How the user named the data, for messages.
        num_classes: Label ids must be below it, when given.
        masks: The labels are segmentation masks (`class_masks`), of the images' size;
            "auto": labels of rank 3 and more are.
        ignore_class: With masks: the id of unlabelled pixels.

    Raises:
        ValueError: As `unit_images` and `class_ids` (`class_masks`), for the first bad batch.
    """

    def checked_labels(labels, images):
        if masks is True or (masks == "auto" and np.ndim(labels) >= 3):
            return class_masks(labels, f"{argument}'s masks", num_classes=num_classes, count=len(images),
                               size=images.shape[1:3], ignore_class=ignore_class)
        return class_ids(top_class(labels), f"{argument}'s labels", num_classes=num_classes, count=len(images))

    if isinstance(data, np.ndarray):
        yield unit_images(data, argument), None
        return
    if is_array_pair(data):
        images = unit_images(data[0], argument)
        yield images, checked_labels(data[1], images)
        return
    for batch in data:
        images, labels = batch[:2] if isinstance(batch, (tuple, list)) else (batch, None)
        images = unit_images(images, argument, whole=False)
        yield images, None if labels is None else checked_labels(labels, images)


def top_class(labels) -> np.ndarray:
    """Labels as NumPy class ids: one-hot or mixed (MixUp/CutMix) rows become their top class."""
    labels = np.asarray(labels)
    return labels.argmax(axis=1) if labels.ndim == 2 and labels.shape[1] > 1 else labels


def checked_in_graph(image, label, num_classes: int | None, ignore_class: int | None = None):
    """Inside a tf.data map: fails the pipeline with a clear message on a bad image or label (or mask).

    A pipeline cannot look at all its data up front, so the check runs per
    element (before the cache: once). uint8 images need no range check; a
    mask's `ignore_class` pixels may lie beyond `num_classes`.
    """
    import tensorflow as tf  # Only tf.data pipelines call this; the rest of the module is NumPy.

    checks = []
    if image.dtype.is_floating:
        low, high = tf.reduce_min(image), tf.reduce_max(image)
        checks.append(tf.debugging.Assert(
            tf.logical_and(low >= -RANGE_SLACK, high <= 1.0 + RANGE_SLACK),
            [f"kzoo: a float image in the dataset is outside [0, 1] (or NaN); {_FIX}. Its min and max:", low, high],
        ))
    if label.dtype.is_floating:
        checks.append(tf.debugging.Assert(
            tf.reduce_all(tf.equal(label, tf.round(label))),
            ["kzoo: a label in the dataset is not an integer class id:", label],
        ))
    label = tf.cast(label, tf.int32)
    valid = (label >= 0) if num_classes is None else (label >= 0) & (label < num_classes)
    if ignore_class is not None:
        valid |= tf.equal(label, ignore_class)
    top = "num_classes - 1" if num_classes is None else num_classes - 1
    ignored = "" if ignore_class is None else f" (or ignore_class={ignore_class})"
    checks.append(tf.debugging.Assert(
        tf.reduce_all(valid),
        [f"kzoo: a {'mask' if label.shape.rank else 'label'} in the dataset is outside 0 to {top}{ignored}; give "
         "the right num_classes" + (", or mark unlabelled pixels with ignore_class" if label.shape.rank else "")
         + ". Its ids:",
         tf.unique(tf.reshape(label, [-1]))[0]],
    ))
    with tf.control_dependencies(checks):
        return tf.identity(image), tf.identity(label)


__all__ = ["batches", "checked_in_graph", "class_ids", "class_masks", "fits_model", "image_label_arrays", "is_array_pair",
           "looks_channels_first", "top_class", "unit_images"]
