"""Knowledge distillation (Hinton et al. 2015): a student learns the teacher's softened outputs and the labels."""

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


def distill(teacher, student, train, *, temperature=4.0, alpha=0.1, epochs, learning_rate=1e-3,
            validation=None, verbose="auto"):
    """Trains `student` to mimic `teacher` (soft targets at `temperature`) and fit the labels.

    Args:
        teacher: A trained Keras 3 model (softmax or logits output).
        student: A Keras 3 model with the same number of classes, trained in place.
        train: Batched `(images, labels)` dataset; int or one-hot labels.
        temperature: Softmax temperature (> 0); higher shares more of the
            teacher's "dark knowledge" about wrong classes.
        alpha: Weight of the hard-label loss, in [0, 1].
        epochs: Training epochs.
        learning_rate: Adam's learning rate.
        validation: Optional validation dataset.
        verbose: Keras' progress-bar setting.

    Returns:
        The trained student (the same object that was passed).

    Raises:
        ValueError: For a bad temperature or alpha, or teacher and student
            with different numbers of classes.
    """
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r} must be positive, e.g. 4.0.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha!r} must be in [0, 1], the weight of the hard-label loss.")
    if teacher.outputs[0].shape[-1] != student.outputs[0].shape[-1]:
        raise ValueError(
            f"The teacher has {teacher.outputs[0].shape[-1]} classes and the student "
            f"{student.outputs[0].shape[-1]}: build the student with the teacher's num_classes."
        )
    distiller = Distiller(teacher, student, temperature=temperature, alpha=alpha)
    distiller.compile(optimizer=keras.optimizers.Adam(learning_rate), metrics=["accuracy"])
    distiller.fit(train, validation_data=validation, epochs=epochs, shuffle=False, verbose=verbose)
    return student
