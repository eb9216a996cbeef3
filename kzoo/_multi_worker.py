"""Multi-worker training through the tf_keras twin: `training.fit` under a MultiWorkerMirroredStrategy.

Keras 3's `fit` fails under MultiWorkerMirroredStrategy ("Attempt to convert
a value (PerReplica...)", keras-team/keras#20585), while tf_keras' `fit` runs
it. So the Keras 3 model is rebuilt in tf_keras inside the strategy's scope
(`compress.bridge`), every worker is given the chief's weights, tf_keras
trains it (gradients all-reduced each step), and the weights are copied back
into the Keras 3 model, layer by layer. Imported only by `training.fit`.
"""

from __future__ import annotations

import os
import re
import warnings

import keras
import numpy as np
import tensorflow as tf
import tf_keras

from kzoo import _training_core as core
from kzoo import distribute
from kzoo._io import atomic_write
from kzoo import tf_keras_bridge as bridge


def fit(model, train, val, distribution, policy, compile_for, *, epochs, steps_per_epoch, checkpoint_dir,
        backup_every_steps, callbacks, verbose):
    """`training.fit`'s multi-worker path; the arguments are fit's, already checked.

    `compile_for(twin, train, val, library=tf_keras)` compiles the twin.
    """
    _check_callbacks(callbacks)
    warn_if_unseeded(train, distribute.num_workers())
    keras_model = model if isinstance(model, keras.Model) else core.model_for(model, "float32", True)
    source = core.model_for(keras_model, policy, True)  # A clone under a mixed policy.
    with distribution.scope():
        twin, layer_pairs = bridge.to_tf_keras(source, with_layer_pairs=True)
        broadcast_from_chief(distribution, twin)
        train, val = compile_for(twin, train, val, library=tf_keras)

    def hand_back():
        for layer, twin_layer in layer_pairs:
            layer.set_weights(twin_layer.get_weights())
        if source is not keras_model:
            keras_model.set_weights(source.get_weights())

    chief = distribute.is_chief()
    own = core.checkpoint_callbacks(
        checkpoint_dir, val is not None, backup_every_steps, library=tf_keras, chief=chief,
        save_best=lambda path, monitor: SaveBestKeras3(path, monitor, keras_model, hand_back),
    )
    try:
        history = core.run_fit(
            twin, train, val, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=[*own, *callbacks],
            # tf_keras' progress bar shows the workers' running metrics summed (2x with two
            # workers, seen here); one line per epoch shows the all-reduced ones.
            verbose=(2 if verbose == "auto" else verbose) if chief else 0,
        )
    except (tf.errors.UnavailableError, tf.errors.AbortedError) as error:
        raise RuntimeError(_worker_lost(error, checkpoint_dir)) from error
    hand_back()
    if checkpoint_dir and chief:  # tf_keras deletes the backup's "chief" folder: tidy its parent too.
        try:
            os.rmdir(os.path.join(checkpoint_dir, "backup"))
        except OSError:
            pass
    history.model = keras_model
    return history


def broadcast_from_chief(distribution, model):
    """Sets every replica's weights to those of the first replica, which is on the chief.

    The strategy broadcasts a variable's initial value when it is created, but
    the bridge sets the weights after that, and each worker's Keras 3 model
    may hold its own random initialisation. The strategy has no public
    broadcast, so this is one all-reduce to which only replica 0 contributes.
    """
    weights = model.get_weights()
    if not weights:
        return
    flat = np.concatenate([w.ravel() for w in weights])

    @tf.function
    def from_first_replica(values):
        def keep_first(local):
            first = tf.distribute.get_replica_context().replica_id_in_sync_group == 0
            return tf.where(first, local, tf.zeros_like(local))

        return distribution.reduce(tf.distribute.ReduceOp.SUM, distribution.run(keep_first, args=(values,)),
                                   axis=None)

    chief_values = from_first_replica(tf.constant(flat)).numpy()
    ends = np.cumsum([w.size for w in weights])[:-1]
    model.set_weights([part.reshape(w.shape).astype(w.dtype) for part, w in zip(np.split(chief_values, ends), weights)])


def warn_if_unseeded(train, workers: int):
    """Warns when several workers get a kzoo pipeline made without a seed.

    tf.distribute shards by examples unless the dataset reads enough files;
    then each worker keeps every N-th example of its own order, and workers
    that shuffle differently may train on overlapping examples. kzoo's
    pipelines mark themselves non-deterministic exactly when they have no seed.
    """
    if workers > 1 and train.options().deterministic is False:
        warnings.warn(
            f"The training dataset was made without a seed, and {workers} workers share it. When tf.distribute "
            "shards it by examples, each worker keeps every N-th example of its own shuffled order, so the "
            "workers may train on overlapping examples. Pass seed= to kzoo.data.load (the same on every worker).",
            stacklevel=3,
        )


def _check_callbacks(callbacks):
    for callback in callbacks:
        if not isinstance(callback, tf_keras.callbacks.Callback):
            raise ValueError(
                f"callbacks: {callback!r} is not a tf_keras callback. Under a multi-worker strategy kzoo trains "
                "the model's tf_keras twin (Keras 3's fit cannot run there), and the callbacks see that twin as "
                f"self.model: pass tf_keras.callbacks.{type(callback).__name__} or a "
                "tf_keras.callbacks.Callback subclass."
            )


class SaveBestKeras3(tf_keras.callbacks.Callback):
    """Saves the Keras 3 model, with the twin's current weights, when `monitor` reaches a new maximum.

    tf_keras' ModelCheckpoint would save the twin: a tf_keras file, which
    Keras 3's `load_model` does not read. Written atomically.
    """

    def __init__(self, path, monitor, keras_model, hand_back):
        super().__init__()
        self.path, self.monitor, self.keras_model, self.hand_back = path, monitor, keras_model, hand_back
        self.best = -np.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or value <= self.best:
            return
        self.best = value
        self.hand_back()
        atomic_write(self.path, self.keras_model.save, suffix=".keras")


def _worker_lost(error, checkpoint_dir) -> str:
    reason = " ".join(re.sub(r"\{\{.*?\}\}", "", str(error)).split())[:300]  # Without TF's op-name prefix.
    resume = (
        f"they resume from the last backup in {os.path.join(checkpoint_dir, 'backup')}"
        if checkpoint_dir
        else "without checkpoint_dir= the run starts over (pass checkpoint_dir= to resume from a backup)"
    )
    return (
        f"A worker was lost during multi-worker training ({reason}). A MultiWorkerMirroredStrategy job cannot go "
        f"on without one of its workers: start all workers again with the same command; {resume}. "
        "`python -m kzoo.launch --restarts N` does that for local workers."
    )
