"""Datasets as ready tf.data pipelines of `(float32 image in [0, 1], int label)` batches.

Every source (TFDS, a folder per class, NumPy arrays, the embedded digits)
goes through one pipeline in the order that keeps it fast and correct: decode
and resize, cache, shuffle, batch, augment the whole batch, prefetch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from kzoo.data import augment as augment_lib
from kzoo.data import checks

AUTOTUNE = tf.data.AUTOTUNE


@dataclass(frozen=True)
class DatasetInfo:
    """A named dataset: its TFDS name, native image shape and number of classes."""

    tfds_name: str
    image_shape: tuple | None  # None: images vary in size; resized to `default_size`.
    num_classes: int
    default_size: int | None = None


DATASETS = {
    "mnist": DatasetInfo("mnist", (28, 28, 1), 10),
    "fashion_mnist": DatasetInfo("fashion_mnist", (28, 28, 1), 10),
    "cifar10": DatasetInfo("cifar10", (32, 32, 3), 10),
    "cifar100": DatasetInfo("cifar100", (32, 32, 3), 100),
    "tf_flowers": DatasetInfo("tf_flowers", None, 5, default_size=224),
    "imagenette": DatasetInfo("imagenette/320px-v2", None, 10, default_size=224),
    "digits": DatasetInfo("", (28, 28, 1), 10),  # scikit-learn's, embedded, offline.
}
OFFLINE_CHOICES = (
    'kzoo.data.load("digits", ...) (1,797 real handwritten digits, embedded), '
    "kzoo.data.from_directory(path) (a folder per class) or kzoo.data.from_arrays(x, y)"
)


class DatasetUnavailableError(RuntimeError):
    """A named dataset is neither prepared in `data_dir` nor downloadable.

    Attributes:
        name: The dataset's name.
        why: Where it was looked for and why it could not be downloaded, for
            a command line to say in its own flags what to do.
    """

    def __init__(self, message: str, *, name: str = "", why: str = ""):
        super().__init__(message)
        self.name, self.why = name, why


def load(
    name: str,
    split: str = "train",
    *,
    batch_size: int = 128,
    image_size: int | tuple[int, int] | None = None,
    augment=None,
    shuffle: bool = True,
    cache: bool | str = True,
    data_dir: str | None = None,
    seed: int | None = None,
    download: bool = True,
) -> tf.data.Dataset:
    """Loads a named dataset as a batched, prefetched pipeline.

    Args:
        name: A key of `DATASETS` ("mnist", "cifar10", "digits", ...) or any
            TFDS name with a supervised (image, label) form.
        split: A TFDS split ("train", "test", "train[:90%]"); "digits" has
            "train" (first 1,437 images), "test" (last 360) and "all".
        batch_size: Images per batch.
        image_size: Resize to this (int or (height, width)); required for
            datasets whose images vary in size unless they have a default.
        augment: None, a preset name ("mnist", "cifar", "imagenet"), or a
            `kzoo.augment.BatchAugment` / callable on an image batch.
        shuffle: Shuffle (each epoch anew) before batching.
        cache: Cache decoded images in memory (True), in a file (a path), or not.
        data_dir: TFDS data folder; defaults to TFDS' own (`~/tensorflow_datasets`).
        seed: Makes shuffling and augmentation repeat exactly.
        download: Allow TFDS to download a dataset that is not prepared.

    Returns:
        A `tf.data.Dataset` of `(images, labels)` batches: float32 images in
        [0, 1] of shape (batch, height, width, channels) and int32 labels (or
        float32 one-hot labels after MixUp/CutMix); its `class_names`
        attribute lists the label names in id order.

    Raises:
        DatasetUnavailableError: If the dataset is not in `data_dir` and cannot
            be downloaded; the message lists the offline choices.
    """
    info = DATASETS.get(name)
    if name == "digits":
        images, labels = digits_arrays(split)
        dataset = from_arrays(
            images, labels, batch_size=batch_size, image_size=image_size, augment=augment,
            shuffle=shuffle, cache=cache, seed=seed, num_classes=10,
        )
        dataset.class_names = [str(digit) for digit in range(10)]
        return dataset
    dataset, builder = _tfds_split(
        info.tfds_name if info else name, split, data_dir, download, shuffle and seed is None
    )
    class_names = builder.info.features["label"].names
    if image_size is None and info and info.image_shape is None:
        image_size = info.default_size
    dataset = pipeline(
        dataset, batch_size=batch_size, image_size=image_size, augment=augment,
        shuffle=shuffle, cache=cache, seed=seed, num_classes=len(class_names),
    )
    dataset.class_names = class_names
    return dataset


def _tfds_split(tfds_name: str, split: str, data_dir: str | None, download: bool, shuffle_files: bool,
                as_supervised: bool = True):
    """Returns `(dataset, builder)`, preparing the dataset first if needed and possible."""
    import tensorflow_datasets as tfds  # Heavy: only when a TFDS dataset is asked for.

    builder = tfds.builder(tfds_name, data_dir=data_dir)

    def read():
        return builder.as_dataset(split=split, as_supervised=as_supervised, shuffle_files=shuffle_files)

    try:
        return read(), builder  # Prepared already (or mocked by tfds.testing.mock_data).
    except (AssertionError, FileNotFoundError):  # TFDS asserts that the files exist.
        pass
    if not download:
        reason = "downloading is off"
    elif not _reachable(DOWNLOAD_HOST):
        reason = f"there is no network ({DOWNLOAD_HOST[0]} cannot be reached)"
    else:
        try:
            builder.download_and_prepare()
            return read(), builder
        except Exception as error:  # Network errors come in many types.
            reason = f"downloading failed: {type(error).__name__}: {str(error)[:200]}"
    why = f"not prepared in {builder.data_dir} and {reason}"
    raise DatasetUnavailableError(
        f"Dataset {tfds_name!r} is {why}{'' if download else ' (download=False)'}. Prepare it where there is "
        "network access and pass "
        f"data_dir=, or, offline, use {OFFLINE_CHOICES}.", name=tfds_name, why=why,
    )


# TFDS' own mirror. Probing it first turns an offline download, which TFDS
# retries with back-off for minutes, into an error within seconds.
DOWNLOAD_HOST = ("storage.googleapis.com", 443)


def _reachable(address, timeout: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection(address, timeout=timeout).close()
        return True
    except OSError:
        return False


def digits_arrays(split: str = "all"):
    """scikit-learn's 8x8 digits (values 0-16), upsampled to 28x28x1 in [0, 1]: `(images, labels)` of a split
    ("train": the first 1,437, "test": the last 360, "all"; sliceable as TFDS splits are)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype("float32")[..., None] / 16.0
    images = tf.image.resize(images, (28, 28), method="bilinear").numpy()
    labels = digits.target.astype("int32")
    cut = 1437  # 80% / 20%, in the file's order (the same every time).
    chosen = _split_slice(split, {"train": (0, cut), "test": (cut, len(labels)), "all": (0, len(labels))})
    return images[chosen], labels[chosen]


_SPLIT = re.compile(r"^(\w+)(?:\[(-?\d+%?)?:(-?\d+%?)?\])?$")


def _split_slice(split: str, splits: dict) -> slice:
    """A TFDS-style split string ("train", "train[:90%]", "train[90%:]", "test[10:20]") as a slice.

    Percent boundaries round to the closest example, as TFDS does, so
    "train[:90%]" and "train[90%:]" are disjoint and cover "train".
    """
    match = _SPLIT.match(split.replace(" ", "")) if isinstance(split, str) else None
    if not match or match.group(1) not in splits:
        raise ValueError(
            f"split={split!r}: the digits dataset has {', '.join(map(repr, splits))}, each sliceable as TFDS "
            "splits are, e.g. 'train[:90%]' and 'train[90%:]' (training and validation)."
        )
    start, stop = splits[match.group(1)]
    size = stop - start

    def boundary(text, default):
        if text is None:
            return default
        value = round(size * int(text[:-1]) / 100) if text.endswith("%") else int(text)
        return min(max(value + size if value < 0 else value, 0), size)

    return slice(start + boundary(match.group(2), 0), start + boundary(match.group(3), size))


def _augment_parallelism(parallel_augment: bool | None, seed: int | None) -> bool:
    """Whether to augment several batches at once."""
    if seed is not None:
        # The random layers draw from one seeded stream: a seeded pipeline
        # augments one batch at a time so that it repeats exactly.
        return False
    if parallel_augment is None:
        parallel_augment = bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
    return parallel_augment


def resized(image, size):
    """An image resized (bilinear) to `size` if given, uint8 kept uint8; float images as float32."""
    if size is not None:
        resized_image = tf.image.resize(image, size)
        image = (tf.saturate_cast(tf.round(resized_image), tf.uint8) if image.dtype == tf.uint8
                 else resized_image)
    return image if image.dtype == tf.uint8 else tf.cast(image, tf.float32)


def staged(dataset, decode, finish, *, batch_size: int, cache: bool | str = True, shuffle: bool = True,
           seed: int | None = None, shuffle_buffer: int = 10_000, finish_in_parallel: bool = True):
    """The order every kzoo pipeline keeps: decode, cache, shuffle, batch, finish, prefetch.

    Classification (`pipeline`) and segmentation (`kzoo.segment.data`) differ
    only in what `decode` does to one element and `finish` to one batch.

    Args:
        dataset: Unbatched elements.
        decode: Per element, before the cache: resize and check.
        finish: Per batch, after it: to float, augment.
        finish_in_parallel: Run `finish` on several batches at once (no for a
            seeded augmentation, which must draw in order).
        Others: as in `pipeline`.

    Returns:
        The prefetched dataset, in a fixed order when seeded or not shuffled.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer, e.g. 32.")
    dataset = dataset.map(decode, num_parallel_calls=AUTOTUNE)
    if cache:
        dataset = dataset.cache(cache if isinstance(cache, str) else "")
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, num_parallel_calls=AUTOTUNE)
    dataset = dataset.map(finish, num_parallel_calls=AUTOTUNE if finish_in_parallel else 1)
    options = tf.data.Options()
    options.deterministic = seed is not None or not shuffle  # Unshuffled data keeps its order.
    return dataset.prefetch(AUTOTUNE).with_options(options)


def read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (the format of the original MNIST downloads), gzipped or not.

    Args:
        path: e.g. "t10k-images-idx3-ubyte.gz".

    Returns:
        The array, uint8 for image and label files.
    """
    import gzip
    import struct

    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        zero, dtype_code, rank = struct.unpack(">HBB", f.read(4))
        if zero != 0 or dtype_code != 0x08:
            raise ValueError(f"{path!r} is not an unsigned-byte IDX file (header {zero}, {dtype_code:#x}).")
        shape = struct.unpack(f">{rank}I", f.read(4 * rank))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(shape)


def from_arrays(
    images,
    labels,
    *,
    batch_size: int = 128,
    image_size=None,
    augment=None,
    shuffle: bool = True,
    cache: bool | str = True,
    seed: int | None = None,
    num_classes: int | None = None,
) -> tf.data.Dataset:
    """A pipeline over NumPy arrays of images and class ids.

    Args:
        images: Array (n, height, width[, channels]), channels last: uint8
            0-255, or float in [0, 1]. Float pixels in 0-255 (what
            `x.astype("float32")` gives) are scaled by 1/255, with one logged
            line; other values are refused (see `kzoo.data.checks`).
        labels: Integer class ids, shape (n,).
        num_classes: Class ids must be below it; default `max(labels) + 1`.
        Others: as in `load`.

    Raises:
        ValueError: For no images, images and labels of different lengths, a
            wrong rank, NaN or out-of-range pixels, or labels that are not
            class ids below `num_classes`; each message says what to pass.
    """
    images, labels = checks.image_label_arrays(images, labels, "from_arrays", num_classes=num_classes)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    return pipeline(
        dataset, batch_size=batch_size, image_size=image_size, augment=augment, shuffle=shuffle,
        cache=cache, seed=seed, num_classes=num_classes or int(labels.max()) + 1,
    )


def pipeline(
    dataset: tf.data.Dataset,
    *,
    batch_size: int,
    image_size=None,
    augment=None,
    shuffle: bool = True,
    cache: bool | str = True,
    seed: int | None = None,
    num_classes: int | None = None,
    shuffle_buffer: int = 10_000,
    parallel_augment: bool | None = None,
) -> tf.data.Dataset:
    """The shared order: decode/resize, cache, shuffle, batch, augment, prefetch.

    Each element is checked as it is first read (`kzoo.data.checks`): a float
    image outside [0, 1] (or NaN) or a label that is not a class id below
    `num_classes` stops the pipeline with an error that says so. Float
    images in 0-255 are refused here, since a stream cannot be told from a
    dark image: make them uint8, or divide by 255.

    Args:
        dataset: Unbatched `(image, label)` elements; images uint8 0-255 or float in [0, 1].
        num_classes: Labels must be below it; needed by MixUp/CutMix for one-hot labels.
        shuffle_buffer: Shuffle buffer size (elements).
        parallel_augment: Augment several batches at once. Default: yes when a
            GPU or TPU trains (the CPU is free for the pipeline), no on a
            CPU-only machine, where parallel augmentation takes cores from the
            training step (measured: 13-15% slower training on 2 cores; one
            augmenting thread plus prefetch costs nothing measurable).
        Others: as in `load`.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else image_size

    def decode(image, label):
        # uint8 images stay uint8 through cache, shuffle and batch (a quarter of
        # the memory traffic of float32); the per-batch map converts them.
        return checks.checked_in_graph(resized(image, size), label, num_classes)

    batch_augment = augment_lib.get(augment, num_classes=num_classes, seed=seed)
    finish = batch_augment or (lambda x, y: (augment_lib.to_float(x), y))
    dataset = staged(dataset, decode, finish, batch_size=batch_size, cache=cache, shuffle=shuffle, seed=seed,
                     shuffle_buffer=shuffle_buffer,
                     finish_in_parallel=batch_augment is None or _augment_parallelism(parallel_augment, seed))
    dataset.num_classes = num_classes  # For fit's check against the model's outputs.
    return dataset
