"""Transfer learning: a pretrained backbone with a new head, three fine-tuning modes, embeddings.

`model` builds the one flat transfer model and sets its modes; `tuning`
trains it in two phases; `embeddings` turns a backbone into features and a
linear probe.
"""

from kzoo.transfer.embeddings import features, linear_probe
from kzoo.transfer.model import (
    HEAD_PREFIX, MODES, POOLINGS, PREPROCESS, backbone_layers, build, default_stage, feature_extractor,
    pretrained_backbone, set_mode, stages,
)
from kzoo.transfer.tuning import fine_tune

__all__ = [
    "HEAD_PREFIX", "MODES", "POOLINGS", "PREPROCESS", "backbone_layers", "build", "default_stage", "feature_extractor",
    "features", "fine_tune", "linear_probe", "pretrained_backbone", "set_mode", "stages",
]
