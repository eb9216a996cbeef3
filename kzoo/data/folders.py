"""Image folders as datasets: one sub-folder per class, split by kzoo itself into disjoint, stratified subsets."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from kzoo.data.datasets import AUTOTUNE, pipeline


IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # What keras.utils.image_dataset_from_directory reads.
SUBSETS = ("training", "validation", "test")


def from_directory(
    path: str,
    *,
    batch_size: int = 32,
    image_size=224,
    augment=None,
    shuffle: bool = True,
    cache: bool | str = True,
    seed: int | None = None,
    validation_split: float | None = None,
    test_split: float | None = None,
    subset: str | None = None,
) -> tf.data.Dataset:
    """A pipeline over a folder with one sub-folder of images per class.

    Class ids follow the sorted sub-folder names, as in
    `keras.utils.image_dataset_from_directory`. Its split is not used: it
    cuts the file list after shuffling it only when `shuffle=True`, so a
    "training" call and a `shuffle=False` "validation" call overlap, and it
    is not stratified. Here the split depends on `seed` and the fractions
    only: the subsets never share a file, together they are the whole folder,
    and each class is split in the same proportion.

    Args:
        path: The folder.
        image_size: Every image is resized to this (int or (height, width)).
        validation_split, test_split: Fractions of each class held out as
            the "validation" and "test" subsets.
        subset: "training", "validation" or "test"; needed with a split.
        seed: Shuffles and augments repeatably, and chooses the split (seed
            0 when None, so that separate calls agree).
        Others: as in `load`.

    Returns:
        The pipeline; its `class_names` attribute lists the folders in id order.

    Raises:
        ValueError: For a path that is not a folder of class folders with
            images, a bad split or subset, or a class too small to split.
    """
    files, labels, class_names = _files_per_class(path)
    files, labels = _subset(files, labels, class_names, validation_split, test_split, subset,
                            seed if seed is not None else 0)
    if shuffle:  # Mixed classes before the cache, so the shuffle buffer need not hold the whole folder.
        order = np.random.default_rng(seed).permutation(len(files))
        files, labels = files[order], labels[order]
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)

    def read(file, label):
        image = tf.io.decode_image(tf.io.read_file(file), channels=3, expand_animations=False)
        image.set_shape((None, None, 3))
        return image, label

    dataset = tf.data.Dataset.from_tensor_slices((files, labels)).map(read, num_parallel_calls=AUTOTUNE)
    dataset = pipeline(
        dataset, batch_size=batch_size, image_size=size, augment=augment, shuffle=shuffle,
        cache=cache, seed=seed, num_classes=len(class_names),
    )
    dataset.class_names = class_names
    return dataset


def _files_per_class(path: str):
    """(files, labels, class names) of a folder with one sub-folder of images per class, in sorted order."""
    if not os.path.isdir(path):
        raise ValueError(f"from_directory: {path!r} is not a folder; give a folder with one sub-folder per class.")
    class_names = sorted(entry for entry in os.listdir(path) if os.path.isdir(os.path.join(path, entry)))
    files, labels = [], []
    for label, name in enumerate(class_names):
        found = sorted(
            os.path.join(root, file)
            for root, _, names in os.walk(os.path.join(path, name)) for file in names
            if file.lower().endswith(IMAGE_EXTENSIONS)
        )
        files += found
        labels += [label] * len(found)
    if not files:
        raise ValueError(
            f"from_directory: {path!r} has no images in sub-folders ({', '.join(IMAGE_EXTENSIONS)}); give a "
            "folder with one sub-folder of images per class, e.g. photos/cat/1.jpg, photos/dog/2.jpg."
        )
    return np.array(files), np.array(labels, dtype=np.int32), class_names


def _subset(files, labels, class_names, validation_split, test_split, subset, seed):
    """The files of one subset: each class shuffled by `seed` and cut at the same fractions."""
    fractions = {"validation": validation_split or 0.0, "test": test_split or 0.0}
    for name, fraction in (("validation_split", validation_split), ("test_split", test_split)):
        if fraction is not None and not 0.0 < fraction < 1.0:
            raise ValueError(f"{name}={fraction!r} must be a fraction between 0 and 1, e.g. 0.2.")
    if sum(fractions.values()) >= 1.0:
        raise ValueError(f"validation_split + test_split = {sum(fractions.values()):g} leaves nothing to train on; "
                         "keep their sum below 1.")
    split = any(fractions.values())
    if not split:
        if subset is not None:
            raise ValueError(f"subset={subset!r} needs validation_split= (or test_split=) to cut the folder.")
        return files, labels
    wanted = [name for name in SUBSETS if name == "training" or fractions[name]]
    if subset not in wanted:
        raise ValueError(f"subset={subset!r}: with these splits give subset= one of {wanted}; call from_directory "
                         "once per subset, with the same seed and fractions.")
    rng = np.random.default_rng(seed)
    chosen = []
    for label, name in enumerate(class_names):
        members = np.flatnonzero(labels == label)[rng.permutation(int((labels == label).sum()))]
        counts = {key: max(1, round(len(members) * value)) if value else 0 for key, value in fractions.items()}
        if len(members) - sum(counts.values()) < 1:
            raise ValueError(
                f"from_directory: class {name!r} has {len(members)} image(s), too few to give every subset one; "
                "add images to it, or use smaller validation_split/test_split."
            )
        cuts = {"validation": members[:counts["validation"]],
                "test": members[counts["validation"]:counts["validation"] + counts["test"]],
                "training": members[counts["validation"] + counts["test"]:]}
        chosen.append(cuts[subset])
    chosen = np.sort(np.concatenate(chosen))
    return files[chosen], labels[chosen]
