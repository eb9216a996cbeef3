"""Semantic segmentation on kzoo backbones: FCN, U-Net and DeepLabV3 heads, mask pipelines, IoU, pictures.

`model` builds the one flat model (backbone stages from `kzoo.transfer`,
dilated by the builders' `output_stride`); `losses` is what `kzoo.training.fit`
compiles a segmentation model with; `evaluation` measures and draws (NumPy);
`data` makes `(image, mask)` tf.data pipelines and loads on first use (PEP 562),
so the rest runs on every backend without TensorFlow.
"""

import importlib

from kzoo.segment.evaluation import colour_masks, confusion_matrix, evaluate, plot, predict_masks, scores
from kzoo.segment.losses import PixelAccuracy, SegmentationLoss, metrics
from kzoo.segment.model import HEADS, bilinear_kernel, build

_IN_DATA = ("DATASETS", "SegmentAugment", "from_arrays", "from_directory", "load", "pipeline", "preview")

__all__ = ["HEADS", "PixelAccuracy", "SegmentationLoss", "bilinear_kernel", "build", "colour_masks",
           "confusion_matrix", "data", "evaluate", "metrics", "plot", "predict_masks", "scores", *_IN_DATA]


def __getattr__(name: str):
    if name in _IN_DATA or name == "data":
        from kzoo import _backend

        _backend.tensorflow(f"kzoo.segment.{name} (tf.data)")
        data = importlib.import_module("kzoo.segment.data")
        value = data if name == "data" else getattr(data, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kzoo.segment' has no attribute {name!r}")
