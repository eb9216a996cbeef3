"""Strategy and precision selection: a TPU when one is there, several GPUs, else one device.

    strategy = kzoo.distribute.strategy("auto")
    with strategy.scope():
        model = kzoo.resnet50(num_classes=10)
"""

from __future__ import annotations

import glob
import os

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "tpu")
POLICIES = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def strategy(name="auto") -> tf.distribute.Strategy:
    """Returns a `tf.distribute.Strategy`.

    Args:
        name: "auto" (a TPU if one is resolvable, MirroredStrategy over several
            GPUs, else the default strategy), "default" (one device),
            "mirrored" (all local GPUs, or the CPU), "tpu", or a strategy
            instance, returned as it is.

    Raises:
        ValueError: For an unknown name, or "tpu" without a TPU.
    """
    if isinstance(name, tf.distribute.Strategy):
        return name
    if name not in STRATEGIES:
        raise ValueError(
            f"strategy={name!r} is not one of {STRATEGIES} or a tf.distribute.Strategy. "
            "Multi-worker training comes with kzoo.distribute 'multi_worker' (not yet available)."
        )
    if name in ("auto", "tpu"):
        resolver = _tpu_resolver()
        if resolver is not None:
            return tf.distribute.TPUStrategy(resolver)
        if name == "tpu":
            raise ValueError(
                "strategy='tpu' but no TPU could be resolved (set TPU_NAME, or run on a TPU VM); "
                "use strategy='auto' to fall back to GPUs or the CPU."
            )
    if name == "mirrored" or (name == "auto" and len(tf.config.list_logical_devices("GPU")) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _tpu_resolver():
    """A connected TPUClusterResolver, or None. Only tried where a TPU is hinted at,
    since the resolver otherwise probes the cloud metadata server."""
    hinted = os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR") or glob.glob("/dev/accel*")
    if not hinted:
        return None
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return resolver
    except (ValueError, RuntimeError, tf.errors.OpError):
        return None


def precision_policy(mixed_precision="auto", distribution: tf.distribute.Strategy | None = None) -> str:
    """The Keras dtype policy to train with.

    Args:
        mixed_precision: "auto" (mixed_bfloat16 on TPU, mixed_float16 on GPU,
            float32 on CPU), one of the policy names, or False/None for float32.
        distribution: The strategy in use (for "auto").

    Raises:
        ValueError: For an unknown policy.
    """
    if mixed_precision in (None, False):
        return "float32"
    if mixed_precision not in POLICIES:
        raise ValueError(f"mixed_precision={mixed_precision!r} is not one of {POLICIES}, False or None.")
    if mixed_precision != "auto":
        return mixed_precision
    if isinstance(distribution, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    if tf.config.list_logical_devices("GPU"):
        return "mixed_float16"
    return "float32"
