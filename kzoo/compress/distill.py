"""Knowledge distillation (Hinton et al. 2015): a student learns the teacher's softened outputs and the labels."""

from __future__ import annotations

import keras

from kzoo.objectives import Distiller


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
