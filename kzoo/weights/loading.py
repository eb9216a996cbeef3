"""Getting weights into a model: the `weights=` argument checked, files fetched into the Keras cache, loaded.

Records for the models keras.applications also ships use its URLs, file names
and hashes, fetched with `keras.utils.get_file` into `$KERAS_HOME/models`, so a
file already cached there (or copied there by hand) is used offline.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile

import h5py
import keras

from kzoo.weights.records import WeightsFile, default_tag, get_record

_KERAS_SUFFIXES = (".weights.h5", ".keras", ".h5", ".hdf5")
# PyTorch and safetensors checkpoints, converted by `kzoo.convert` (kept here so that checking the
# argument needs no import of the converter).
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
_WEIGHT_SUFFIXES = _KERAS_SUFFIXES + _CHECKPOINT_SUFFIXES


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
        weights: None, a tag such as "imagenet" ("default": the model's
            first published weights), or a path to a weights file.
        include_top, num_classes, classifier_activation, input_shape: The
            other builder arguments, checked against what the weights need.

    Returns:
        None, the tag ("default" resolved), or the existing file path.

    Raises:
        ValueError: For an unknown tag, a missing or unsupported file, or
            arguments the tagged weights cannot serve.
    """
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            f"weights={weights!r} must be None, a tag such as 'imagenet', or the path "
            "to a weights file (.weights.h5, .keras, a legacy .h5, or a PyTorch .pth/.pt/.bin or "
            ".safetensors checkpoint)."
        )
    weights = os.fspath(weights)
    if weights == "default":  # As torchvision's weights="DEFAULT": the model's first published weights.
        weights = default_tag(model_name) or weights  # None left: get_record says there are none.
    if looks_like_path(weights):
        if not os.path.isfile(weights):
            raise ValueError(
                f"weights={weights!r}: no such file. Check the path, or pass "
                "weights='imagenet' to download the published weights."
            )
        if not weights.endswith(_WEIGHT_SUFFIXES):
            raise ValueError(
                f"weights={weights!r}: unsupported file type; kzoo reads .weights.h5, "
                ".keras and legacy .h5/.hdf5 files, and PyTorch (.pth, .pt, .bin) and .safetensors "
                "checkpoints in torchvision's or timm's layout."
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
    root = cache_dir or _keras_home()
    cache_path = os.path.join(root, "models", file.file_name)
    try:
        path = keras.utils.get_file(
            file.file_name,
            file.url,
            cache_dir=root,
            cache_subdir="models",
            file_hash=file.file_hash or None,
        )
    except Exception as error:  # get_file raises bare Exception on network errors.
        reason = str(error).split(" -- ")[-1].strip()  # Keras' message repeats the URL before " -- ".
        message = (
            f"{file.file_name}: not in the Keras cache ({cache_path}), and the download failed "
            f"({reason}). Download {file.url} elsewhere and copy it there (its hash is "
            "checked), or pass weights=PATH to a weights file."
        )
    else:
        if file.sha256 is None or _sha256(path).startswith(file.sha256):
            return path
        os.remove(path)
        message = (f"{path}: its sha256 does not start with {file.sha256}, as {file.url} published it, "
                   "so it was removed. Download it again.")
    raise WeightsUnavailableError(message)  # Outside `except`: Keras' traceback adds nothing.


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_weights(model: keras.Model, model_name: str, weights: str | None, *, include_top: bool,
                 family: str | None = None):
    """Loads `weights` (None, a tag or a file path) into a freshly built model.

    Args:
        model: The model, built by kzoo's builder for `model_name`.
        model_name: Registered model name (used to look up tagged weights).
        weights: As checked by `check_weights_argument`.
        include_top: Whether the model has its classifier.
        family: The model's family name, which picks the converter for
            PyTorch and safetensors checkpoints.

    Raises:
        WeightsUnavailableError: If tagged weights cannot be fetched.
        ValueError: If the file is corrupt or holds weights for another
            architecture (the message names the first layer that does not fit).
    """
    if weights is None:
        return
    path = weights if looks_like_path(weights) else fetch(get_record(model_name, weights).file(include_top))
    if path.endswith(_CHECKPOINT_SUFFIXES):
        load_checkpoint_file(model, family, path)
        return
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


def load_checkpoint_file(model: keras.Model, family: str, path: str) -> None:
    """Loads a torchvision/timm checkpoint through `kzoo.convert`'s map for `family`.

    A downloaded file (in the Keras cache) is converted once and kept beside
    it as a `.weights.h5`, which later loads read instead.
    """
    cache = os.path.join(_keras_home(), "models")
    if os.path.dirname(os.path.abspath(path)) != os.path.abspath(cache):
        from kzoo import convert

        convert.load_checkpoint(model, family, path)
        return
    model.load_weights(_converted(model, family, path))


def _keras_home() -> str:
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def _converted(model: keras.Model, family: str, checkpoint: str) -> str:
    """A downloaded checkpoint as a Keras weights file for this model, converted once and kept beside it.

    The file name carries a digest of the model's weight names and shapes, so
    the variants one checkpoint serves (with or without the classifier,
    GoogLeNet's auxiliary heads) each get their own file.
    """
    layout = repr([(weight.path, tuple(weight.shape)) for weight in model.weights]).encode()
    converted = f"{os.path.splitext(checkpoint)[0]}.kzoo-{hashlib.sha256(layout).hexdigest()[:8]}.weights.h5"
    if not os.path.exists(converted):
        from kzoo import convert
        from kzoo._io import atomic_write

        convert.load_checkpoint(model, family, checkpoint)
        atomic_write(converted, model.save_weights, suffix=".weights.h5")
    return converted


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


