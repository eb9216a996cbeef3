"""Compression of Keras 3 models with TFMOT: the tf_keras bridge, pruning, QAT, clustering, distillation.

Importing this package is light: tf_keras and TFMOT load when a function runs.
"""

from kzoo.tf_keras_bridge import UntranslatableLayerError, to_keras, to_tf_keras
from kzoo.compress.distill import distill
from kzoo.compress.prune import prune, sparsity_report
from kzoo.compress.quantize import cluster, float_layers, quantize_aware

__all__ = ["UntranslatableLayerError", "cluster", "distill", "float_layers", "prune", "quantize_aware",
           "sparsity_report", "to_keras", "to_tf_keras"]
