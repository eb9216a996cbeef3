"""The training core: what every training route shares, so each is written once.

Loss (from the model's output and the labels), optimizer, learning-rate
schedule, steps per epoch, compiling, the data check, building or cloning
the model under a precision policy, the checkpoint callbacks, and the call
to `Model.fit`. `training.fit` (one device, several GPUs, TPU), the
multi-worker tf_keras twin (`_multi_worker`) and TFMOT's fine-tuning
(`compress._tune`) read these; `library` is `keras`, or `tf_keras` for twins.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from kzoo import _backend
from kzoo.data import checks

OPTIMIZERS = ("auto", "adam", "adamw", "sgd")
SCHEDULES = ("cosine", "step", "constant")
_DEFAULT_LEARNING_RATE = {"adam": 1e-3, "adamw": 1e-3, "sgd": 0.1}


def run_fit(trained, train, val, *, epochs, steps_per_epoch, callbacks, verbose):
    """`trained.fit` (Keras 3 or the tf_keras twin) as kzoo calls it."""
    return trained.fit(
        train,
        validation_data=val,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        shuffle=False,  # kzoo pipelines shuffle before batching.
        verbose=verbose,
    )


def check_data_fits(trained, train, val=None) -> tuple[tuple, tuple]:
    """Refuses datasets whose images or classes do not fit a model (Keras 3 or tf_keras), before anything trains.

    Returns:
        The (images, labels) shapes of `train`'s batches (`batch_shapes`), read once.

    Raises:
        ValueError: For a model with several outputs, batches that are not `(images, labels)`, images of
            another channel count or size than the model's input, or a kzoo
            pipeline with more classes than the model outputs.
    """
    if len(trained.outputs) > 1:
        raise ValueError(
            f"{trained.name} has {len(trained.outputs)} outputs; kzoo's fit trains one-output classifiers. "
            "For GoogLeNet's auxiliary heads (aux_logits=True), compile it yourself with "
            "loss_weights=[1.0, 0.3, 0.3] and labels repeated per output, or build it without aux_logits."
        )
    num_classes = trained.outputs[0].shape[-1]
    train_shapes = None
    for name, dataset in (("train", train), ("val", val)):
        if dataset is None:
            continue
        shapes = batch_shapes(dataset, name)
        train_shapes = train_shapes or shapes
        checks.fits_model(shapes[0][1:], trained.inputs[0].shape[1:], name)
        _check_label_form(trained, shapes[1], name)
        classes = getattr(dataset, "num_classes", None)
        if classes is not None and num_classes is not None and classes > num_classes:
            raise ValueError(
                f"{name} has {classes} classes but the model outputs {num_classes}: build it with "
                f"num_classes={classes}."
            )
    return train_shapes


def is_segmentation(model) -> bool:
    """True for a model with per-pixel outputs (batch, height, width, classes), such as `kzoo.segment`'s."""
    return len(model.outputs[0].shape) == 4


def _check_label_form(trained, label_shape, name):
    """Masks for a segmentation model (of its output's size), class ids or one-hot rows for a classifier."""
    if is_segmentation(trained):
        mask_size, output_size = tuple(label_shape[1:3]), tuple(trained.outputs[0].shape[1:3])
        if len(label_shape) not in (3, 4) or (len(label_shape) == 4 and label_shape[-1] != 1):
            raise ValueError(f"{name} gives labels of shape {tuple(label_shape)}, but {trained.name} outputs a class "
                             "per pixel: give (images, masks) batches, masks (batch, height, width) of class ids "
                             "(kzoo.segment.from_arrays, from_directory, load).")
        if None not in mask_size + output_size and mask_size != output_size:
            raise ValueError(f"{name} has masks of size {mask_size[0]}x{mask_size[1]}, but {trained.name} outputs "
                             f"{output_size[0]}x{output_size[1]} maps: give masks of the images' size.")
    elif len(label_shape) >= 3:
        raise ValueError(f"{name} gives labels of shape {tuple(label_shape)}, masks it seems, but {trained.name} "
                         "outputs one class per image: build a segmentation model (kzoo.segment.build).")


def monitored(model) -> str:
    """The metric `best.keras` is chosen by: "mean_iou" for segmentation, else "accuracy" (val_ when validating)."""
    return "mean_iou" if is_segmentation(model) else "accuracy"


def compile_model(trained, train, val, *, library, policy, optimizer, learning_rate, weight_decay, schedule,
                  warmup_epochs, epochs, steps, label_smoothing, jit_compile, steps_per_execution=1, loss=None):
    """Compiles `trained`, a `library` (keras or tf_keras) model, in the current scope.

    A segmentation model (`is_segmentation`) gets `kzoo.segment`'s loss (with
    the data's `ignore_class`) and metrics; `loss` replaces the chosen loss.

    Returns:
        `(train, val)`, with one-hot labels when label smoothing needs them.
    """
    train_shapes = check_data_fits(trained, train, val)  # A PyDataset's first batch is made once.
    num_classes = trained.outputs[0].shape[-1]
    if is_segmentation(trained):
        return _compile_segmentation(trained, train, val, library=library, num_classes=num_classes,
                                     label_smoothing=label_smoothing, loss=loss, jit_compile=jit_compile,
                                     steps_per_execution=steps_per_execution,
                                     optimizer=make_optimizer(optimizer, learning_rate, weight_decay, schedule,
                                                              warmup_epochs, epochs, steps, library))
    sparse = len(train_shapes[1]) == 1
    if label_smoothing and sparse:  # Keras' sparse loss has no smoothing: one-hot the labels.
        train, val = (one_hot(d, num_classes) if d is not None else None for d in (train, val))
        sparse = False
    optimizer = make_optimizer(optimizer, learning_rate, weight_decay, schedule, warmup_epochs, epochs, steps, library)
    if library is not keras:  # tf_keras: no "auto" XLA, and no automatic loss scaling for a twin.
        jit_compile = None if jit_compile == "auto" else jit_compile
        if policy == "mixed_float16":
            optimizer = library.mixed_precision.LossScaleOptimizer(optimizer)
    trained.compile(
        optimizer=optimizer,
        loss=loss or classification_loss(trained, sparse, label_smoothing, library),
        metrics=["accuracy"],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return train, val


def _compile_segmentation(trained, train, val, *, library, num_classes, label_smoothing, loss, optimizer,
                          jit_compile, steps_per_execution):
    if library is not keras:
        raise ValueError("Segmentation models train with Keras 3 (any strategy but 'multi_worker').")
    if label_smoothing:
        raise ValueError(f"label_smoothing={label_smoothing} is for one class per image; segmentation masks are "
                         "not smoothed. Pass label_smoothing=0 (class weights: kzoo.segment.SegmentationLoss).")
    from kzoo.segment import losses  # Keras only; kzoo.segment imports nothing of training.

    ignore_class = getattr(train, "ignore_class", None)
    trained.compile(
        optimizer=optimizer,
        loss=loss or losses.SegmentationLoss(ignore_class=ignore_class),
        metrics=losses.metrics(num_classes, ignore_class),
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return train, val


def model_for(model, policy: str, one_device: bool) -> keras.Model:
    """The model to train: built in the strategy scope, or cloned into it, with the policy applied.

    Call inside `strategy.scope()`; `one_device` says whether it is the default strategy.
    """
    built_here = not isinstance(model, keras.Model)
    if built_here:
        if not callable(model):
            raise ValueError(f"model={model!r} must be a keras.Model or a function that builds one.")
        model = model()
    if policy == "float32" and (built_here or one_device):
        return model
    outputs = {tensor._keras_history[0] for tensor in model.outputs}

    def with_policy(layer):
        config = layer.get_config()
        config["dtype"] = "float32" if layer in outputs else policy  # Output stays float32.
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=with_policy)
    clone.set_weights(model.get_weights())
    return clone


def steps_per_epoch(train, steps_per_epoch=None, *, remedy: str = "pass steps_per_epoch=") -> int:
    """Batches per epoch: `steps_per_epoch` when given, else the dataset's length.

    Raises:
        ValueError: For a dataset without a known length (saying `remedy`), or an empty one.
    """
    if steps_per_epoch is not None:
        return steps_per_epoch
    cardinality = len(train) if isinstance(train, keras.utils.PyDataset) else int(train.cardinality())
    if cardinality < 0:
        raise ValueError(f"The training dataset has no known length (it repeats, or was filtered); {remedy}.")
    if cardinality == 0:
        raise ValueError("The training dataset is empty: give it at least one batch.")
    return cardinality


def one_hot(dataset, num_classes):
    """The dataset with one-hot labels: a tf.data map, or `ArrayBatches.with_one_hot`."""
    if isinstance(dataset, keras.utils.PyDataset):
        if not hasattr(dataset, "with_one_hot"):
            raise ValueError("label_smoothing needs one-hot labels: give your PyDataset's batches one-hot labels "
                             "(float rows), or pass label_smoothing=0.")
        return dataset.with_one_hot()
    import tensorflow as tf  # A tf.data dataset: TensorFlow is there.

    return dataset.map(lambda x, y: (x, tf.one_hot(tf.cast(y, tf.int32), num_classes)))


def batch_shapes(dataset, name: str) -> tuple[tuple, tuple]:
    """The (images, labels) shapes of a dataset's batches, batch axis first: from a tf.data element spec, or
    a `keras.utils.PyDataset`'s first batch.

    Raises:
        ValueError: For data of another kind, or batches that are not `(images, labels)`.
    """
    if isinstance(dataset, keras.utils.PyDataset):
        batch = dataset[0]
        shapes = tuple(tuple(np.shape(part)) for part in batch) if isinstance(batch, (tuple, list)) else None
    elif hasattr(dataset, "element_spec"):
        spec = dataset.element_spec
        shapes = tuple(tuple(part.shape) for part in spec) if isinstance(spec, tuple) else None
    else:
        raise ValueError(f"{name} is a {type(dataset).__name__}; kzoo trains on (images, labels) NumPy arrays, a "
                         "keras.utils.PyDataset, or a tf.data.Dataset (kzoo.data.load, from_arrays ...).")
    if shapes is None or len(shapes) < 2:
        raise ValueError(f"{name} must give (images, labels) batches; it gives "
                         f"{getattr(dataset, 'element_spec', type(dataset).__name__)}.")
    return shapes


def outputs_probabilities(model: keras.Model) -> bool:
    """True when the model ends in a softmax (probabilities), False for logits."""
    activation = getattr(model.layers[-1], "activation", None)
    return getattr(activation, "__name__", "") == "softmax"


def classification_loss(model, sparse: bool, label_smoothing: float, library=keras, from_logits: bool | None = None):
    """Cross-entropy for the labels (sparse or one-hot) on the model's output (probabilities or logits).

    `from_logits` overrides what the model's last layer says (TFMOT's wrappers hide its activation).
    """
    from_logits = not outputs_probabilities(model) if from_logits is None else from_logits
    if sparse:
        return library.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    return library.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=label_smoothing)


def make_optimizer(optimizer, learning_rate, weight_decay, schedule, warmup_epochs, epochs, steps, library=keras):
    if isinstance(optimizer, library.optimizers.Optimizer):
        return optimizer
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        twin_note = "" if library is keras else (
            " Under a multi-worker strategy kzoo trains the model's tf_keras twin, so a Keras 3 optimizer "
            "cannot be used there: give the name, or a tf_keras optimizer."
        )
        raise ValueError(
            f"optimizer={optimizer!r} is not one of {OPTIMIZERS} or a {library.__name__}.optimizers.Optimizer."
            + twin_note
        )
    if optimizer == "auto":
        optimizer = "adamw" if weight_decay else "adam"
    rate = learning_rate if learning_rate is not None else _DEFAULT_LEARNING_RATE[optimizer]
    rate = learning_rate_schedule(schedule, rate, epochs=epochs, steps_per_epoch=steps, warmup_epochs=warmup_epochs,
                                  library=library)
    if optimizer == "sgd":
        return library.optimizers.SGD(rate, momentum=0.9, weight_decay=weight_decay or None)
    if optimizer == "adamw":
        return library.optimizers.AdamW(rate, weight_decay=weight_decay or 0.004)
    return library.optimizers.Adam(rate)


def learning_rate_schedule(schedule, peak, *, epochs, steps_per_epoch, warmup_epochs=None, library=keras):
    """A Keras learning-rate schedule over the whole run.

    Args:
        schedule: "cosine" (linear warmup, then cosine decay to 0), "step"
            (x0.1 at 50% and 75% of the steps) or "constant".
        peak: The peak learning rate.
        epochs, steps_per_epoch: Length of the run.
        warmup_epochs: Warmup for "cosine"; default a tenth of the epochs, at most 5.
        library: The Keras whose schedule classes to use: `keras`, or
            `tf_keras` for a tf_keras model (the multi-worker twin).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r} is not one of {SCHEDULES}.")
    total = epochs * steps_per_epoch
    schedules = library.optimizers.schedules
    if schedule == "constant":
        return peak
    if schedule == "step":
        return schedules.PiecewiseConstantDecay([total // 2, total * 3 // 4], [peak, peak * 0.1, peak * 0.01])
    warmup_epochs = min(5, epochs // 10) if warmup_epochs is None else warmup_epochs
    warmup = warmup_epochs * steps_per_epoch
    if warmup == 0:
        return schedules.CosineDecay(peak, decay_steps=total)
    return schedules.CosineDecay(peak / 10, decay_steps=max(total - warmup, 1), warmup_target=peak,
                                 warmup_steps=warmup)


def checkpoint_callbacks(checkpoint_dir, has_validation, backup_every_steps, *, library=keras, chief=True,
                         save_best=None, metric: str = "accuracy") -> list:
    """The callbacks `checkpoint_dir` asks for: a `BackupAndRestore` state on every worker; on the chief,
    `best.keras`, `history.csv` (appended when resuming) and TensorBoard `logs/`.

    Args:
        checkpoint_dir: The folder, or None for no callbacks.
        has_validation: Monitor "val_<metric>" for best.keras, else "<metric>".
        backup_every_steps: Also back up every this many steps (None: each epoch).
        library: `keras`, or `tf_keras` for the multi-worker twin.
        chief: Whether this worker writes the files (every worker takes part in backups).
        save_best: `save_best(path, monitor)` makes the best-model callback; default
            `library.callbacks.ModelCheckpoint` (the twin passes one that saves the Keras 3 model).
        metric: The metric best.keras is chosen by (`monitored`), higher being better.
    """
    if checkpoint_dir is None:
        return []
    os.makedirs(checkpoint_dir, exist_ok=True)
    monitor = f"val_{metric}" if has_validation else metric
    backup = os.path.join(checkpoint_dir, "backup")
    # A finished run deletes its backup (tf_keras' multi-worker one: the chief's sub-folder).
    resuming = os.path.isdir(backup if library is keras else os.path.join(backup, "chief"))
    callbacks = [library.callbacks.BackupAndRestore(backup, save_freq=backup_every_steps or "epoch")]
    if not chief:
        return callbacks
    best = os.path.join(checkpoint_dir, "best.keras")
    return callbacks + [
        save_best(best, monitor) if save_best else library.callbacks.ModelCheckpoint(
            best, monitor=monitor, mode="max", save_best_only=True),
        library.callbacks.CSVLogger(os.path.join(checkpoint_dir, "history.csv"), append=resuming),
    ] + ([library.callbacks.TensorBoard(os.path.join(checkpoint_dir, "logs"))]  # tf.summary: TensorFlow only.
         if library is not keras or _backend.name() == "tensorflow" else [])
