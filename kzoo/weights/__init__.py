"""Pretrained weights: records (data), the `weights=` argument, download/cache/verify, loading, ImageNet pre/post-processing.

`records` holds what exists; `loading` gets it into a model; `processing`
prepares images and reads predictions the way the weights expect.
"""

from kzoo.weights.loading import (
    WeightsUnavailableError, check_weights_argument, fetch, load_checkpoint_file, load_weights, looks_like_path,
)
from kzoo.weights.processing import decode_predictions, preprocess_input
from kzoo.weights.records import (
    CATEGORIES, PREPROCESSING, RECORDS, SEGMENTATION_RECORDS, VOC_CLASSES, Preprocessing, SegmentationRecord,
    WeightsFile, WeightsRecord, available_weights, default_tag, get_record,
)

__all__ = [
    "CATEGORIES", "PREPROCESSING", "RECORDS", "SEGMENTATION_RECORDS", "VOC_CLASSES", "Preprocessing",
    "SegmentationRecord", "WeightsFile", "WeightsRecord", "WeightsUnavailableError", "available_weights",
    "check_weights_argument", "decode_predictions", "default_tag", "fetch", "get_record", "load_checkpoint_file",
    "load_weights", "looks_like_path", "preprocess_input",
]
