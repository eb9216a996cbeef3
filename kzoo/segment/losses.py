"""Segmentation losses and metrics for `fit`: per-pixel cross-entropy (class weights, an ignored class, Dice), IoU.

Keras' sparse cross-entropy has `ignore_class` but no class weights for
per-pixel targets (fit's `class_weight` takes one label per example) and no
Dice term, so `SegmentationLoss` adds them; the metrics are Keras' `MeanIoU`
and its sparse accuracy with the ignored pixels weighted out.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable("kzoo")
class SegmentationLoss(keras.losses.Loss):
    """Cross-entropy of per-pixel logits against masks, per image, plus `dice_weight` x soft Dice loss.

    Args:
        class_weights: One weight per class (e.g. inverse frequencies), or None.
            The cross-entropy is the weighted mean over the labelled pixels.
        ignore_class: Pixels with this id count in neither term (e.g. 255).
        dice_weight: Weight of the soft Dice loss (Milletari et al. 2016),
            averaged over the classes; 0 for cross-entropy alone.
        from_logits: The model outputs logits (kzoo.segment models do).
    """

    def __init__(self, class_weights=None, ignore_class: int | None = None, dice_weight: float = 0.0,
                 from_logits: bool = True, name: str = "segmentation_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if dice_weight < 0:
            raise ValueError(f"dice_weight={dice_weight} must be at least 0 (0: cross-entropy alone).")
        if class_weights is not None and (len(class_weights) == 0 or min(class_weights) < 0):
            raise ValueError(f"class_weights={class_weights!r} must be one non-negative weight per class.")
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.ignore_class, self.dice_weight, self.from_logits = ignore_class, float(dice_weight), from_logits

    def call(self, y_true, y_pred):
        num_classes = y_pred.shape[-1]
        if self.class_weights is not None and len(self.class_weights) != num_classes:
            raise ValueError(f"class_weights has {len(self.class_weights)} weights; the model outputs {num_classes} "
                             "classes. Give one weight per class.")
        labels = ops.cast(y_true, "int32")
        if len(labels.shape) == 4:
            labels = ops.squeeze(labels, -1)
        valid = ops.ones_like(labels, dtype=y_pred.dtype) if self.ignore_class is None else ops.cast(
            ops.not_equal(labels, self.ignore_class), y_pred.dtype)
        labels = ops.where(valid > 0, labels, 0)
        weights = valid
        if self.class_weights is not None:
            weights = weights * ops.take(ops.convert_to_tensor(self.class_weights, y_pred.dtype), labels)
        pixels = keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=self.from_logits)
        loss = ops.sum(pixels * weights, axis=(1, 2)) / ops.maximum(ops.sum(weights, axis=(1, 2)), 1e-6)
        if self.dice_weight:
            probabilities = ops.softmax(y_pred, axis=-1) if self.from_logits else y_pred
            probabilities = probabilities * valid[..., None]
            truth = ops.one_hot(labels, num_classes, dtype=y_pred.dtype) * valid[..., None]
            overlap = ops.sum(probabilities * truth, axis=(1, 2))
            total = ops.sum(probabilities, axis=(1, 2)) + ops.sum(truth, axis=(1, 2))
            dice = 1.0 - ops.mean((2.0 * overlap + 1.0) / (total + 1.0), axis=-1)
            loss = loss + self.dice_weight * dice
        return loss

    def get_config(self):
        return {**super().get_config(), "class_weights": self.class_weights, "ignore_class": self.ignore_class,
                "dice_weight": self.dice_weight, "from_logits": self.from_logits}


@keras.saving.register_keras_serializable("kzoo")
class PixelAccuracy(keras.metrics.SparseCategoricalAccuracy):
    """The share of labelled pixels whose top class is right (`ignore_class` pixels left out)."""

    def __init__(self, ignore_class: int | None = None, name: str = "accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_class = ignore_class

    def update_state(self, y_true, y_pred, sample_weight=None):
        if self.ignore_class is not None:
            keep = ops.cast(ops.not_equal(ops.cast(y_true, "int32"), self.ignore_class), "float32")
            y_true = ops.where(keep > 0, y_true, ops.zeros_like(y_true))
            sample_weight = keep if sample_weight is None else keep * sample_weight
        return super().update_state(y_true, y_pred, sample_weight)

    def get_config(self):
        return {**super().get_config(), "ignore_class": self.ignore_class}


def metrics(num_classes: int, ignore_class: int | None = None) -> list:
    """What `fit` reports for a segmentation model: pixel accuracy and Keras' `MeanIoU` (as "mean_iou")."""
    return [PixelAccuracy(ignore_class),
            keras.metrics.MeanIoU(num_classes, name="mean_iou", ignore_class=ignore_class, sparse_y_pred=False)]
