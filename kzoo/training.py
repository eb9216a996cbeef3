"""Training: `fit` with strategies, mixed precision, schedules, checkpoints and resume; curves and evaluation.

`fit` wraps Keras' own `Model.fit`: it chooses the loss from the model's
output and the labels, builds the optimizer and learning-rate schedule, and,
with a `checkpoint_dir`, keeps the best model, a `BackupAndRestore` state and
CSV/TensorBoard logs there.
"""

from __future__ import annotations

import functools
import logging
import os

import contextlib

import keras
import numpy as np

from kzoo import _backend, distribute, objectives
from kzoo import _training_core as core
from kzoo._io import PlottingUnavailableError, atomic_write, pyplot, save_figure, save_json
from kzoo._training_core import (  # noqa: F401  (public here, as before)
    OPTIMIZERS, SCHEDULES, check_data_fits, learning_rate_schedule, outputs_probabilities,
)
from kzoo.data import checks



def fit(
    model,
    train,
    val=None,
    *,
    epochs: int,
    batch_size: int | None = None,
    optimizer="auto",
    learning_rate: float | None = None,
    weight_decay: float = 0.0,
    schedule: str = "cosine",
    warmup_epochs: int | None = None,
    label_smoothing: float = 0.0,
    strategy="auto",
    mixed_precision="auto",
    jit_compile="auto",
    steps_per_execution: int = 1,
    checkpoint_dir: str | None = None,
    backup_every_steps: int | None = None,
    seed: int | None = None,
    callbacks=(),
    steps_per_epoch: int | None = None,
    verbose="auto",
    adversarial=None,
    adversarial_ratio: float = 1.0,
    loss=None,
) -> keras.callbacks.History:
    """Trains a model and returns Keras' `History`.

    Args:
        model: A `keras.Model`, or a function that builds one. It is built (or
            cloned) inside the strategy's scope and under the precision policy;
            after training, the weights are copied back into a given model.
            A segmentation model (per-pixel outputs, `kzoo.segment.build`)
            trains on masks with `kzoo.segment.SegmentationLoss` (the data's
            `ignore_class` left out) and reports "accuracy" (of the pixels)
            and "mean_iou", which also chooses `best.keras`.
        train: Batched `(images, labels)` data: a tf.data dataset or a
            `keras.utils.PyDataset` (int labels, or one-hot float labels
            after MixUp/CutMix; masks (batch, height, width) for segmentation). Its batch size is the global batch: a
            strategy splits each batch over all its replicas (every device
            of every worker), so the learning rate goes with it. Or a tuple
            `(images, labels)` of NumPy arrays, checked and shuffled with
            `seed`: through `kzoo.data.from_arrays` on TensorFlow, and
            `kzoo.data.arrays.ArrayBatches` (no TensorFlow) on JAX and PyTorch.
        val: Optional validation data of the same form (arrays are not shuffled).
        epochs: Number of epochs.
        batch_size: For arrays only (default 32); a dataset has its own.
        optimizer: "auto" (Adam; AdamW when `weight_decay`), "adam", "adamw",
            "sgd" (momentum 0.9), or a `keras.optimizers.Optimizer` (a
            tf_keras one under "multi_worker").
        learning_rate: Peak learning rate; default 1e-3 (Adam/AdamW) or 0.1 (SGD).
        weight_decay: Decoupled weight decay (AdamW), or L2-style decay folded
            into SGD's update (Keras' `weight_decay`).
        schedule: "cosine" (with linear warmup), "step" (x0.1 at 50% and 75%
            of training, He et al. 2015) or "constant".
        warmup_epochs: Linear warmup for "cosine"; default: a tenth of the
            epochs, at most 5.
        label_smoothing: Label smoothing of the cross-entropy.
        strategy: As `kzoo.distribute.strategy`. Under "multi_worker" (a
            MultiWorkerMirroredStrategy), where Keras 3's fit cannot run
            (keras-team/keras#20585), the model's tf_keras twin
            (`kzoo.compress.to_tf_keras`) trains, starting on every worker
            from the chief's weights, and the weights come back into the
            Keras 3 model. Only the chief writes `best.keras`, the CSV and
            TensorBoard logs; every worker keeps the backup, which the chief
            writes (a folder all workers can read).
        mixed_precision: As `kzoo.distribute.precision_policy`; the classifier
            output always stays float32.
        jit_compile: Passed to `Model.compile` ("auto", True, False).
        steps_per_execution: Training steps per compiled call (`Model.compile`'s):
            on a GPU, 8 or more hides the per-step work of Python and the
            trainer (see the README's GPU section); batch callbacks then run
            once per call.
        checkpoint_dir: Keep `best.keras` (by validation accuracy, else
            training accuracy), a `backup/` for `BackupAndRestore`,
            `history.csv` and TensorBoard `logs/` here. A run started again
            with the same folder resumes from the backup.
        backup_every_steps: Also back up every this many steps (default: at
            the end of each epoch). Keras restores the latest backup and
            restarts the interrupted epoch from its first batch.
        seed: Seeds Python, NumPy and the backend (`keras.utils.set_random_seed`)
            first, so that a model built here (`model` a function), arrays'
            shuffling, dropout and the training step repeat exactly. A model
            passed built already drew its weights: seed before building it
            (as the recipes do), or pass the function that builds it.
        callbacks: More Keras callbacks (they run after kzoo's); tf_keras
            callbacks under "multi_worker" (they see the twin).
        steps_per_epoch: Needed when `train` has no known length.
        verbose: Keras' progress-bar setting.
        adversarial: A `kzoo.robust.PGD` (or `robust.FGSM(...)`): adversarial
            training (Madry et al. 2018), examples crafted against the
            current weights in every training step
            (`kzoo.objectives.adversarial_training`); checkpoints, resume,
            strategies and mixed precision work as for any fit. Not under
            "multi_worker".
        adversarial_ratio: Share of each batch replaced by its adversarial
            examples (1.0: all; 0.5: half adversarial, half clean).
        loss: A Keras loss to train with instead of the one kzoo chooses (the
            cross-entropy that fits the output and labels), e.g.
            `kzoo.segment.SegmentationLoss(class_weights=..., dice_weight=0.5)`
            (not under "multi_worker", whose tf_keras twin takes kzoo's own).

    Returns:
        The `History`; `history.model` is the model that was trained (under
        "multi_worker": the Keras 3 model holding the trained weights).

    Raises:
        ValueError: For bad arguments, each named with what is allowed, and
            data that does not fit the model (image shape, classes, values).
        RuntimeError: Under "multi_worker", when a worker is lost; it says how
            the job resumes.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r} must be a positive integer.")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 1).")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    train, val = _datasets(model, train, val, batch_size, seed)
    distribution = distribute.strategy(strategy)
    policy = distribute.precision_policy(mixed_precision, distribution)
    compile_for = functools.partial(
        core.compile_model, policy=policy, optimizer=optimizer, learning_rate=learning_rate, weight_decay=weight_decay,
        schedule=schedule, warmup_epochs=warmup_epochs, epochs=epochs,
        steps=core.steps_per_epoch(train, steps_per_epoch), label_smoothing=label_smoothing, jit_compile=jit_compile,
        steps_per_execution=steps_per_execution, loss=loss,
    )
    if distribute.is_multi_worker(distribution):
        from kzoo import _multi_worker

        if loss is not None:
            raise ValueError("loss= is a Keras 3 loss; under 'multi_worker' kzoo trains a tf_keras twin with its own "
                             "cross-entropy. Drop loss=, or use another strategy.")
        if adversarial is not None:
            raise ValueError("adversarial training runs on one host (any strategy but 'multi_worker'); the "
                             "multi-worker route trains a tf_keras twin, whose step kzoo does not replace.")
        return _multi_worker.fit(
            model, train, val, distribution, policy, compile_for, epochs=epochs, steps_per_epoch=steps_per_epoch,
            checkpoint_dir=checkpoint_dir, backup_every_steps=backup_every_steps, callbacks=callbacks,
            verbose=verbose,
        )
    one_device = distribute.is_default(distribution)  # Asked outside the scope.
    with distribution.scope() if distribution is not None else contextlib.nullcontext():
        trained = core.model_for(model, policy, one_device)
        train, val = compile_for(trained, train, val, library=keras)
    if adversarial is not None and core.is_segmentation(trained):
        raise ValueError("adversarial= trains classifiers (the attacks perturb toward another class per image); "
                         f"{trained.name} is a segmentation model. Drop adversarial=.")
    undo = (objectives.adversarial_training(trained, adversarial, ratio=adversarial_ratio)
            if adversarial is not None else (lambda: None))
    own = core.checkpoint_callbacks(checkpoint_dir, val is not None, backup_every_steps,
                                    metric=core.monitored(trained))
    try:
        history = core.run_fit(trained, train, val, epochs=epochs, steps_per_epoch=steps_per_epoch,
                               callbacks=[*own, *callbacks], verbose=verbose)
    finally:
        undo()
    if isinstance(model, keras.Model) and trained is not model:
        model.set_weights(trained.get_weights())
    return history


def _datasets(model, train, val, batch_size, seed):
    """`(train, val)` as datasets: arrays go through `kzoo.data.from_arrays` (`kzoo.segment.from_arrays` for a
    segmentation model; `ArrayBatches` off TensorFlow), with the model's class count."""
    if batch_size is not None and not checks.is_array_pair(train):
        raise ValueError(f"batch_size={batch_size!r} is for (images, labels) arrays; a dataset has its own batch "
                         "size: set it where the dataset is made (kzoo.data.load(..., batch_size=...)).")
    num_classes = model.outputs[0].shape[-1] if isinstance(model, keras.Model) else None

    def as_dataset(value, name, shuffle):
        if not checks.is_array_pair(value):
            return value
        try:
            if _backend.name() == "tensorflow" and isinstance(model, keras.Model) and core.is_segmentation(model):
                from kzoo.segment.data import from_arrays as batched
            elif _backend.name() == "tensorflow":
                from kzoo.data import from_arrays as batched
            else:  # A PyDataset: no TensorFlow needed.
                from kzoo.data.arrays import ArrayBatches as batched
            return batched(*value, batch_size=batch_size or 32, shuffle=shuffle, seed=seed, num_classes=num_classes)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None

    return as_dataset(train, "train", True), as_dataset(val, "val", False)


def plot_history(history, path: str) -> str:
    """Writes loss and accuracy curves (training and validation) as a PNG.

    Args:
        history: A Keras `History`, its `.history` dict, or a CSVLogger file.
        path: Where the PNG goes (written atomically).

    Returns:
        The path written.

    Raises:
        kzoo._io.PlottingUnavailableError (an ImportError): Without
            matplotlib (`pip install 'kzoo[plot]'`).
    """
    plt = pyplot("training.plot_history")
    logs = _history_dict(history)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            if key in logs:
                axis.plot(range(1, len(logs[key]) + 1), logs[key], style, label=key)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
    return path


def _history_dict(history) -> dict:
    if isinstance(getattr(history, "history", None), dict):  # A Keras or tf_keras History.
        return history.history
    if isinstance(history, dict):
        return history
    import csv

    with open(history) as f:
        rows = list(csv.DictReader(f))
    # tf_keras' CSVLogger (multi-worker runs) writes "NA" columns for validation it did not run.
    return {key: [float(row[key]) for row in rows] for key in rows[0]
            if key != "epoch" and any(row[key] != "NA" for row in rows)}


def evaluate(model: keras.Model, data, *, plot_confusion: str | None = None, class_names=None) -> dict:
    """Accuracy, loss and confusion matrix of a model on a labelled dataset.

    Args:
        model: A classifier (softmax or logits output).
        data: Batched `(images, labels)`, int or one-hot labels, or a tuple
            `(images, labels)` of arrays; images as `kzoo.data.checks` takes them.
        plot_confusion: If given, a PNG path for the confusion matrix.
        class_names: Tick labels for the plot.

    Returns:
        `{"accuracy", "loss", "num_examples", "confusion_matrix"}` (rows: true
        class, columns: predicted class).

    Raises:
        ValueError: For images that do not fit the model, labels beyond its
            classes, or a batch without labels.
    """
    probabilities, labels = [], []
    num_classes = model.outputs[0].shape[-1]
    for images, batch_labels in checks.batches(data, "data", num_classes=num_classes):
        checks.fits_model(images.shape[1:], model.inputs[0].shape[1:], "data")
        if batch_labels is None:
            raise ValueError("evaluate needs (images, labels) batches; this data has images only.")
        outputs = keras.ops.convert_to_numpy(model(images, training=False)).astype("float64")
        if not outputs_probabilities(model):
            outputs = np.exp(outputs - outputs.max(axis=1, keepdims=True))
            outputs /= outputs.sum(axis=1, keepdims=True)
        probabilities.append(outputs)
        labels.append(batch_labels)
    probabilities, labels = np.concatenate(probabilities), np.concatenate(labels).astype(int)
    predictions = probabilities.argmax(axis=1)
    confusion = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(confusion, (labels, predictions), 1)
    result = {
        "accuracy": float((predictions == labels).mean()),
        "loss": float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1)).mean()),
        "num_examples": int(len(labels)),
        "confusion_matrix": confusion.tolist(),
    }
    if plot_confusion:
        plot_confusion_matrix(confusion, plot_confusion, class_names)
    return result


def plot_confusion_matrix(confusion, path: str, class_names=None) -> str:
    """Writes a confusion matrix (rows: true class, columns: predicted) as a PNG; returns the path.

    Raises:
        kzoo._io.PlottingUnavailableError (an ImportError): Without matplotlib.
    """
    plt = pyplot("the confusion-matrix plot")
    confusion = np.asarray(confusion)
    size = len(confusion)
    names = class_names or [str(i) for i in range(size)]
    figure, axis = plt.subplots(figsize=(max(4, size * 0.5), max(4, size * 0.5)))
    axis.imshow(confusion, cmap="Blues")
    if size <= 30:
        axis.set_xticks(range(size), names, rotation=90)
        axis.set_yticks(range(size), names)
        for (row, column), count in np.ndenumerate(confusion):
            axis.text(column, row, count, ha="center", va="center", fontsize=7,
                      color="white" if count > confusion.max() / 2 else "black")
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
    return path


def save_artifacts(output_dir: str, model: keras.Model, history, test, **facts) -> dict:
    """Writes what a training run leaves behind, each file atomically.

    `model.keras` first, then `metrics.json` (test accuracy and loss,
    parameters, and the given `facts`), then the pictures `curves.png` and
    `confusion.png`. Without matplotlib (an optional extra) the pictures are
    skipped with one logged line that says how to get them; nothing else is lost.

    Returns:
        The metrics written to `metrics.json`.
    """
    os.makedirs(output_dir, exist_ok=True)
    atomic_write(os.path.join(output_dir, "model.keras"), model.save, suffix=".keras")
    report = evaluate(model, test)
    metrics = {
        "model": model.name,
        "params": model.count_params(),
        "test_accuracy": report["accuracy"],
        "test_loss": report["loss"],
        "test_examples": report["num_examples"],
        "epochs_run": len(history.epoch),
        **facts,
    }
    save_json(metrics, os.path.join(output_dir, "metrics.json"))
    pictures = {"curves.png": lambda path: plot_history(history, path),
                "confusion.png": lambda path: plot_confusion_matrix(report["confusion_matrix"], path,
                                                                    getattr(test, "class_names", None))}
    try:
        for name, draw in pictures.items():
            draw(os.path.join(output_dir, name))
    except PlottingUnavailableError:
        logging.getLogger("kzoo").warning(
            "Skipped %s in %s: matplotlib is not installed (pip install 'kzoo[plot]'); the model and "
            "metrics.json are written.", " and ".join(pictures), output_dir,
        )
    return metrics


__all__ = ["OPTIMIZERS", "SCHEDULES", "check_data_fits", "evaluate", "fit", "learning_rate_schedule",
           "outputs_probabilities", "plot_confusion_matrix", "plot_history", "save_artifacts"]
