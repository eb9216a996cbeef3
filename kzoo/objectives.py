"""Models that change the training objective: each a `keras.Model` that overrides `compute_loss`.

Keras' losses see only labels and predictions; an objective that needs the
inputs (a teacher's soft targets today; adversarial examples next) wraps the
model being trained and trains under the ordinary `fit`.
"""

from __future__ import annotations

import keras
from keras import ops

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
