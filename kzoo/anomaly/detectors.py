"""The detectors: PatchCore, PaDiM and kNN (DN2) on any kzoo backbone, each one Keras model from image to score and map.

A detector is fitted on normal images only. Its `model` takes images in
[0, 1] (the preprocessing its backbone's weights expect is its first layer,
as in `kzoo.transfer`) and returns `{"score": (n,), "map": (n, H, W)}`,
normalised so that 0.5 is the threshold (anomalib's convention): what
`predict` returns, what `save` writes and what `export.to_tflite` converts.
"""

from __future__ import annotations

import json
import logging
import math
import zipfile

import keras
import numpy as np

from kzoo.anomaly import coreset as coreset_lib
from kzoo.anomaly.layers import MahalanobisScore, NearestNeighbourScore
from kzoo.data import checks

log = logging.getLogger(__name__)

METHODS = ("patchcore", "padim", "knn")
META = "kzoo_detector.json"  # The detector's settings, written into the .keras zip beside Keras' own entries.
SIGMA = 4.0  # PatchCore's and anomalib's Gaussian blur of the map, in pixels.


class Detector:
    """What the three methods share: the feature model, fitting on normal images, threshold, predict, save.

    Subclasses define `_embed` (the backbone's maps -> the features the
    method scores), `_fit_features` (learn from normal features) and
    `_score` (features -> image score and patch map).
    """

    method = None
    default_stages = (2, 3)

    def __init__(self, backbone: str = "wide_resnet50_2", *, weights="imagenet", stages=None, image_size: int = 224,
                 input_channels: int | None = None, batch_size: int = 8, seed: int = 0, preprocessing="auto",
                 **options):
        from kzoo import transfer
        from kzoo.models import model_entry

        entry = model_entry(backbone)
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < entry.family.min_size:
            raise ValueError(f"image_size={image_size!r} must be an integer of at least {entry.family.min_size} "
                             f"for {backbone}.")
        stages = tuple(self.default_stages if stages is None else stages)
        available = len(entry.family.stage_strides)
        if not stages or any(not isinstance(s, int) or not 0 <= s < available for s in stages):
            raise ValueError(
                f"stages={stages} are not stages of {backbone}: it has {available} (0-{available - 1}, at strides "
                f"{entry.family.stage_strides}). PatchCore uses two (strides 8 and 16), PaDiM three."
            )
        self.input_shape = (image_size, image_size, input_channels or entry.default_input[-1])
        self.config = dict(method=self.method, backbone=backbone, stages=list(stages), image_size=image_size,
                           input_channels=self.input_shape[-1], batch_size=batch_size, seed=seed, **options)
        features = transfer.pretrained_backbone(
            backbone, weights=weights, input_shape=self.input_shape, preprocessing=preprocessing, out_indices=stages,
        )
        maps = features.output if isinstance(features.output, (list, tuple)) else [features.output]
        self.embedder = keras.Model(features.input, self._embed(list(maps)), name=f"{backbone}_{self.method}_features")
        self.model = None
        self.threshold = None

    # -- fitting -----------------------------------------------------------------------------------
    def fit(self, images) -> "Detector":
        """Learns what normal looks like from `images` (labels, if any, are ignored).

        Args:
            images: An array `(n, H, W, C)` of images in [0, 1] (or uint8), or
                a kzoo/tf.data dataset of image batches or `(images, labels)`.

        Returns:
            self.

        Raises:
            ValueError: For no images, images of another size than
                `image_size`, or pixels outside [0, 1].
        """
        if self.embedder is None:
            raise ValueError("A loaded detector predicts and takes new thresholds; to fit again, make a new one.")
        embedded = [np.asarray(self.embedder(batch, training=False)) for batch in self._batches(images, "fit images")]
        if not embedded:
            raise ValueError("fit got no images: give the normal (defect-free) training images.")
        embedded = np.concatenate(embedded)
        self._fit_features(embedded)
        self.model = self._build_model()
        self._set_normalisation(threshold=None, score_range=None, map_range=None)
        return self

    def set_threshold(self, images, labels=None, *, quantile: float = 0.99) -> float:
        """Sets the score threshold (and the normalisation around it) from validation images.

        With labels holding both classes (1 = anomalous), the threshold is the
        one with the best F1 (midway between that score and the next lower
        one); with normal images only, the `quantile` of their
        scores, with a logged warning (no anomaly was seen, so the cut is a guess).

        Returns:
            The threshold on the raw image score.
        """
        from sklearn.metrics import precision_recall_curve

        raw = self._raw(images)
        scores = raw["score"]
        labels = None if labels is None else checks.class_ids(labels, "labels", num_classes=2, count=len(scores))
        if labels is not None and 0 < labels.sum() < len(labels):
            precision, recall, thresholds = precision_recall_curve(labels, scores)
            f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
            best = float(thresholds[np.argmax(f1[:-1])])
            below = scores[scores < best]
            # Midway to the next lower score: the same cut on these images, and no image sits on it (where
            # float32 round-off in the normalisation would decide its label).
            threshold = (best + float(below.max())) / 2 if below.size else best
        else:
            normal = scores if labels is None else scores[labels == 0]
            threshold = float(np.quantile(normal, quantile))
            log.warning("set_threshold saw no anomalous image: the threshold is the %.2f quantile of the normal "
                        "scores (%.4g), a guess. Give labelled anomalies for an F1-optimal one.", quantile, threshold)
        score_range = (float(scores.min()), float(scores.max()))
        map_range = (float(raw["map"].min()), float(raw["map"].max())) if raw["map"] is not None else None
        self._set_normalisation(threshold, score_range, map_range)
        return threshold

    # -- using -------------------------------------------------------------------------------------
    def predict(self, images) -> dict:
        """Scores images: `{"scores": (n,), "maps": (n, H, W) or None, "labels": (n,) or None}`.

        Scores and maps are normalised so that 0.5 is the threshold and clipped
        to [0, 1]; `labels` (1 = anomalous) need `set_threshold` first. kNN
        scores whole images only (`maps` is None).
        """
        out = self._run(self.model, images, "images")
        scores = out["score"]
        return {"scores": scores, "maps": out["map"],
                "labels": (scores >= 0.5).astype("int32") if self.threshold is not None else None}

    def save(self, path: str) -> str:
        """Writes the detector (backbone, bank or Gaussians, threshold, normalisation) as one `.keras` file."""
        from kzoo._io import atomic_write

        self._check_fitted()
        if not str(path).endswith(".keras"):
            raise ValueError(f"path={path!r}: a detector is saved as a .keras file.")
        def write(temporary):
            self.model.save(temporary)
            with zipfile.ZipFile(temporary, "a") as archive:  # Keras reads only its own entries.
                archive.writestr(META, json.dumps({**self.config, "threshold": self.threshold}))

        return atomic_write(str(path), write, suffix=".keras")

    # -- shared machinery ------------------------------------------------------------------------
    def _batches(self, images, what):
        if isinstance(images, (list, tuple)) and images and all(np.ndim(image) == 3 for image in images):
            sizes = sorted({np.shape(image) for image in images})
            if len(sizes) > 1:
                raise ValueError(
                    f"{what} have different sizes ({', '.join('x'.join(map(str, size)) for size in sizes[:3])}): "
                    f"resize them all to {self.input_shape[0]}x{self.input_shape[1]} (image_size) first."
                )
            images = np.stack(images)
        for batch, _ in checks.batches(images, what):
            if tuple(batch.shape[1:3]) != self.input_shape[:2]:
                raise ValueError(
                    f"{what} are {batch.shape[1]}x{batch.shape[2]}, but this detector works at "
                    f"{self.input_shape[0]}x{self.input_shape[1]} (image_size={self.input_shape[0]}): resize them "
                    "(kzoo.data pipelines take image_size=)."
                )
            checks.fits_model(batch.shape[1:], self.input_shape, what)
            for start in range(0, len(batch), self.config["batch_size"]):
                yield batch[start:start + self.config["batch_size"]]

    def _raw(self, images) -> dict:
        return self._run(self._raw_model, images, "validation images")

    def _run(self, model, images, what) -> dict:
        """`model`'s score and map (None without one) over all images, batch by batch."""
        self._check_fitted()
        outputs = [model(batch, training=False) for batch in self._batches(images, what)]
        if not outputs:
            raise ValueError(f"{what}: got no images.")
        return {key: np.concatenate([np.asarray(out[key]) for out in outputs]) if key in outputs[0] else None
                for key in ("score", "map")}

    def _build_model(self) -> keras.Model:
        image = self.embedder.input
        score, patch_map = self._score(self.embedder.output)
        outputs = {"score": score}
        if patch_map is not None:
            height, width = self.input_shape[:2]
            full = keras.layers.Resizing(height, width, interpolation="bilinear", name="map_resize")(
                keras.layers.Reshape((*patch_map.shape[1:], 1), name="map_channel")(patch_map))
            outputs["map"] = keras.layers.Reshape((height, width), name="map_raw")(_gaussian_blur(full))
        score = keras.layers.Reshape((1,), name="score_column")(outputs["score"])
        normalised = {"score": keras.layers.Reshape((), name="score")(_normaliser("score")(score))}
        if "map" in outputs:
            column = keras.layers.Reshape((*self.input_shape[:2], 1), name="map_column")(outputs["map"])
            normalised["map"] = keras.layers.Reshape(self.input_shape[:2], name="map")(_normaliser("map")(column))
        model = keras.Model(image, normalised, name=f"{self.config['backbone']}_{self.method}")
        self._raw_model = raw_model(model)
        return model

    def _set_normalisation(self, threshold, score_range, map_range):
        """(raw - threshold) / (max - min) + 0.5, clipped to [0, 1]; the identity until a threshold is set."""
        self.threshold = threshold
        for key, value_range in (("score", score_range), ("map", map_range)):
            try:
                dense = self.model.get_layer(f"{key}_normalise")
            except ValueError:
                continue
            if threshold is None or value_range is None:
                scale, offset = 1.0, 0.0
            else:
                span = max(value_range[1] - value_range[0], 1e-12)
                scale, offset = 1.0 / span, 0.5 - threshold / span  # The image threshold cuts the map too.
            dense.set_weights([np.array([[scale]], "float32"), np.array([offset], "float32")])
            self.model.get_layer(f"{key}_clip").max_value = None if threshold is None else 1.0

    def _check_fitted(self):
        if self.model is None:
            raise ValueError(f"This {type(self).__name__} is not fitted: call fit(normal_images) first.")


def raw_model(model: keras.Model) -> keras.Model:
    """The detector's model before normalisation (raw score, blurred map), sharing its layers."""
    outputs = {"score": model.get_layer("score_raw").output}
    if "map" in model.output:
        outputs["map"] = model.get_layer("map_raw").output
    return keras.Model(model.input, outputs, name=f"{model.name}_raw")


def _normaliser(key):
    """A 1-unit Dense (x * scale + offset) and a clip to [0, 1]: stock layers, so they export as they are."""

    def apply(x):
        x = keras.layers.Dense(1, name=f"{key}_normalise", trainable=False)(x)
        return keras.layers.ReLU(max_value=1.0, name=f"{key}_clip")(x)

    return apply


def _gaussian_blur(x, sigma: float = SIGMA):
    """A fixed Gaussian (sigma 4, 33x33) as a frozen convolution: a built-in layer every tool takes."""
    radius = int(math.ceil(4 * sigma))
    axis = np.arange(-radius, radius + 1, dtype="float64")
    kernel = np.exp(-(axis ** 2) / (2 * sigma ** 2))
    kernel = np.outer(kernel, kernel)
    kernel /= kernel.sum()
    blur = keras.layers.Conv2D(1, 2 * radius + 1, padding="same", use_bias=False, trainable=False, name="map_blur")
    blur.build(x.shape)
    blur.set_weights([kernel.astype("float32")[:, :, None, None]])
    return blur(x)


class PatchCore(Detector):
    """PatchCore (Roth et al. 2022): a coreset memory bank of normal patch features, nearest-neighbour distance.

    Features of two stages (default strides 8 and 16), each averaged over its
    3x3 neighbourhood, the deeper one resized to the finer grid and
    concatenated; the bank keeps `coreset_ratio` of all normal patches, chosen
    by greedy k-centre selection on a random projection. A patch's score is
    its distance to the nearest bank entry; the image score is the largest,
    reweighted by how dense the bank is around it (eq. 7).

    Args:
        backbone: A registry name; weights: as the builders take them.
        stages: Feature stages (indices of `model.feature_info`).
        coreset_ratio: Fraction of patches kept (1.0 keeps all).
        neighbours: Support set of the image-score reweighting (anomalib's 9).
        image_size: Square input size; images must have it.
        input_channels: Image channels (default the backbone's: 3, or 1 for LeNet).
        batch_size: Images per step of fit and predict.
        seed: Seeds the coreset (and PaDiM's channel subset): a seed repeats a fit exactly.
    """

    method = "patchcore"
    default_stages = (2, 3)

    def __init__(self, backbone="wide_resnet50_2", *, coreset_ratio: float = 0.1, neighbours: int = 9, **kwargs):
        if not 0 < coreset_ratio <= 1:
            raise ValueError(f"coreset_ratio={coreset_ratio} must be in (0, 1]: the fraction of patches kept.")
        super().__init__(backbone, coreset_ratio=coreset_ratio, neighbours=neighbours, **kwargs)

    def _embed(self, maps):
        maps = [keras.layers.AveragePooling2D(3, strides=1, padding="same")(m) for m in maps]
        height, width = maps[0].shape[1:3]
        resized = [m if m.shape[1:3] == (height, width) else
                   keras.layers.Resizing(height, width, interpolation="bilinear")(m) for m in maps[1:]]
        return keras.layers.Concatenate(axis=-1)([maps[0], *resized])

    def _fit_features(self, embedded):
        patches = embedded.reshape(-1, embedded.shape[-1])
        keep = max(1, int(round(len(patches) * self.config["coreset_ratio"])))
        index = coreset_lib.greedy_k_center(patches, keep, seed=self.config["seed"])
        self._bank = patches[index]

    def _score(self, features):
        layer = NearestNeighbourScore(len(self._bank), self._bank.shape[1],
                                      neighbours=min(self.config["neighbours"], len(self._bank)), reweight=True,
                                      name="nearest_neighbour")
        patch_scores, score = layer(features)
        layer.set_bank(self._bank)
        return keras.layers.Identity(name="score_raw")(score), patch_scores


class PaDiM(Detector):
    """PaDiM (Defard et al. 2020): one Gaussian per position of three stages' features, Mahalanobis distance.

    The maps of three stages (default strides 4, 8 and 16) are resized to the
    finest grid and concatenated; a fixed random subset of `channels` of
    them is kept (a frozen 1x1 selection); each position gets the mean and
    covariance (+ 0.01 I) of the normal images there.
    """

    method = "padim"
    default_stages = (1, 2, 3)

    def __init__(self, backbone="resnet18", *, channels: int = 100, **kwargs):
        super().__init__(backbone, channels=channels, **kwargs)

    def _embed(self, maps):
        height, width = maps[0].shape[1:3]
        resized = [m if m.shape[1:3] == (height, width) else
                   keras.layers.Resizing(height, width, interpolation="nearest")(m) for m in maps[1:]]
        joined = keras.layers.Concatenate(axis=-1)([maps[0], *resized])
        total = joined.shape[-1]
        channels = min(self.config["channels"], total)
        chosen = np.sort(np.random.default_rng(self.config["seed"]).choice(total, channels, replace=False))
        select = keras.layers.Conv2D(channels, 1, use_bias=False, trainable=False, name="channel_subset")
        select.build(joined.shape)
        kernel = np.zeros((1, 1, total, channels), "float32")
        kernel[0, 0, chosen, np.arange(channels)] = 1.0
        select.set_weights([kernel])
        return select(joined)

    def _fit_features(self, embedded):
        n, height, width, dim = embedded.shape
        if n < 2:
            raise ValueError("PaDiM needs at least 2 normal images to estimate a covariance.")
        flat = embedded.reshape(n, height * width, dim).astype("float64")
        mean = flat.mean(axis=0)
        centred = flat - mean
        covariance = np.einsum("npd,npe->pde", centred, centred) / (n - 1) + 0.01 * np.eye(dim)
        self._gaussians = (height, width, mean.astype("float32"), np.linalg.inv(covariance).astype("float32"))

    def _score(self, features):
        height, width, mean, inverse = self._gaussians
        layer = MahalanobisScore(height, width, features.shape[-1], name="mahalanobis")
        patch_scores = layer(features)
        layer.set_gaussians(mean, inverse)
        column = keras.layers.Reshape((height * width, 1), name="score_positions")(patch_scores)
        score = keras.layers.GlobalMaxPooling1D(name="score_max")(column)
        return keras.layers.Reshape((), name="score_raw")(score), patch_scores


class KNN(Detector):
    """kNN on pooled last-stage features (DN2, the baseline PANDA starts from): image scores only."""

    method = "knn"
    default_stages = None

    def __init__(self, backbone="resnet18", *, neighbours: int = 2, stages=None, **kwargs):
        from kzoo.models import model_entry

        last = len(model_entry(backbone).family.stage_strides) - 1
        super().__init__(backbone, stages=(last,) if stages is None else stages, neighbours=neighbours, **kwargs)

    def _embed(self, maps):
        return keras.layers.GlobalAveragePooling2D()(maps[-1])

    def _fit_features(self, embedded):
        self._bank = embedded

    def _score(self, features):
        layer = NearestNeighbourScore(len(self._bank), self._bank.shape[1],
                                      neighbours=min(self.config["neighbours"], len(self._bank)), name="nearest_neighbour")
        score = layer(features)
        layer.set_bank(self._bank)
        return keras.layers.Identity(name="score_raw")(score), None
