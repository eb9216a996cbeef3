"""Multi-worker training images/s for 1 and 2 local workers, against Keras 3 `fit` in one process, and the weight agreement.

Each configuration runs in fresh processes: the reference is `training.fit`
with the default strategy (Keras 3); then `training.fit(strategy="multi_worker")`
(the tf_keras twin under MultiWorkerMirroredStrategy) with 1 and 2 workers
started by `python -m kzoo.launch`. Weak scaling: every worker gets the same
per-worker batch on in-memory random images, so N workers take N times the
images per step; each process gets cores / N threads. The first epoch
(tracing) is not counted; the median of the others is. One JSON line per
(model, configuration); with several workers, also the largest difference
between the workers' final weights (0.0 means identical).

    python bench/multi_worker.py [--models lenet5 resnet20] [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SETUPS = {"lenet5": ((28, 28, 1), 128, 40), "resnet20": ((32, 32, 3), 64, 20)}  # input, per-worker batch, steps
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(args):
    """One training process: writes its images/s, and its final weights, to args.out."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from kzoo import distribute

    strategy = distribute.strategy(args.strategy)  # First: multi_worker must come before TensorFlow runs.
    import numpy as np

    import kzoo
    from kzoo import training

    shape, per_worker_batch, steps = SETUPS[args.model]
    workers = distribute.num_workers() if distribute.is_multi_worker(strategy) else 1
    batch = per_worker_batch * workers
    rng = np.random.RandomState(0)
    images = rng.uniform(0, 1, (steps * batch, *shape)).astype("float32")
    labels = rng.randint(0, 10, steps * batch).astype("int32")
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch).cache()
    if distribute.is_multi_worker(strategy):
        import tf_keras as library
    else:
        import keras as library
    times = []
    timer = library.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: times.append(-time.perf_counter()),
        on_epoch_end=lambda epoch, logs: times.__setitem__(-1, times[-1] + time.perf_counter()),
    )
    model = kzoo.get_model(args.model, num_classes=10, input_shape=shape)
    training.fit(model, dataset, epochs=args.epochs, strategy=strategy, jit_compile=False, callbacks=[timer],
                 verbose=0)
    config = distribute.tf_config()
    index = config["task"]["index"] if config else 0
    np.savez(os.path.join(args.out, f"weights{index}.npz"), *model.get_weights())
    with open(os.path.join(args.out, f"result{index}.json"), "w") as f:
        json.dump({"images_per_s": steps * batch / statistics.median(times[1:]), "global_batch": batch}, f)


def run(model, strategy, workers, epochs, threads):
    """Runs one configuration in fresh processes; returns (chief's result, max weight difference)."""
    import numpy as np

    with tempfile.TemporaryDirectory() as out:
        job = [__file__, "--worker", "--model", model, "--strategy", strategy, "--epochs", str(epochs),
               "--threads", str(threads), "--out", out]
        command = [sys.executable, *job] if strategy == "default" else \
            [sys.executable, "-m", "kzoo.launch", "--workers", str(workers), "--", *job]
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        with open(os.path.join(out, "result0.json")) as f:
            result = json.load(f)
        weights = [list(np.load(os.path.join(out, f"weights{i}.npz")).values()) for i in range(workers)]
        difference = max((float(np.abs(a - b).max()) for other in weights[1:] for a, b in zip(weights[0], other)),
                         default=0.0)
    return result, difference


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=list(SETUPS), help=argparse.SUPPRESS)
    parser.add_argument("--strategy", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    cores = os.cpu_count() or 1
    for model in args.models:
        reference, _ = run(model, "default", 1, args.epochs, cores)
        print(json.dumps({"model": model, "setup": "keras3_fit", "workers": 1, "threads_per_worker": cores,
                          **{k: round(v, 1) for k, v in reference.items()}}), flush=True)
        one_worker = None
        for workers in (1, 2):
            result, difference = run(model, "multi_worker", workers, args.epochs, max(1, cores // workers))
            one_worker = one_worker or result
            print(json.dumps({
                "model": model, "setup": "multi_worker", "workers": workers,
                "threads_per_worker": max(1, cores // workers),
                **{k: round(v, 1) for k, v in result.items()},
                "ratio_to_keras3_fit": round(result["images_per_s"] / reference["images_per_s"], 3),
                "speedup_over_1_worker": round(result["images_per_s"] / one_worker["images_per_s"], 3),
                "weights_max_abs_difference": difference,
            }), flush=True)


if __name__ == "__main__":
    main()
