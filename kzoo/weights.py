"""Pretrained weights: records, download/cache/verify, loading, ImageNet pre/post-processing.

Records for the models keras.applications also ships use its URLs, file names
and hashes, fetched with `keras.utils.get_file` into `$KERAS_HOME/models`, so a
file already cached there (or copied there by hand) is used offline.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass

import h5py
import keras
import numpy as np

_KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"
_ACCURACY_SOURCE = "https://keras.io/api/applications/ (single 224x224 centre crop)"
_WEIGHT_SUFFIXES = (".weights.h5", ".keras", ".h5", ".hdf5")


@dataclass(frozen=True)
class WeightsFile:
    """One downloadable file: where it lives, its cache name and its md5/sha256."""

    url: str
    file_name: str
    file_hash: str


@dataclass(frozen=True)
class WeightsRecord:
    """A set of pretrained weights for one model, under one tag.

    Attributes:
        model: Registered model name.
        tag: The `weights=` value that selects it, e.g. "imagenet".
        top: The file with the classifier (`include_top=True`).
        no_top: The file without it (`include_top=False`), if published.
        preprocessing: The `keras.applications.imagenet_utils.preprocess_input`
            mode the weights were trained with: "caffe", "tf" or "torch".
        input_size: Training and evaluation resolution.
        categories: Name of the label set, a key of `CATEGORIES`.
        top1: Published ImageNet top-1 accuracy, percent.
        top5: Published ImageNet top-5 accuracy, percent.
        source: Where the accuracy figures come from.
    """

    model: str
    tag: str
    top: WeightsFile
    no_top: WeightsFile | None
    preprocessing: str
    input_size: int
    categories: str
    top1: float | None
    top5: float | None
    source: str = _ACCURACY_SOURCE

    def file(self, include_top: bool) -> WeightsFile:
        """The file for `include_top`; raises ValueError if not published."""
        chosen = self.top if include_top else self.no_top
        if chosen is None:
            raise ValueError(
                f"{self.model} has no {self.tag!r} weights without the classifier; "
                "use include_top=True."
            )
        return chosen


def _keras_application(model, folder, stem, top_hash, no_top_hash, mode, top1, top5):
    def file(suffix, file_hash):
        name = f"{stem}_weights_tf_dim_ordering_tf_kernels{suffix}.h5"
        return WeightsFile(f"{_KERAS_BASE}{folder}/{name}", name, file_hash)

    return WeightsRecord(
        model=model,
        tag="imagenet",
        top=file("", top_hash),
        no_top=file("_notop", no_top_hash),
        preprocessing=mode,
        input_size=224,
        categories="imagenet1k",
        top1=top1,
        top5=top5,
    )


# The official keras.applications files (keras/src/applications/{vgg16,vgg19,resnet}.py).
RECORDS: dict[tuple[str, str], WeightsRecord] = {
    (r.model, r.tag): r
    for r in [
        _keras_application("vgg16", "vgg16", "vgg16", "64373286793e3c8b2b4e3219cbf3544b",
                           "6d6bbae143d832006294945121d1f1fc", "caffe", 71.3, 90.1),
        _keras_application("vgg19", "vgg19", "vgg19", "cbe5617147190e668d6c5d5026f83318",
                           "253f8cb515780f3b799900260a226db6", "caffe", 71.3, 90.0),
        _keras_application("resnet50", "resnet", "resnet50", "2cb95161c43110f7111970584f804107",
                           "4d473c1dd8becc155b73f8504c6f6626", "caffe", 74.9, 92.1),
        _keras_application("resnet101", "resnet", "resnet101", "f1aeb4b969a6efcfb50fad2f0c20cfc5",
                           "88cf7a10940856eca736dc7b7e228a21", "caffe", 76.4, 92.8),
        _keras_application("resnet152", "resnet", "resnet152", "100835be76be38e30d865e96f2aaae62",
                           "ee4c566cf9a93f14d82f913c2dc6dd0c", "caffe", 76.6, 93.1),
        _keras_application("resnet50_v2", "resnet", "resnet50v2", "3ef43a0b657b3be2300d5770ece849e0",
                           "fac2f116257151a9d068a22e544a4917", "tf", 76.0, 93.0),
        _keras_application("resnet101_v2", "resnet", "resnet101v2", "6343647c601c52e1368623803854d971",
                           "c0ed64b8031c3730f411d2eb4eea35b5", "tf", 77.2, 93.8),
        _keras_application("resnet152_v2", "resnet", "resnet152v2", "a49b44d1979771252814e80f8ec446f9",
                           "ed17cf2e0169df9d443503ef94b23b33", "tf", 78.0, 94.2),
    ]
}

# Label sets: the class index keras.applications' decode_predictions uses.
CATEGORIES: dict[str, WeightsFile] = {
    "imagenet1k": WeightsFile(
        "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json",
        "imagenet_class_index.json",
        "c2c37ea517e94d9795004a39431a14cb",
    )
}


def available_weights(model_name: str) -> list[str]:
    """The weight tags published for a model (an empty list if none)."""
    return [tag for (model, tag) in RECORDS if model == model_name]


def get_record(model_name: str, tag: str = "imagenet") -> WeightsRecord:
    """The weights record of `(model_name, tag)`.

    Raises:
        ValueError: If there is none; the message lists the available tags.
    """
    record = RECORDS.get((model_name, tag))
    if record is None:
        tags = available_weights(model_name)
        with_weights = sorted({model for model, _ in RECORDS})
        choices = (
            f"Available for {model_name}: {', '.join(map(repr, tags))}."
            if tags
            else f"{model_name} has no pretrained weights; models that have: "
            f"{', '.join(with_weights)}."
        )
        raise ValueError(
            f"Unknown weights {tag!r} for {model_name}. {choices} Or pass weights=None "
            "(random initialisation) or the path to a weights file."
        )
    return record


def looks_like_path(weights: str) -> bool:
    """True when a `weights=` string names a file rather than a tag."""
    return os.sep in weights or weights.endswith(_WEIGHT_SUFFIXES) or os.path.exists(weights)


def check_weights_argument(
    model_name: str,
    weights,
    *,
    include_top: bool,
    num_classes: int,
    classifier_activation,
    input_shape: tuple,
) -> str | None:
    """Validates a builder's `weights=` before anything is built.

    Args:
        model_name: Registered model name.
        weights: None, a tag such as "imagenet", or a path to a weights file.
        include_top, num_classes, classifier_activation, input_shape: The
            other builder arguments, checked against what the weights need.

    Returns:
        `weights` unchanged (None, a tag, or an existing file path).

    Raises:
        ValueError: For an unknown tag, a missing or unsupported file, or
            arguments the tagged weights cannot serve.
    """
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            f"weights={weights!r} must be None, a tag such as 'imagenet', or the path "
            "to a weights file (.weights.h5, .keras, or a legacy .h5)."
        )
    weights = os.fspath(weights)
    if looks_like_path(weights):
        if not os.path.isfile(weights):
            raise ValueError(
                f"weights={weights!r}: no such file. Check the path, or pass "
                "weights='imagenet' to download the published weights."
            )
        if not weights.endswith(_WEIGHT_SUFFIXES):
            raise ValueError(
                f"weights={weights!r}: unsupported file type; kzoo reads .weights.h5, "
                ".keras and legacy .h5/.hdf5 files."
            )
        return weights
    record = get_record(model_name, weights)
    if include_top and num_classes != 1000:
        raise ValueError(
            f"weights={weights!r} with include_top=True has a 1000-class classifier, "
            f"but num_classes={num_classes}. Use num_classes=1000, or include_top=False "
            "and add your own head (see kzoo.transfer)."
        )
    activation = keras.activations.get(classifier_activation)
    if include_top and activation not in (
        keras.activations.get("softmax"),
        keras.activations.get(None),
    ):
        raise ValueError(
            f"classifier_activation={classifier_activation!r}: with weights={weights!r} "
            "and include_top=True only 'softmax' or None (logits) are allowed."
        )
    if input_shape[-1] != 3:
        raise ValueError(
            f"input_shape={input_shape}: {model_name} {weights!r} weights need 3 input "
            "channels (RGB). Convert the images to RGB, or use weights=None."
        )
    record.file(include_top)
    return weights


class WeightsUnavailableError(RuntimeError):
    """Published weights are neither in the Keras cache nor downloadable (or the download is corrupt)."""


def fetch(file: WeightsFile, *, cache_dir: str | None = None) -> str:
    """Downloads a file into the Keras cache, or finds it there, and verifies its hash.

    Args:
        file: What to fetch.
        cache_dir: Cache root; defaults to `$KERAS_HOME` (`~/.keras`). Files go
            to its `models/` folder, as with keras.applications.

    Returns:
        The local path of the verified file.

    Raises:
        WeightsUnavailableError: If the file is neither cached nor
            downloadable, or the download does not match the published hash.
            One short message (URL, cache path, what to do), not chained to
            Keras' errors.
    """
    root = cache_dir or os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    cache_path = os.path.join(root, "models", file.file_name)
    try:
        return keras.utils.get_file(
            file.file_name,
            file.url,
            cache_dir=root,
            cache_subdir="models",
            file_hash=file.file_hash,
        )
    except Exception as error:  # get_file raises bare Exception on network errors.
        reason = str(error).split(" -- ")[-1].strip()  # Keras' message repeats the URL before " -- ".
        message = (
            f"{file.file_name}: not in the Keras cache ({cache_path}), and the download failed "
            f"({reason}). Download {file.url} elsewhere and copy it there (its hash is "
            "checked), or pass weights=PATH to a weights file."
        )
    raise WeightsUnavailableError(message)  # Outside `except`: Keras' traceback adds nothing.


def load_weights(model: keras.Model, model_name: str, weights: str | None, *, include_top: bool):
    """Loads `weights` (None, a tag or a file path) into a freshly built model.

    Args:
        model: The model, built by kzoo's builder for `model_name`.
        model_name: Registered model name (used to look up tagged weights).
        weights: As checked by `check_weights_argument`.
        include_top: Whether the model has its classifier.

    Raises:
        WeightsUnavailableError: If tagged weights cannot be fetched.
        ValueError: If the file is corrupt or holds weights for another
            architecture (the message names the first layer that does not fit).
    """
    if weights is None:
        return
    if looks_like_path(weights):
        path = weights
    else:
        path = fetch(get_record(model_name, weights).file(include_top))
    if path.endswith((".h5", ".hdf5")) and not path.endswith(".weights.h5"):
        _check_legacy_h5_fits(model, path)
    try:
        model.load_weights(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"Could not read the weights file {path!r}: it is truncated or corrupt "
            f"({error}). Download or save it again."
        ) from error
    except ValueError as error:
        layer = re.search(r"object <(\w+) name=([^,>]+)", str(error))
        where = f" The first layer that does not fit: {layer[2]!r} ({layer[1]})." if layer else ""
        keras_said = str(error).split("Target variable:")[0].strip()  # Drop the value dump.
        raise ValueError(
            f"The weights in {path!r} do not fit {model.name} ({model_name}).{where} "
            f"Check that the file was saved from {model_name} with the same "
            f"include_top, num_classes and input channels. Keras said: {keras_said}"
        ) from error


def _check_legacy_h5_fits(model: keras.Model, path: str):
    """Compares the layers of a legacy HDF5 weights file with the model, in order.

    Keras loads legacy files by position and, on a mismatch, reports only a
    layer count; this names the first layer that does not fit.
    """
    try:
        with h5py.File(path, "r") as file:
            group = file["model_weights"] if "layer_names" not in file.attrs and "model_weights" in file else file
            saved = []
            for name in group.attrs["layer_names"]:
                name = name.decode() if isinstance(name, bytes) else name
                weight_names = group[name].attrs.get("weight_names", [])
                if len(weight_names):
                    saved.append((name, [tuple(group[name][w].shape) for w in weight_names]))
    except (OSError, KeyError) as error:
        raise ValueError(
            f"Could not read the weights file {path!r}: it is truncated or corrupt, or not "
            f"a Keras weights file ({error}). Download or save it again."
        ) from error
    expected = [
        (layer.name, [tuple(w.shape) for w in layer.trainable_weights + layer.non_trainable_weights])
        for layer in model.layers
        if layer.weights
    ]
    for index in range(max(len(expected), len(saved))):
        if index >= len(expected):
            raise ValueError(
                f"The weights in {path!r} do not fit {model.name}: the file has "
                f"{len(saved)} layers with weights, the model {len(expected)}; the file's "
                f"layer {saved[index][0]!r} has no counterpart."
            )
        if index >= len(saved) or saved[index][1] != expected[index][1]:
            name, shapes = expected[index]
            found = (
                f"the file's layer #{index} {saved[index][0]!r} has {saved[index][1]}"
                if index < len(saved)
                else "the file has no layer left for it"
            )
            raise ValueError(
                f"The weights in {path!r} do not fit {model.name}: the first layer that "
                f"does not fit is {name!r} (#{index}), which needs weights of shapes "
                f"{shapes}, but {found}. Check that the file was saved from the same "
                "architecture with the same include_top and num_classes."
            )


def preprocess_input(x, model_name: str, weights: str = "imagenet"):
    """Prepares RGB images in [0, 255] the way a model's pretrained weights expect.

    Args:
        x: Float array or tensor of shape (..., height, width, 3), RGB, 0-255.
        model_name: Registered model name, e.g. "resnet50".
        weights: The weights tag the model was loaded with.

    Returns:
        The preprocessed batch ("caffe": BGR, mean-subtracted; "tf": scaled to
        [-1, 1]; "torch": scaled to [0, 1] and normalised per channel).
    """
    mode = get_record(model_name, weights).preprocessing
    return keras.applications.imagenet_utils.preprocess_input(x, mode=mode)


def decode_predictions(preds, top: int = 5, categories: str = "imagenet1k"):
    """Turns ImageNet class probabilities into `(wnid, label, score)` lists.

    The class index is fetched like a weights file (cached in `$KERAS_HOME/models`).

    Args:
        preds: Array of shape (samples, 1000).
        top: How many classes to return per sample.
        categories: The label set.

    Returns:
        One list of `(wnid, label, score)` tuples per sample, best first.

    Raises:
        ValueError: If `preds` is not (samples, number of categories).
    """
    preds = np.asarray(preds)
    with open(fetch(CATEGORIES[categories])) as f:
        index = json.load(f)
    if preds.ndim != 2 or preds.shape[1] != len(index):
        raise ValueError(
            f"decode_predictions needs a batch of shape (samples, {len(index)}); got "
            f"{preds.shape}. Pass the output of a model built with include_top=True."
        )
    return [
        [(*index[str(i)], float(row[i])) for i in np.argsort(row)[::-1][:top]]
        for row in preds
    ]
