"""Segmentation data: `(image, mask)` tf.data pipelines from TFDS, two folders or arrays, with joint augmentation.

Every source goes through `pipeline`, in the classification pipeline's order:
decode and resize (images bilinear, masks nearest-neighbour), check, cache,
shuffle, batch, augment image and mask together, prefetch. Batches are
float32 images in [0, 1] and int32 masks (batch, height, width).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from kzoo.data import augment as augment_lib
from kzoo.data import checks
from kzoo.data.datasets import AUTOTUNE, _tfds_split, resized, staged
from kzoo.data.folders import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class SegmentationDataset:
    """A TFDS dataset with segmentation masks: where the mask is, how its ids map to classes."""

    mask_key: str
    class_names: tuple[str, ...]
    offset: int = 0  # Added to the stored ids.


DATASETS = {
    # Stored ids 1 (pet), 2 (background), 3 (outline); keras.io's example subtracts 1.
    "oxford_iiit_pet": SegmentationDataset("segmentation_mask", ("pet", "background", "outline"), offset=-1),
}


class SegmentAugment:
    """Random geometry applied to images and masks alike (masks resampled nearest-neighbour), colour to images.

    Built from Keras' image layers, which move `segmentation_masks` with the
    images (and run inside tf.data on every backend).

    Args:
        flip: Mirror half of the images left-right.
        zoom: Zoom in or out by up to this fraction (0.25: 75% to 125%).
        translate: Shift by up to this fraction of the height and width.
        rotate: Rotate by up to this fraction of a full turn (0.05: 18 degrees).
        brightness, contrast: Colour changes of up to this much (images only).
        seed: Makes the draws repeat.
    """

    def __init__(self, *, flip: bool = True, zoom: float = 0.25, translate: float = 0.1, rotate: float = 0.0,
                 brightness: float = 0.1, contrast: float = 0.1, seed: int | None = None):
        L = keras.layers
        seeds = iter(range(seed, seed + 8)) if seed is not None else iter([None] * 8)
        self.geometry = [layer for layer, wanted in (
            (L.RandomFlip("horizontal", seed=next(seeds)), flip),
            (L.RandomZoom((-zoom, zoom), seed=next(seeds)), zoom),
            (L.RandomTranslation(translate, translate, seed=next(seeds)), translate),
            (L.RandomRotation(rotate, seed=next(seeds)), rotate),
        ) if wanted]
        self.colour = [layer for layer, wanted in (
            (L.RandomBrightness(brightness, value_range=(0.0, 1.0), seed=next(seeds)), brightness),
            (L.RandomContrast(contrast, value_range=(0.0, 1.0), seed=next(seeds)), contrast),
        ) if wanted]

    def __call__(self, images, masks):
        data = {"images": images, "segmentation_masks": tf.cast(masks[..., None], tf.float32)}
        for layer in self.geometry:
            data = layer(data, training=True)
        images = data["images"]
        for layer in self.colour:
            images = layer(images, training=True)
        masks = tf.cast(tf.round(data["segmentation_masks"][..., 0]), tf.int32)
        return tf.clip_by_value(images, 0.0, 1.0), masks

    def __repr__(self):
        return f"SegmentAugment({[type(layer).__name__ for layer in self.geometry + self.colour]})"


def get_augment(augment, seed=None):
    """None, True / "default" (a `SegmentAugment`), a `SegmentAugment`, or a callable on `(images, masks)`."""
    if augment is None or augment is False:
        return None
    if augment is True or augment == "default":
        return SegmentAugment(seed=seed)
    if callable(augment) and not isinstance(augment, str):
        return augment
    raise ValueError(f"augment={augment!r} is not None, True, 'default', a kzoo.segment.SegmentAugment or a "
                     "function of (images, masks) batches; classification presets would move the images only.")


def load(
    name: str,
    split: str = "train",
    *,
    image_size: int | tuple[int, int] = 128,
    batch_size: int = 16,
    augment=None,
    shuffle: bool = True,
    cache: bool | str = True,
    data_dir: str | None = None,
    seed: int | None = None,
    download: bool = True,
    num_classes: int | None = None,
    ignore_class: int | None = None,
    mask_key: str | None = None,
) -> tf.data.Dataset:
    """A TFDS dataset with segmentation masks as a pipeline of `(images, masks)` batches.

    Args:
        name: "oxford_iiit_pet" (keras.io's example: 3 classes, pet / background
            / outline) or any TFDS dataset with an image and a mask feature.
        split: A TFDS split ("train", "test", "train[:90%]").
        image_size: Images and masks are resized to this.
        mask_key: The mask feature of another dataset (default: the feature whose name has "mask").
        num_classes: Needed for datasets other than those in `DATASETS`.
        ignore_class: The id of unlabelled pixels, if any (e.g. 255).
        Others: as in `pipeline` and `kzoo.data.load`.

    Raises:
        kzoo.data.DatasetUnavailableError: If it is neither prepared in `data_dir` nor downloadable.
        ValueError: For a dataset without a mask feature, or without `num_classes`.
    """
    info = DATASETS.get(name)
    dataset, builder = _tfds_split(name, split, data_dir, download, shuffle and seed is None, as_supervised=False)
    features = builder.info.features
    mask_key = mask_key or (info.mask_key if info else next((k for k in features if "mask" in k), None))
    if mask_key not in features:
        raise ValueError(f"{name} has no mask feature {mask_key!r}; its features: {', '.join(features)}. Pass "
                         "mask_key= naming the per-pixel labels.")
    if info is None and num_classes is None:
        raise ValueError(f"num_classes= is needed for {name}: kzoo knows the classes of {', '.join(DATASETS)} only.")
    offset = info.offset if info else 0
    dataset = dataset.map(lambda example: (example["image"], tf.cast(example[mask_key], tf.int32) + offset),
                          num_parallel_calls=AUTOTUNE)
    dataset = pipeline(dataset, batch_size=batch_size, image_size=image_size, augment=augment, shuffle=shuffle,
                       cache=cache, seed=seed, num_classes=num_classes or len(info.class_names),
                       ignore_class=ignore_class)
    dataset.class_names = list(info.class_names) if info else [str(i) for i in range(num_classes)]
    return dataset


def from_arrays(images, masks, *, batch_size: int = 16, image_size=None, augment=None, shuffle: bool = True,
                cache: bool | str = True, seed: int | None = None, num_classes: int | None = None,
                ignore_class: int | None = None) -> tf.data.Dataset:
    """A pipeline over arrays of images (n, height, width[, channels]) and masks (n, height, width).

    Images as `kzoo.data.from_arrays` takes them; masks hold class ids below
    `num_classes` (default: the largest id + 1), or `ignore_class`.

    Raises:
        ValueError: For masks of another size or count than the images, or ids of no class.
    """
    images, masks = checks.image_label_arrays(images, masks, "segment.from_arrays", num_classes=num_classes,
                                              ignore_class=ignore_class)
    if masks.ndim != 3:
        raise ValueError(f"segment.from_arrays needs masks of shape (n, height, width); got {masks.shape}. For "
                         "one class per image use kzoo.data.from_arrays.")
    if num_classes is None:
        labelled = masks if ignore_class is None else masks[masks != ignore_class]
        num_classes = int(labelled.max()) + 1
    return pipeline(tf.data.Dataset.from_tensor_slices((images, masks)), batch_size=batch_size,
                    image_size=image_size, augment=augment, shuffle=shuffle, cache=cache, seed=seed,
                    num_classes=num_classes, ignore_class=ignore_class)


def from_directory(images: str, masks: str, *, num_classes: int, image_size=256, batch_size: int = 16,
                   augment=None, shuffle: bool = True, cache: bool | str = True, seed: int | None = None,
                   ignore_class: int | None = None, validation_split: float | None = None,
                   test_split: float | None = None, subset: str | None = None) -> tf.data.Dataset:
    """A pipeline over a folder of images and a folder of masks, paired by file name (without extension).

    Masks are single-channel images (PNG) whose pixel values are class ids.
    A palette PNG (such as PASCAL VOC's) decodes to colours, not ids, and is
    refused: convert it with `np.array(PIL.Image.open(path))` and save as grey.

    Args:
        validation_split, test_split: Fractions of the pairs held out as the
            "validation" and "test" subsets, chosen by `seed` alone (0 when None),
            so that separate calls agree and never share a file.
        subset: "training", "validation" or "test"; needed with a split.
        Others: as in `pipeline`.

    Raises:
        ValueError: For a folder without images, an image without a mask, or a bad split.
    """
    image_files = _images_in(images, "images")
    mask_files = {os.path.splitext(name)[0]: name for name in _images_in(masks, "masks")}
    missing = [name for name in image_files if os.path.splitext(name)[0] not in mask_files]
    if missing:
        raise ValueError(f"segment.from_directory: {len(missing)} images in {images!r} have no mask of the same "
                         f"name in {masks!r}, e.g. {missing[0]!r}. Give each image a mask (any image extension).")
    image_files = _subset(image_files, validation_split, test_split, subset, seed if seed is not None else 0)
    pairs = tf.data.Dataset.from_tensor_slices((
        [os.path.join(images, name) for name in image_files],
        [os.path.join(masks, mask_files[os.path.splitext(name)[0]]) for name in image_files],
    ))
    if shuffle:  # Files mixed before the cache, so the shuffle buffer need not hold the whole folder.
        pairs = pairs.shuffle(len(image_files), seed=seed if seed is not None else 0, reshuffle_each_iteration=False)

    def read(image_file, mask_file):
        image = tf.io.decode_image(tf.io.read_file(image_file), channels=3, expand_animations=False)
        mask = tf.io.decode_image(tf.io.read_file(mask_file), expand_animations=False)
        one_channel = tf.debugging.assert_equal(
            tf.shape(mask)[-1], 1, message="kzoo: a mask has several channels (a colour or palette PNG?); masks must "
            "be single-channel images whose pixel values are class ids")
        with tf.control_dependencies([one_channel]):
            return image, tf.cast(mask[..., 0], tf.int32)

    dataset = pairs.map(read, num_parallel_calls=AUTOTUNE)
    return pipeline(dataset, batch_size=batch_size, image_size=image_size, augment=augment, shuffle=shuffle,
                    cache=cache, seed=seed, num_classes=num_classes, ignore_class=ignore_class)


def _subset(files, validation_split, test_split, subset, seed):
    """The files of one subset of a seeded split (all of them without a split)."""
    splits = {"validation": validation_split or 0.0, "test": test_split or 0.0}
    if not any(splits.values()):
        if subset is not None:
            raise ValueError(f"subset={subset!r} needs validation_split= or test_split=.")
        return files
    if subset not in ("training", "validation", "test"):
        raise ValueError(f"subset={subset!r}: with a split, give subset='training', 'validation' or 'test'.")
    if any(not 0 <= value < 1 for value in splits.values()) or sum(splits.values()) >= 1:
        raise ValueError(f"validation_split={validation_split}, test_split={test_split} must be fractions in [0, 1) "
                         "that leave images to train on.")
    order = np.random.default_rng(seed).permutation(len(files))
    cut_validation = round(len(files) * splits["validation"])
    cut_test = cut_validation + round(len(files) * splits["test"])
    chosen = {"validation": order[:cut_validation], "test": order[cut_validation:cut_test],
              "training": order[cut_test:]}[subset]
    if len(chosen) == 0:
        raise ValueError(f"the {subset} subset of {len(files)} pairs is empty; give a larger split or more images.")
    return [files[i] for i in sorted(chosen)]


def _images_in(folder: str, what: str) -> list[str]:
    if not os.path.isdir(folder):
        raise ValueError(f"segment.from_directory: {what}={folder!r} is not a folder.")
    files = sorted(name for name in os.listdir(folder) if name.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise ValueError(f"segment.from_directory: {folder!r} has no images ({', '.join(IMAGE_EXTENSIONS)}).")
    return files


def pipeline(dataset: tf.data.Dataset, *, batch_size: int, image_size=None, augment=None, shuffle: bool = True,
             cache: bool | str = True, seed: int | None = None, num_classes: int | None = None,
             ignore_class: int | None = None, shuffle_buffer: int = 2_000) -> tf.data.Dataset:
    """The shared order: resize (masks nearest-neighbour), check, cache, shuffle, batch, augment, prefetch.

    Args:
        dataset: Unbatched `(image, mask)` elements: images uint8 0-255 or
            float in [0, 1], masks (height, width) or (height, width, 1) class ids.
        image_size: Resize both to this (int or (height, width)); images of
            varying size need it.
        augment: None, True (`SegmentAugment()`), a `SegmentAugment`, or a
            callable on `(images, masks)` batches.
        num_classes: Mask ids must be below it (or equal `ignore_class`).
        ignore_class: The id of unlabelled pixels; kept through augmentation, left out by loss and metrics.
        Others: as in `kzoo.data.pipeline`.

    Returns:
        The dataset, with `num_classes` and `ignore_class` attributes for `fit`.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    batch_augment = get_augment(augment, seed)
    small_ids = (num_classes or 0) <= 256 and (ignore_class is None or 0 <= ignore_class <= 255)

    def decode(image, mask):
        if mask.shape.rank == 3:
            mask = mask[..., 0]
        if size is not None:
            mask = tf.image.resize(mask[..., None], size, method="nearest")[..., 0]
        image, mask = checks.checked_in_graph(resized(image, size), mask, num_classes, ignore_class)
        return image, tf.cast(mask, tf.uint8 if small_ids else tf.int32)  # uint8 caches a quarter of the bytes.

    def finish(images, masks):
        images, masks = augment_lib.to_float(images), tf.cast(masks, tf.int32)
        return (images, masks) if batch_augment is None else batch_augment(images, masks)

    dataset = staged(dataset, decode, finish, batch_size=batch_size, cache=cache, shuffle=shuffle, seed=seed,
                     shuffle_buffer=shuffle_buffer, finish_in_parallel=seed is None)
    dataset.num_classes, dataset.ignore_class = num_classes, ignore_class
    return dataset


def preview(dataset, path: str, *, rows: int = 4, class_names=None) -> str:
    """Writes a grid of a dataset's first images and their masks (side by side) as a PNG; returns the path."""
    from kzoo.segment.evaluation import colour_masks
    from kzoo._io import pyplot, save_figure

    plt = pyplot("segment.data.preview")
    images, masks = next(iter(dataset))
    images, masks = np.asarray(images)[:rows], np.asarray(masks)[:rows]
    figure, axes = plt.subplots(len(images), 2, figsize=(5, 2.5 * len(images)), squeeze=False)
    for row, (image, mask) in enumerate(zip(images, masks)):
        axes[row, 0].imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
        axes[row, 1].imshow(colour_masks(mask, getattr(dataset, "ignore_class", None)))
        for axis in axes[row]:
            axis.axis("off")
    save_figure(figure, path)
    plt.close(figure)
    return path
