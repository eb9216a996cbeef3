"""FGSM and PGD: adversarial examples for a model, in kzoo's [0, 1] image range, on its logits.

Gradients are taken of the cross-entropy on the logits, also when the model
ends in a softmax (a saturated softmax hides the gradient and makes a model
look robust when it is not): the last Dense layer is applied without its
activation. BatchNormalization and Dropout run in inference mode while
crafting, so crafting moves no statistics. The gradient comes from
TensorFlow's `GradientTape` (Keras 3 has no backend-neutral input gradient).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from kzoo import _backend
from kzoo._training_core import outputs_probabilities
from kzoo.data import checks

_NEEDS = "kzoo.robust's attacks (input gradients by tf.GradientTape)"

NORMS = ("linf", "l2")
BATCH = 256


def fgsm(model, images, labels=None, *, eps: float = 0.1, norm: str = "linf", targeted: bool = False) -> np.ndarray:
    """The fast gradient sign method (Goodfellow et al. 2015): one step of size `eps`.

    Args:
        model: A classifier (softmax or logits output) taking images in [0, 1].
        images: `(n, H, W, C)` images in [0, 1] (uint8 0-255 is scaled).
        labels: Class ids to move away from (or, with `targeted`, towards);
            None uses the model's own predictions, so no true label leaks in.
        eps: The perturbation's size: its largest pixel change ("linf") or
            its Euclidean norm per image ("l2"), in [0, 1] units.
        norm: "linf" or "l2".
        targeted: Move towards `labels` instead of away from them.

    Returns:
        The adversarial images, float32, clipped to [0, 1].

    Raises:
        ValueError: For eps < 0, an unknown norm, images outside [0, 1], or
            labels that are not class ids of the model.
    """
    return PGD(eps=eps, step=eps, steps=1, random_start=False, norm=norm, targeted=targeted)(model, images, labels)


def pgd(model, images, labels=None, *, eps: float = 0.3, step: float = 0.01, steps: int = 40, restarts: int = 1,
        norm: str = "linf", targeted: bool = False, seed: int | None = 0) -> np.ndarray:
    """Projected gradient descent (Madry et al. 2018): `steps` steps of size `step` from a random start in the ball.

    Each step moves by `step` along the gradient's sign ("linf") or its
    direction ("l2"), then projects back onto the eps-ball around the image
    and onto [0, 1]. With `restarts` > 1, each image keeps the restart with
    the highest loss (the lowest, when targeted). Args as `fgsm`, and `seed`
    for the random starts (a seed repeats the attack exactly).
    """
    return PGD(eps=eps, step=step, steps=steps, restarts=restarts, norm=norm, targeted=targeted, seed=seed)(
        model, images, labels)


@dataclass(frozen=True)
class PGD:
    """A PGD attack's settings, callable as `attack(model, images, labels)`; FGSM is `steps=1` without random start.

    `robust_accuracy` and adversarial training take one of these.
    """

    eps: float = 0.3
    step: float | None = None  # Default: 2.5 * eps / steps (Madry et al.'s rule of thumb).
    steps: int = 40
    restarts: int = 1
    norm: str = "linf"
    targeted: bool = False
    random_start: bool = True
    seed: int | None = 0

    def __post_init__(self):
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or self.eps < 0:
            raise ValueError(f"eps={self.eps!r} must be a number >= 0: the perturbation's size in [0, 1] pixel units.")
        if self.norm not in NORMS:
            raise ValueError(f"norm={self.norm!r} is not one of {NORMS}.")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps={self.steps!r} must be a positive integer.")
        if isinstance(self.restarts, bool) or not isinstance(self.restarts, int) or self.restarts < 1:
            raise ValueError(f"restarts={self.restarts!r} must be a positive integer.")

    @property
    def name(self) -> str:
        return "fgsm" if self.steps == 1 and not self.random_start else f"pgd-{self.steps}"

    def __call__(self, model, images, labels=None) -> np.ndarray:
        _backend.tensorflow(_NEEDS, backend=True)
        images = checks.unit_images(np.asarray(images), "images")
        if self.eps == 0:
            return images.astype("float32")
        logits = logits_function(model)
        num_classes = model.outputs[0].shape[-1]
        if labels is not None:
            labels = checks.class_ids(labels, "labels", num_classes=num_classes, count=len(images))
        rng = np.random.default_rng(self.seed)
        out = []
        for start in range(0, len(images), BATCH):
            batch = images[start:start + BATCH].astype("float32")
            target = (np.asarray(logits(batch)).argmax(-1) if labels is None else labels[start:start + BATCH])
            out.append(self._attack_batch(logits, batch, target.astype("int32"), rng))
        return np.concatenate(out)

    def _attack_batch(self, logits, images, labels, rng):
        best, best_loss = images, np.full(len(images), -np.inf)
        for _ in range(self.restarts):
            start = self._random_start(images.shape, rng) if self.random_start else np.zeros_like(images)
            x = np.asarray(craft_in_graph(logits, images, labels, self, start=start))
            loss = _loss(logits, x, labels)
            score = -loss if self.targeted else loss
            better = score > best_loss
            best = np.where(better[:, None, None, None], x, best)
            best_loss = np.where(better, score, best_loss)
        return best.astype("float32")

    def _random_start(self, shape, rng):
        if self.norm == "linf":
            return rng.uniform(-self.eps, self.eps, shape).astype("float32")
        direction = rng.normal(size=shape)
        direction /= np.sqrt(np.sum(direction ** 2, axis=(1, 2, 3), keepdims=True))
        radius = self.eps * rng.uniform(0, 1, (shape[0], 1, 1, 1)) ** (1 / np.prod(shape[1:]))
        return (direction * radius).astype("float32")


def FGSM(eps: float = 0.1, norm: str = "linf", targeted: bool = False) -> PGD:  # noqa: N802  (reads as a class)
    """FGSM's settings: one step of size eps, no random start."""
    return PGD(eps=eps, step=eps, steps=1, random_start=False, norm=norm, targeted=targeted)


def logits_function(model):
    """`images -> logits` in inference mode: the model itself, or without its final softmax.

    Raises:
        ValueError: For a softmax model whose last layer is not a Dense layer
            (its logits cannot be had), or a model without one class output.
    """
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise ValueError(f"{model.name} has outputs {[tuple(o.shape) for o in model.outputs]}: the attacks take a "
                         "classifier with one (batch, classes) output.")
    if not outputs_probabilities(model):
        return lambda x: model(x, training=False)
    last = model.layers[-1]
    if not isinstance(last, keras.layers.Dense):
        raise ValueError(
            f"{model.name} ends in a softmax inside {type(last).__name__} {last.name!r}; the attacks need its "
            "logits. Give a model that ends in a Dense layer (softmax or logits)."
        )
    features = keras.Model(model.input, last.input)
    return lambda x: keras.ops.matmul(features(x, training=False), last.kernel) + last.bias


def _loss(logits, images, labels) -> np.ndarray:
    """Per-image cross-entropy on the logits: how well a restart did."""
    return np.asarray(keras.losses.sparse_categorical_crossentropy(labels, logits(images), from_logits=True))


def craft_in_graph(logits, images, labels, attack: PGD, start=None):
    """The attack's steps as TensorFlow ops: eagerly for `PGD.__call__`, traced into a training step for `fit`.

    From `images + start` (default: uniform in the eps-ball when the attack
    has a random start), `attack.steps` steps of `attack.step` along the
    gradient's sign ("linf") or direction ("l2"), each projected onto the
    eps-ball around the images and onto [0, 1]. The result carries no
    gradient back to the weights.
    """
    tf = _backend.tensorflow(_NEEDS, backend=True)

    eps = float(attack.eps)
    step = attack.step if attack.step is not None else 2.5 * eps / attack.steps
    images = tf.cast(images, tf.float32)
    if start is None:
        start = tf.random.uniform(tf.shape(images), -eps, eps) if attack.random_start else tf.zeros_like(images)
    x = _project(images, images + tf.cast(start, tf.float32), attack)
    for _ in range(attack.steps):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = keras.losses.sparse_categorical_crossentropy(labels, tf.cast(logits(x), tf.float32),
                                                                from_logits=True)
        gradient = tape.gradient(loss, x)
        if gradient is None:
            raise ValueError("The model's output does not depend differentiably on its input (no gradient): the "
                             "attacks need a differentiable path from image to logits.")
        gradient = -gradient if attack.targeted else gradient
        if attack.norm == "linf":
            direction = tf.sign(gradient)
        else:
            direction = gradient / tf.maximum(tf.sqrt(tf.reduce_sum(gradient ** 2, axis=[1, 2, 3], keepdims=True)),
                                              1e-12)
        x = _project(images, x + step * direction, attack)
    return tf.stop_gradient(x)


def _project(images, x, attack):
    """Onto the eps-ball around `images` (in the attack's norm), then onto [0, 1]."""
    import tensorflow as tf

    delta = x - images
    if attack.norm == "linf":
        delta = tf.clip_by_value(delta, -attack.eps, attack.eps)
    else:
        norms = tf.sqrt(tf.reduce_sum(delta ** 2, axis=[1, 2, 3], keepdims=True))
        delta = delta * tf.minimum(1.0, attack.eps / tf.maximum(norms, 1e-12))
    return tf.clip_by_value(images + delta, 0.0, 1.0)
