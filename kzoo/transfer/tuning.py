"""Fine-tuning a transfer model in two phases: the head, then the top stage(s) or everything."""

from __future__ import annotations

import os

import keras

from kzoo import training
from kzoo.transfer.model import set_mode


def fine_tune(
    model: keras.Model,
    train,
    val=None,
    *,
    head_epochs: int = 5,
    fine_tune_epochs: int = 5,
    learning_rate: float = 1e-3,
    fine_tune_learning_rate: float | None = None,
    unfreeze: str = "top",
    trainable_from: str | int | None = None,
    freeze_batchnorm: bool = True,
    checkpoint_dir: str | None = None,
    **fit_kwargs,
):
    """The two-phase schedule: train the new head, then unfreeze and continue more gently.

    Phase 1 trains only the head (a random head's large gradients would
    otherwise wreck the pretrained features); phase 2 unfreezes the top
    stage(s) or everything and trains at a lower learning rate. Both run
    through `kzoo.training.fit`.

    Args:
        model: A model from `build`.
        train, val: Batched `(images, labels)` datasets.
        head_epochs: Epochs of phase 1 (0 skips it).
        fine_tune_epochs: Epochs of phase 2 (0 skips it).
        learning_rate: Peak learning rate of phase 1.
        fine_tune_learning_rate: Of phase 2; default `learning_rate / 10`.
        unfreeze: "top" or "full": what trains in phase 2.
        trainable_from, freeze_batchnorm: As in `build`, for phase 2.
        checkpoint_dir: Each phase keeps its checkpoints, backup and logs in
            its own sub-folder (`head/`, `fine_tune/`) of this one.
        **fit_kwargs: More `kzoo.training.fit` arguments (optimizer, seed, ...).

    Returns:
        `(head_history, fine_tune_history)`; a skipped phase gives None.

    Raises:
        ValueError: For bad epochs or an `unfreeze` other than "top"/"full".
    """
    if unfreeze not in ("top", "full"):
        raise ValueError(f"unfreeze={unfreeze!r} must be 'top' or 'full' (phase 1 already trains the head).")
    for argument, value in (("head_epochs", head_epochs), ("fine_tune_epochs", fine_tune_epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{argument}={value!r} must be an integer >= 0 (0 skips the phase).")
    if head_epochs == fine_tune_epochs == 0:
        raise ValueError("head_epochs and fine_tune_epochs are both 0: nothing to train.")

    def phase(folder, epochs, rate):
        if not epochs:
            return None
        directory = os.path.join(checkpoint_dir, folder) if checkpoint_dir else None
        return training.fit(model, train, val, epochs=epochs, learning_rate=rate,
                            checkpoint_dir=directory, **fit_kwargs)

    set_mode(model, "head", freeze_batchnorm=freeze_batchnorm)
    head_history = phase("head", head_epochs, learning_rate)
    if fine_tune_epochs:
        set_mode(model, unfreeze, trainable_from=trainable_from, freeze_batchnorm=freeze_batchnorm)
    fine_history = phase("fine_tune", fine_tune_epochs, fine_tune_learning_rate or learning_rate / 10)
    return head_history, fine_history
