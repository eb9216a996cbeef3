"""Strategy and precision selection: a TPU, several GPUs, several workers (TF_CONFIG), or one device.

    strategy = kzoo.distribute.strategy("auto")
    with strategy.scope():
        model = kzoo.resnet50(num_classes=10)

Several workers: call `strategy("multi_worker")` first in the script, before
TensorFlow runs anything, then train with `training.fit(..., strategy=...)`.
Strategies are TensorFlow's: on JAX or PyTorch `strategy("auto")` is None (one
device, or `keras.distribution` set up by the user) and the others are refused.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from typing import TYPE_CHECKING

from kzoo import _backend

if TYPE_CHECKING:  # Annotations only: TensorFlow is imported where a strategy is made.
    import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "tpu", "multi_worker")
MULTI_WORKER_JOBS = ("chief", "worker")
_TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
)
_multi_worker_strategy = None  # One per process: collective ops are configured once.
POLICIES = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def strategy(name="auto") -> tf.distribute.Strategy | None:
    """Returns a `tf.distribute.Strategy` (None for "auto" and "default" off the TensorFlow backend).

    Args:
        name: "auto" (a TPU if one is resolvable, MirroredStrategy over several
            GPUs, else the default strategy), "default" (one device),
            "mirrored" (all local GPUs, or the CPU), "tpu", "multi_worker"
            (MultiWorkerMirroredStrategy over the workers that `TF_CONFIG`
            names, each with all its local GPUs; one worker without
            `TF_CONFIG`), or a strategy instance, returned as it is.

    Raises:
        ValueError: For an unknown name, "tpu" without a TPU, or a malformed
            `TF_CONFIG`.
        RuntimeError: For "multi_worker" asked for the first time after
            TensorFlow has already run something in this process.
        TensorFlowRequiredError: For any other strategy on JAX or PyTorch.
    """
    if _backend.name() != "tensorflow" and name in ("auto", "default"):
        return None
    tf = _backend.tensorflow(f"strategy={name!r} (a tf.distribute strategy; on JAX see keras.distribution)",
                             backend=True)
    if isinstance(name, tf.distribute.Strategy):
        return name
    if name not in STRATEGIES:
        raise ValueError(f"strategy={name!r} is not one of {STRATEGIES} or a tf.distribute.Strategy.")
    if name == "multi_worker":
        return _multi_worker()
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


def is_multi_worker(distribution) -> bool:
    """True for a MultiWorkerMirroredStrategy (which kzoo trains through the tf_keras twin)."""
    if distribution is None:
        return False
    import tensorflow as tf  # A strategy exists: TensorFlow is there.

    return isinstance(distribution, tf.distribute.MultiWorkerMirroredStrategy)


def is_default(distribution) -> bool:
    """True for one device: no strategy (JAX, PyTorch) or TensorFlow's default one (asked outside any scope)."""
    if distribution is None:
        return True
    import tensorflow as tf  # A strategy exists: TensorFlow is there.

    return distribution is tf.distribute.get_strategy()


def tf_config() -> dict | None:
    """The `TF_CONFIG` of this process, parsed and checked; None when it is not set.

    Raises:
        ValueError: When it is not JSON, lacks `cluster` or `task`, names a
            job MultiWorkerMirroredStrategy does not run, or a task index
            outside its job.
    """
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    fix = f"It must look like {_TF_CONFIG_EXAMPLE}; `python -m kzoo.launch` sets it for local workers."
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG={raw!r} is not JSON ({error}). {fix}") from None
    cluster, task = (config.get(key) if isinstance(config, dict) else None for key in ("cluster", "task"))
    if not isinstance(cluster, dict) or not cluster or not all(
        isinstance(addresses, list) and addresses for addresses in cluster.values()
    ):
        raise ValueError(f"TF_CONFIG={raw!r} has no 'cluster' mapping each job to its list of addresses. {fix}")
    unknown = sorted(set(cluster) - set(MULTI_WORKER_JOBS) - {"evaluator"})
    if unknown:
        raise ValueError(
            f"TF_CONFIG's cluster has the job(s) {unknown}; multi-worker training runs {MULTI_WORKER_JOBS} "
            "(and an optional 'evaluator'). A 'ps' job is for ParameterServerStrategy, which kzoo does not use."
        )
    if not isinstance(task, dict) or task.get("type") not in cluster or not isinstance(task.get("index"), int) \
            or not 0 <= task["index"] < len(cluster[task["type"]]):
        raise ValueError(
            f"TF_CONFIG's task={task!r} must name one of the cluster's jobs {sorted(cluster)} and an index "
            f"within it, e.g. {{'type': 'worker', 'index': 0}}. {fix}"
        )
    return config


def is_chief() -> bool:
    """True in the process that writes checkpoints, logs and artifacts: the
    "chief" task, else worker 0; also when `TF_CONFIG` is not set (one process)."""
    config = tf_config()
    if config is None:
        return True
    task = config["task"]
    return task["type"] == "chief" or (
        task["type"] == "worker" and task["index"] == 0 and "chief" not in config["cluster"]
    )


def num_workers() -> int:
    """The training workers `TF_CONFIG` names (chief included); 1 without it."""
    config = tf_config()
    if config is None:
        return 1
    return sum(len(config["cluster"].get(job, ())) for job in MULTI_WORKER_JOBS)


def _multi_worker() -> tf.distribute.MultiWorkerMirroredStrategy:
    import tensorflow as tf

    global _multi_worker_strategy
    config = tf_config()  # The user's own mistake first, on every call, before any TensorFlow state matters.
    if _multi_worker_strategy is None:
        if config is None:
            logging.getLogger("kzoo").warning(
                "strategy='multi_worker' without TF_CONFIG: training as one worker. Set TF_CONFIG on each "
                "worker, or start local workers with `python -m kzoo.launch --workers N -- SCRIPT`."
            )
        try:
            _multi_worker_strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            if "program startup" not in str(error):
                raise
            raise RuntimeError(
                "strategy='multi_worker' was asked for after TensorFlow had already run something in this "
                "process (a dataset or a model was built), but MultiWorkerMirroredStrategy must be created "
                "first. Call kzoo.distribute.strategy('multi_worker') at the top of the script, before "
                "building the data and the model; later calls, and fit(strategy='multi_worker'), reuse it."
            ) from error
    return _multi_worker_strategy


def _tpu_resolver():
    """A connected TPUClusterResolver, or None. Only tried where a TPU is hinted at,
    since the resolver otherwise probes the cloud metadata server."""
    hinted = os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR") or glob.glob("/dev/accel*")
    if not hinted:
        return None
    import tensorflow as tf

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
            float32 on CPU; on JAX and PyTorch, mixed_bfloat16 on any
            accelerator), one of the policy names, or False/None for float32.
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
    if _backend.name() != "tensorflow":  # bfloat16 needs no loss scaling: the JAX/PyTorch GPU path.
        return "float32" if _backend.accelerator() == "cpu" else "mixed_bfloat16"
    import tensorflow as tf

    if isinstance(distribution, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    if tf.config.list_logical_devices("GPU"):
        return "mixed_float16"
    return "float32"
