"""Training objectives that need the inputs: distillation (a teacher's soft targets) and adversarial training.

Keras' losses see only labels and predictions. The Distiller wraps the
student and overrides `compute_loss`; adversarial training replaces the
trained model's `train_step` for the run (`adversarial_training`), so the
model itself trains, checkpoints and resumes under the ordinary `fit`.
"""

from __future__ import annotations

import keras
from keras import ops

from kzoo import _backend
from kzoo._training_core import outputs_probabilities


class Distiller(keras.Model):
    """Trains `student` on `alpha * hard loss + (1 - alpha) * T^2 * KL(teacher_T || student_T)`.

    Keras has no distillation loss that sees the inputs (the teacher needs
    them), so this overrides `compute_loss`, as in the keras.io example.

    Args:
        teacher: A trained model; it is not updated.
        student: The model to train.
        temperature: Softmax temperature of both soft targets.
        alpha: Weight of the hard-label cross-entropy.
    """

    def __init__(self, teacher, student, *, temperature=4.0, alpha=0.1, **kwargs):
        super().__init__(**kwargs)
        self.teacher, self.student = teacher, student
        self.temperature, self.alpha = float(temperature), float(alpha)
        self.teacher.trainable = False
        self._teacher_probs = outputs_probabilities(teacher)
        self._student_probs = outputs_probabilities(student)

    def call(self, images, training=False):
        return self.student(images, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        teacher_logits = _logits(self.teacher(x, training=False), self._teacher_probs)
        student_logits = _logits(y_pred, self._student_probs)
        if len(y.shape) == 1:
            hard = keras.losses.sparse_categorical_crossentropy(y, student_logits, from_logits=True)
        else:
            hard = keras.losses.categorical_crossentropy(y, student_logits, from_logits=True)
        soft_teacher = ops.softmax(teacher_logits / self.temperature)
        soft_student = ops.softmax(student_logits / self.temperature)
        soft = keras.losses.kl_divergence(soft_teacher, soft_student) * self.temperature ** 2
        return ops.mean(self.alpha * hard + (1.0 - self.alpha) * soft)


def _logits(outputs, are_probabilities):
    # log(p) differs from the logits by a constant per image: the same softmax at any temperature.
    return ops.log(ops.maximum(outputs, 1e-7)) if are_probabilities else outputs


def adversarial_training(model, attack, *, ratio: float = 1.0):
    """Makes `model.train_step` train on adversarial examples crafted per batch (Madry et al. 2018); returns an undo.

    Each step crafts `attack` (a `kzoo.robust.PGD`) against the current
    weights, with BatchNorm and Dropout in inference mode and the batch's
    true labels (one-hot labels by their top class), then takes the
    ordinary training step (training mode) on a batch whose first `ratio` of
    images are the adversarial ones and the rest clean. Installing it on the
    instance leaves the model's class, config and saved files as they are.

    Args:
        model: The Keras 3 model `fit` trains (TensorFlow backend).
        attack: A `kzoo.robust.PGD` (or `kzoo.robust.FGSM(...)`).
        ratio: Fraction of each batch replaced by its adversarial examples.

    Returns:
        A function that restores the model's own `train_step`.
    """
    tf = _backend.tensorflow("training.fit(adversarial=...)", backend=True)

    from kzoo.robust.attacks import PGD, craft_in_graph, logits_function

    if not isinstance(attack, PGD):
        raise ValueError(f"adversarial={attack!r} must be a kzoo.robust.PGD (or robust.FGSM(...)) attack.")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"adversarial_ratio={ratio} must be in (0, 1]: the share of each batch made adversarial.")
    logits = logits_function(model)
    own_step = type(model).train_step

    def train_step(data):
        images, labels = data[0], data[1]
        ids = tf.cast(labels if len(labels.shape) == 1 else tf.argmax(labels, axis=-1), tf.int32)
        crafted = craft_in_graph(logits, images, ids, attack)
        if ratio < 1.0:
            count = tf.cast(tf.math.ceil(ratio * tf.cast(tf.shape(images)[0], tf.float32)), tf.int32)
            crafted = tf.concat([crafted[:count], tf.cast(images[count:], crafted.dtype)], axis=0)
        return own_step(model, (tf.cast(crafted, images.dtype), labels, *data[2:]))

    model.train_step = train_step
    model.train_function = None  # fit traces the step again, with this one.

    def undo():
        del model.train_step
        model.train_function = None

    return undo
