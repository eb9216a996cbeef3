"""Fine-tuning of tf_keras twins (TFMOT's wrappers train only under tf_keras' own fit)."""

from __future__ import annotations

import os

from kzoo import _training_core as core


def import_tfmot():
    """TFMOT, imported without leaving `TF_USE_LEGACY_KERAS=1` in the environment.

    TFMOT's compat module sets that variable when it is imported; left there,
    every subprocess the user starts afterwards (workers, recipes) would get
    tf_keras for `tf.keras`. TFMOT keeps the tf_keras it resolved.
    """
    from kzoo import _backend

    _backend.tensorflow("kzoo.compress (TFMOT)", backend=True)
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    import tensorflow_model_optimization as tfmot

    if before is None:
        os.environ.pop("TF_USE_LEGACY_KERAS", None)
    else:
        os.environ["TF_USE_LEGACY_KERAS"] = before
    return tfmot


def steps_in(train) -> int:
    """Batches per epoch of a finite dataset (the compress functions take no steps_per_epoch)."""
    return core.steps_per_epoch(train, remedy="take a finite number of batches, e.g. train.take(500)")


def fine_tune(model, train, *, from_logits, epochs, learning_rate, validation=None, callbacks=(), verbose=0):
    """Compiles a tf_keras model (cross-entropy on logits or probabilities), trains it, returns the History."""
    import tf_keras

    core.check_data_fits(model, train, validation)  # The same refusal as training.fit, before TFMOT trains.

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs={epochs!r} must be a non-negative integer.")
    sparse = len(train.element_spec[1].shape) == 1
    model.compile(  # Adam at a constant rate: the schedule's length (epochs, steps) plays no part.
        optimizer=core.make_optimizer("adam", learning_rate, None, "constant", None, epochs, 1, library=tf_keras),
        loss=core.classification_loss(model, sparse, 0.0, library=tf_keras, from_logits=from_logits),
        metrics=["accuracy"],
    )
    if epochs == 0:
        return None
    return model.fit(train, validation_data=validation, epochs=epochs, callbacks=list(callbacks), verbose=verbose)

