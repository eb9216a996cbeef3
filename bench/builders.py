"""kzoo builders against keras.applications: forward throughput and build time.

Both models of a pair get the same weights (outputs are compared too), and are
timed in alternating rounds in one process so that drift on a noisy machine
hits both alike. Prints one JSON object per model; target: throughput ratio
(kzoo / keras.applications) >= 0.98.

    python bench/builders.py [--models vgg16 resnet50 resnet50_v2] [--batch 8]
    KERAS_BACKEND=jax python bench/builders.py       # e.g. on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kzoo  # noqa: E402

REFERENCES = {
    "vgg16": keras.applications.VGG16,
    "vgg19": keras.applications.VGG19,
    "resnet50": keras.applications.ResNet50,
    "resnet101": keras.applications.ResNet101,
    "resnet152": keras.applications.ResNet152,
    "resnet50_v2": keras.applications.ResNet50V2,
    "resnet101_v2": keras.applications.ResNet101V2,
    "resnet152_v2": keras.applications.ResNet152V2,
}
TARGET_RATIO = 0.98


def device_name() -> str:
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.devices()[0].device_kind
    if backend == "tensorflow":
        import tensorflow as tf

        return "GPU" if tf.config.list_physical_devices("GPU") else f"CPU x{os.cpu_count()}"
    return backend


def timed_build(build):
    start = time.perf_counter()
    model = build()
    return model, time.perf_counter() - start


def images_per_second(model, batch, iterations) -> float:
    start = time.perf_counter()
    for _ in range(iterations):
        out = model.predict_on_batch(batch)
    np.asarray(out)  # Wait for asynchronous backends.
    return len(batch) * iterations / (time.perf_counter() - start)


def bench_model(name, batch_size, size, rounds, iterations):
    shape = (size, size, 3)
    kzoo_builds, keras_builds = [], []
    for _ in range(3):  # Builds alternate too; the median is reported.
        reference, seconds = timed_build(lambda: REFERENCES[name](weights=None, input_shape=shape))
        keras_builds.append(seconds)
        model, seconds = timed_build(lambda: kzoo.get_model(name, input_shape=shape))
        kzoo_builds.append(seconds)
    model.set_weights(reference.get_weights())
    batch = np.random.RandomState(0).uniform(0, 255, (batch_size, *shape)).astype("float32")
    max_abs_diff = float(np.max(np.abs(model.predict_on_batch(batch) - reference.predict_on_batch(batch))))
    for candidate in (model, reference):  # Warm-up: compile and tune.
        images_per_second(candidate, batch, 2)
    kzoo_rates, keras_rates = [], []
    for round_index in range(rounds):
        pair = [(model, kzoo_rates), (reference, keras_rates)]
        for candidate, rates in pair if round_index % 2 == 0 else pair[::-1]:
            rates.append(images_per_second(candidate, batch, iterations))
    kzoo_rate, keras_rate = statistics.median(kzoo_rates), statistics.median(keras_rates)
    ratio = kzoo_rate / keras_rate
    return {
        "bench": "builders",
        "model": name,
        "backend": keras.backend.backend(),
        "device": device_name(),
        "batch": batch_size,
        "input": list(shape),
        "rounds": rounds,
        "iterations_per_round": iterations,
        "kzoo_images_per_s": round(kzoo_rate, 2),
        "keras_images_per_s": round(keras_rate, 2),
        "throughput_ratio": round(ratio, 4),
        "kzoo_build_s": round(statistics.median(kzoo_builds), 3),
        "keras_build_s": round(statistics.median(keras_builds), 3),
        "build_ratio": round(statistics.median(kzoo_builds) / statistics.median(keras_builds), 3),
        "max_abs_diff": max_abs_diff,
        "target_throughput_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet50", "resnet50_v2"],
                        choices=sorted(REFERENCES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=6, help="alternating timing rounds")
    parser.add_argument("--iterations", type=int, default=3, help="batches per round")
    args = parser.parse_args()
    for name in args.models:
        result = bench_model(name, args.batch, args.size, args.rounds, args.iterations)
        print(json.dumps(result), flush=True)
        keras.backend.clear_session()


if __name__ == "__main__":
    main()
