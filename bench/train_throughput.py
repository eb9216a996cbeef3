"""Training images/s: `kzoo.training.fit` defaults against a plain Keras `model.fit`.

Both train the same architecture on the same batches held in memory (so the
trainer alone is compared), with `jit_compile` off and on. The first epoch
(tracing, compilation) is not counted; the median of the others is. Prints
one JSON line per (model, jit_compile); target: ratio (kzoo / plain) >= 1.0.

    python bench/train_throughput.py [--models lenet5 resnet20 resnet50]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kzoo  # noqa: E402
from kzoo import training  # noqa: E402
from _timing import EpochTimes  # noqa: E402  (bench/ is on sys.path)

# model -> (input shape, batch size); resnet50 at 64x64 to fit a CPU budget.
SETUPS = {"lenet5": ((28, 28, 1), 128), "resnet20": ((32, 32, 3), 128), "resnet50": ((64, 64, 3), 16)}


def batches(shape, batch, steps):
    rng = np.random.RandomState(0)
    images = rng.uniform(0, 1, (steps * batch, *shape)).astype("float32")
    labels = rng.randint(0, 10, steps * batch).astype("int32")
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch).cache()


def plain_fit(model, dataset, epochs, jit_compile, times):
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=jit_compile)
    model.fit(dataset, epochs=epochs, callbacks=[times], verbose=0)


def kzoo_fit(model, dataset, epochs, jit_compile, times):
    training.fit(model, dataset, epochs=epochs, jit_compile=jit_compile, callbacks=[times], verbose=0)


def images_per_second(name, run, dataset, epochs, jit_compile, batch, steps):
    shape = SETUPS[name][0]
    model = kzoo.get_model(name, num_classes=10, input_shape=shape)
    times = EpochTimes()
    run(model, dataset, epochs, jit_compile, times)
    keras.backend.clear_session()
    return steps * batch / statistics.median(times.seconds[1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is not counted")
    parser.add_argument("--jit", nargs="+", default=["off", "on"], choices=["off", "on"],
                        help="jit_compile settings to measure (Keras' 'auto' is off on CPU-only machines)")
    args = parser.parse_args()
    for name in args.models:
        shape, batch = SETUPS[name]
        dataset = batches(shape, batch, args.steps)
        for jit_compile in [setting == "on" for setting in args.jit]:
            rates = {"kzoo": [], "plain": []}
            for label in ("plain", "kzoo", "kzoo", "plain"):  # Alternating against drift.
                run = kzoo_fit if label == "kzoo" else plain_fit
                rates[label].append(images_per_second(name, run, dataset, args.epochs, jit_compile, batch, args.steps))
            kzoo_rate, plain_rate = statistics.median(rates["kzoo"]), statistics.median(rates["plain"])
            print(json.dumps({
                "bench": "train_throughput", "model": name, "input": list(shape), "batch": batch,
                "jit_compile": jit_compile, "kzoo_images_per_s": round(kzoo_rate, 1),
                "plain_images_per_s": round(plain_rate, 1), "ratio": round(kzoo_rate / plain_rate, 3),
                "target_ratio": 1.0, "device": "GPU" if tf.config.list_logical_devices("GPU") else f"CPU x{os.cpu_count()}",
            }), flush=True)


if __name__ == "__main__":
    main()
