"""Batch-level augmentation on Keras preprocessing layers: presets, MixUp/CutMix, preview.

A `BatchAugment` maps an `(images, labels)` batch to an augmented one inside
tf.data: every op is vectorized over the batch, with a fresh random draw per
image. Images are float32 in [0, 1].
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from keras import layers

from kzoo._io import pyplot, save_figure
from kzoo.data import checks


def to_float(images):
    """uint8 0-255 to float32 0-1; float images pass through as float32."""
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return tf.cast(images, tf.float32)


class BatchAugment:
    """Image layers applied to the batch, then optional MixUp or CutMix.

    Args:
        image_layers: Keras layers applied in order with `training=True`.
        mix: None, `keras.layers.MixUp` or `keras.layers.CutMix`; labels become
            one-hot float32 (they still sum to one per image).
        num_classes: Needed with `mix`; filled in by the data pipeline.
    """

    def __init__(self, image_layers, *, mix=None, num_classes=None):
        self.image_layers = list(image_layers)
        self.mix = mix
        self.num_classes = num_classes

    def __call__(self, images, labels):
        images = to_float(images)
        for layer in self.image_layers:
            # kzoo's layers are TensorFlow ops throughout: calling them directly keeps Keras from converting
            # the tf.data graph's tensors to another backend's; Keras' own image layers handle that themselves.
            images = layer.call(images, training=True) if isinstance(layer, _IN_RANGE_LAYERS) else layer(
                images, training=True)
        if not self.image_layers or not isinstance(self.image_layers[-1], _IN_RANGE_LAYERS):
            images = tf.clip_by_value(images, 0.0, 1.0)
        if self.mix is None:
            return images, labels
        if not self.num_classes:
            raise ValueError("MixUp/CutMix need num_classes to one-hot the labels.")
        one_hot = tf.one_hot(tf.cast(labels, tf.int32), self.num_classes)
        mixed = self.mix({"images": images, "labels": one_hot}, training=True)
        return mixed["images"], mixed["labels"]

    def __repr__(self):
        names = [type(layer).__name__ for layer in self.image_layers]
        mix = f", mix={type(self.mix).__name__}" if self.mix else ""
        return f"BatchAugment({names}{mix})"


class _Draws:
    """A layer's random numbers from TensorFlow's own generator, seeded, so the layer runs in tf.data on every backend.

    `keras.random` draws with the backend's generator, which under JAX or
    PyTorch cannot run inside a tf.data graph; Keras' own image layers switch
    to TensorFlow there through a private base class (`TFDataLayer`), which
    kzoo's layers, all TensorFlow image ops, need not borrow.
    """

    def __init__(self, seed):
        self.generator = (tf.random.Generator.from_seed(seed) if seed is not None
                          else tf.random.Generator.from_non_deterministic_state())

    def uniform(self, shape, low=0.0, high=1.0):
        return self.generator.uniform(shape, low, high)


class RandomResizedCrop(layers.Layer):
    """Inception-style crop: a random area and aspect ratio per image, resized back.

    Keras 3 has no such layer; this one samples one box per image and crops
    the whole batch with a single `tf.image.crop_and_resize`, which also
    mirrors a crop whose box runs right to left: flips cost nothing.

    Args:
        size: Output (height, width).
        scale: Range of the crop's area as a fraction of the image.
        ratio: Range of the crop's aspect ratio (width / height).
        flip: Mirror half of the crops horizontally.
        seed: Random seed.
    """

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.scale, self.ratio, self.flip, self.seed = tuple(scale), tuple(ratio), flip, seed
        self.draws = _Draws(seed)

    def call(self, images, training=True):
        if not training:
            return tf.image.resize(images, self.size)
        batch = tf.shape(images)[0]
        area = self.draws.uniform((batch,), *self.scale)
        log_ratio = self.draws.uniform((batch,), math.log(self.ratio[0]), math.log(self.ratio[1]))
        aspect = tf.exp(log_ratio)
        height = tf.minimum(tf.sqrt(area / aspect), 1.0)
        width = tf.minimum(tf.sqrt(area * aspect), 1.0)
        top = self.draws.uniform((batch,)) * (1.0 - height)
        left = self.draws.uniform((batch,)) * (1.0 - width)
        right = left + width
        if self.flip:
            mirror = self.draws.uniform((batch,)) < 0.5
            left, right = tf.where(mirror, right, left), tf.where(mirror, left, right)
        boxes = tf.stack([top, left, top + height, right], axis=1)
        return tf.image.crop_and_resize(images, boxes, tf.range(batch), self.size)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "scale": self.scale,
                "ratio": self.ratio, "flip": self.flip, "seed": self.seed}


class RandomAffine(layers.Layer):
    """Rotation, zoom and shift in one resampling per image.

    Keras 3 has these as three layers, and chaining them resamples (and
    blurs) each image three times at three times the cost; this layer draws
    all three per image and applies one projective transform to the batch.

    Args:
        rotation: Max rotation as a fraction of a full turn (0.04 = 14.4 degrees).
        translation: Max shift as a fraction of height and width.
        zoom: Max zoom in or out as a fraction (0.1: scale 0.9 to 1.1).
        seed: Random seed.
    """

    def __init__(self, rotation=0.0, translation=0.0, zoom=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rotation, self.translation, self.zoom, self.seed = rotation, translation, zoom, seed
        self.draws = _Draws(seed)

    def call(self, images, training=True):
        if not training:
            return images
        batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
        height_f, width_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)

        def uniform(limit):
            return self.draws.uniform((batch,), -limit, limit)

        angle = uniform(self.rotation) * 2.0 * math.pi
        scale = 1.0 + uniform(self.zoom)
        shift_x, shift_y = uniform(self.translation) * width_f, uniform(self.translation) * height_f
        # The transform maps each output pixel back to the input: rotate by
        # -angle and scale by 1/scale about the centre, after undoing the shift.
        cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
        centre_x, centre_y = (width_f - 1.0) / 2.0, (height_f - 1.0) / 2.0
        source_x, source_y = centre_x + shift_x, centre_y + shift_y
        transforms = tf.stack(
            [cos, sin, centre_x - cos * source_x - sin * source_y,
             -sin, cos, centre_y + sin * source_x - cos * source_y,
             tf.zeros_like(cos), tf.zeros_like(cos)],
            axis=1,
        )
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=tf.stack([height, width]),
            fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT",
        )

    def get_config(self):
        return {**super().get_config(), "rotation": self.rotation, "translation": self.translation,
                "zoom": self.zoom, "seed": self.seed}


class ColorJitter(layers.Layer):
    """torchvision-style colour jitter: brightness, contrast and saturation in one blend.

    Brightness (scale by b), contrast (blend with the image's mean gray, by c)
    and saturation (blend with each pixel's gray, by s) are all linear in the
    pixel, so in torchvision's order they compose into one per-image blend,
    `c*b*(s*x + (1-s)*gray(x)) + (1-c)*b*mean_gray(x)`, clipped once to [0, 1].
    That is three passes over the batch where applying them one by one (or
    Keras' RandomBrightness/RandomContrast/RandomSaturation, which go through
    HSV) takes a dozen; it was half the ImageNet preset's time. torchvision
    clips after each step, so results differ only where an intermediate
    value left [0, 1]. Hue, which needs HSV, is applied only when asked for.

    Args:
        brightness, contrast, saturation: Each factor is drawn per image from
            [1 - value, 1 + value]; 0 turns it off.
        hue: Max hue shift as a fraction of the colour circle (Keras' RandomHue).
        seed: Random seed.
    """

    def __init__(self, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        self.seed = seed
        self.draws = _Draws(seed)
        self.random_hue = layers.RandomHue(hue, value_range=(0, 1), seed=seed) if hue else None

    def call(self, images, training=True):
        if not training:
            return images
        batch = tf.shape(images)[0]

        def factor(strength):
            return self.draws.uniform((batch, 1, 1, 1), 1.0 - strength, 1.0 + strength)

        brightness, contrast, saturation = (factor(s) for s in (self.brightness, self.contrast, self.saturation))
        gray = tf.image.rgb_to_grayscale(images) if self.contrast or self.saturation else None
        scale = contrast * brightness
        images = scale * saturation * images
        if self.saturation:
            images += scale * (1.0 - saturation) * gray
        if self.contrast:
            images += (1.0 - contrast) * brightness * tf.reduce_mean(gray, axis=[1, 2, 3], keepdims=True)
        images = tf.clip_by_value(images, 0.0, 1.0)
        if self.random_hue is not None:
            images = self.random_hue(images, training=True)
        return images

    def get_config(self):
        return {**super().get_config(), "brightness": self.brightness, "contrast": self.contrast,
                "saturation": self.saturation, "hue": self.hue, "seed": self.seed}


# kzoo's layers map [0, 1] into [0, 1] (resampling, zero fill, a clipped
# blend): after them BatchAugment's clip would be a wasted pass over the batch.
_IN_RANGE_LAYERS = (RandomResizedCrop, RandomAffine, ColorJitter)


def _mix(mixup_alpha, cutmix_alpha, seed):
    if mixup_alpha and cutmix_alpha:
        raise ValueError("Choose MixUp or CutMix, not both (mixup_alpha and cutmix_alpha).")
    if mixup_alpha:
        return layers.MixUp(alpha=mixup_alpha, seed=seed)
    if cutmix_alpha:
        return layers.CutMix(factor=cutmix_alpha, seed=seed)
    return None


def mnist(*, rotation=0.04, translation=0.1, zoom=0.1, mixup_alpha=None, cutmix_alpha=None, seed=None):
    """Small affine jitter for digits; no flips (a flipped 2 is not a 2).

    Args:
        rotation: Max rotation as a fraction of a full turn (0.04 = 14 degrees).
        translation: Max shift as a fraction of height/width.
        zoom: Max zoom in or out, as a fraction.
        mixup_alpha, cutmix_alpha: Enable MixUp or CutMix with this parameter.
        seed: Random seed.
    """
    return BatchAugment(
        [RandomAffine(rotation=rotation, translation=translation, zoom=zoom, seed=seed)],
        mix=_mix(mixup_alpha, cutmix_alpha, seed),
    )


def cifar(*, pad=4, image_size=32, flip=True, mixup_alpha=None, cutmix_alpha=None, seed=None):
    """He et al. 2015: pad by `pad` pixels, random crop back, horizontal flip.

    Pad-and-crop is a per-image random shift of up to `pad` pixels with zero
    fill (`RandomTranslation`); Keras' `RandomCrop` would shift the whole batch
    by one offset.
    """
    shift = pad / image_size
    image_layers = [
        layers.RandomTranslation(shift, shift, fill_mode="constant", interpolation="nearest", seed=seed)
    ]
    if flip:
        image_layers.append(layers.RandomFlip("horizontal", seed=seed))
    return BatchAugment(image_layers, mix=_mix(mixup_alpha, cutmix_alpha, seed))


def imagenet(*, image_size=224, scale=(0.08, 1.0), flip=True, color=0.4, hue=0.0, rand_augment=False,
             mixup_alpha=None, cutmix_alpha=None, seed=None):
    """Random resized crop, horizontal flip and colour jitter (or RandAugment).

    Args:
        image_size: Output size of the crop.
        scale: Area range of the random resized crop.
        flip: Random horizontal flips.
        color: Strength of brightness/contrast/saturation jitter (0 turns it off).
        hue: Hue jitter (0, the common ImageNet recipes' choice, turns it off).
        rand_augment: Use `keras.layers.RandAugment` instead of the colour jitter.
        mixup_alpha, cutmix_alpha: Enable MixUp or CutMix with this parameter.
        seed: Random seed.
    """
    image_layers = [RandomResizedCrop(image_size, scale=scale, flip=flip, seed=seed)]
    if rand_augment:
        image_layers.append(layers.RandAugment(value_range=(0, 1), seed=seed))
    elif color or hue:
        image_layers.append(ColorJitter(color, color, color, hue=hue, seed=seed))
    return BatchAugment(image_layers, mix=_mix(mixup_alpha, cutmix_alpha, seed))


PRESETS = {"mnist": mnist, "cifar": cifar, "imagenet": imagenet}


def get(augment, *, num_classes=None, seed=None):
    """Resolves the `augment=` argument of the data functions.

    Args:
        augment: None, a preset name, a `BatchAugment`, a Keras layer or a
            callable on an image batch.
        num_classes: Filled into a `BatchAugment` that mixes labels.
        seed: Seed for a preset built from its name.

    Returns:
        None, or a callable `(images, labels) -> (images, labels)`.
    """
    if augment is None:
        return None
    if isinstance(augment, str):
        if augment not in PRESETS:
            raise ValueError(
                f"augment={augment!r} is not a preset; choose one of {sorted(PRESETS)}, or "
                "pass kzoo.augment.<preset>(...) with your settings, or a Keras layer."
            )
        augment = PRESETS[augment](seed=seed)
    if isinstance(augment, BatchAugment):
        if augment.mix is not None and augment.num_classes is None:
            augment.num_classes = num_classes
        return augment
    if callable(augment):
        return BatchAugment([augment if isinstance(augment, layers.Layer) else layers.Lambda(augment)])
    raise ValueError(f"augment={augment!r} must be None, a preset name, a BatchAugment or a callable.")


def preview(dataset, path: str, *, rows: int = 4, columns: int = 8) -> str:
    """Writes a PNG grid of the first images of a batched dataset (atomically).

    Args:
        dataset: Yields `(images, labels)` batches, images in [0, 1].
        path: Where the PNG goes.
        rows, columns: Grid size; batches are taken until it is full.

    Returns:
        The path written.
    """
    plt = pyplot("augment.preview")
    wanted = rows * columns
    images, labels = [], []
    for batch_images, batch_labels in dataset:
        images.extend(np.asarray(batch_images)[: wanted - len(images)])
        labels.extend(checks.top_class(batch_labels)[: wanted - len(labels)])
        if len(images) >= wanted:
            break
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.4, rows * 1.5))
    for index, axis in enumerate(np.ravel(axes)):
        axis.axis("off")
        if index < len(images):
            image = np.clip(images[index], 0, 1)
            axis.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=1)
            axis.set_title(str(labels[index]), fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
    return path
