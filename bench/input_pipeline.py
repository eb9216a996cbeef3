"""kzoo input pipelines against a naive tf.data pipeline, and the overhead they add to training.

For each preset (mnist, cifar, imagenet) it prints one JSON line with:
- images/s of the kzoo pipeline and of a naive one (decode and augment image
  by image in a `map` without parallel calls, every epoch; batch; no
  prefetch), and their ratio (target >= 3), after a first pass. kzoo's
  default augments one batch at a time on a CPU-only machine (so as not to
  take cores from training) and in parallel when an accelerator trains; both
  figures are printed;
- the training overhead: images/s of `fit` fed by the augmenting pipeline,
  divided by images/s on the same batches already in memory (target >= 0.95).
Images come encoded, as TFDS stores them (PNG for mnist and cifar, JPEG for
imagenet), and both pipelines of a pair use the same Keras augmentation
layers. The mnist preset uses the real MNIST test split when
`../shared/data/mnist` is there; the others random images of the dataset's
size (speed does not depend on content).

    python bench/input_pipeline.py [--presets mnist cifar imagenet]
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
import tensorflow as tf  # noqa: E402

import kzoo  # noqa: E402
from kzoo import augment, data  # noqa: E402
from _timing import EpochTimes  # noqa: E402  (bench/ is on sys.path)

MNIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "mnist")
# preset -> (image shape stored, model, batch size, training input size)
SETUPS = {
    "mnist": ((28, 28, 1), "lenet5", 128, 28),
    "cifar": ((32, 32, 3), "resnet20", 128, 32),
    "imagenet": ((160, 160, 3), "resnet18", 32, 128),
}


def arrays(preset, count):
    shape = SETUPS[preset][0]
    if preset == "mnist" and os.path.isdir(MNIST):
        images = data.read_idx(os.path.join(MNIST, "t10k-images-idx3-ubyte.gz"))[:count, ..., None]
        labels = data.read_idx(os.path.join(MNIST, "t10k-labels-idx1-ubyte.gz"))[:count]
        return images, labels.astype("int32"), "mnist test split"
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (count, *shape), dtype=np.uint8)
    return images, rng.randint(0, 10, count).astype("int32"), "random images"


def preset_augment(preset):
    size = SETUPS[preset][3]
    return augment.imagenet(image_size=size) if preset == "imagenet" else augment.PRESETS[preset]()


def encoded(preset, images, labels):
    """The images as PNG/JPEG strings (encoded once, before any timing)."""
    encode = (lambda image: tf.io.encode_jpeg(image, quality=90)) if preset == "imagenet" else tf.io.encode_png
    strings = [encode(image).numpy() for image in images]
    return tf.data.Dataset.from_tensor_slices((strings, labels))


def decoder(preset):
    shape = SETUPS[preset][0]

    def decode(encoded_image, label):
        image = tf.io.decode_image(encoded_image, channels=shape[-1], expand_animations=False)
        return tf.ensure_shape(image, shape), label

    return decode


def kzoo_pipeline(preset, source, parallel_augment=None):
    """As kzoo.data.load builds it over TFDS: decode (parallel), then the kzoo pipeline."""
    decoded = source.map(decoder(preset), num_parallel_calls=tf.data.AUTOTUNE)
    return data.pipeline(decoded, batch_size=SETUPS[preset][2], augment=preset_augment(preset),
                         num_classes=10, parallel_augment=parallel_augment)


def naive_pipeline(preset, source):
    """What a first tf.data pipeline often looks like: per-image work, serial, no cache or prefetch."""
    batch_augment, decode = preset_augment(preset), decoder(preset)

    def one_image(encoded_image, label):
        image, label = decode(encoded_image, label)
        images, _ = batch_augment(image[None], label[None])
        return images[0], label

    return source.shuffle(10_000).map(one_image).batch(SETUPS[preset][2])


def images_per_second(dataset, batches, first_pass=1):
    """Images/s over `batches` batches, after `first_pass` batches (tracing, buffers, the cache fill)."""
    iterator = iter(dataset.repeat())
    for _ in range(first_pass):
        next(iterator)
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        images, _ = next(iterator)
        seen += int(images.shape[0])
    return seen / (time.perf_counter() - start)


def training_overhead(preset, pipeline, steps, epochs=4):
    """fit throughput on the augmenting pipeline / on the same batches held in memory.

    One model trains on each source for `epochs` epochs of `steps` steps over
    one iterator; the first epoch (compilation, buffers) is not counted and the
    median of the others is. Sources run pipeline, memory, memory, pipeline,
    so drift hits both alike.
    """
    _, name, batch, size = SETUPS[preset]
    batches = list(pipeline.take(steps))
    # The same batches, batched by tf.data (so shapes match the pipeline's and
    # Keras compiles the same step), then cached: nothing is left to compute.
    memory = tf.data.Dataset.from_tensor_slices(
        (tf.concat([b[0] for b in batches], 0), tf.concat([b[1] for b in batches], 0))
    ).batch(batch).cache()
    model = kzoo.get_model(name, num_classes=10, input_shape=(size, size, SETUPS[preset][0][-1]))
    model.compile("adam", "sparse_categorical_crossentropy")
    sources = {"pipeline": pipeline.repeat(), "memory": memory.repeat()}
    rates = {label: [] for label in sources}
    for label in ("pipeline", "memory", "memory", "pipeline"):
        times = EpochTimes()
        model.fit(sources[label], epochs=epochs, steps_per_epoch=steps, callbacks=[times], verbose=0)
        rates[label].append(steps * batch / statistics.median(times.seconds[1:]))
    keras.backend.clear_session()
    return {label: statistics.median(values) for label, values in rates.items()}


def parallel_augment_default() -> bool:
    """kzoo's default: parallel augmentation only when an accelerator trains."""
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--images", type=int, default=4096, help="images held in memory per preset")
    parser.add_argument("--batches", type=int, default=30, help="batches timed per pipeline")
    parser.add_argument("--train-steps", type=int, default=30)
    args = parser.parse_args()
    for preset in args.presets:
        images, labels, source = arrays(preset, args.images if preset != "imagenet" else args.images // 4)
        files = encoded(preset, images, labels)
        pipeline = kzoo_pipeline(preset, files)
        first_pass = len(images) // SETUPS[preset][2]
        fast = images_per_second(pipeline, args.batches, first_pass)
        parallel = images_per_second(kzoo_pipeline(preset, files, parallel_augment=True), args.batches, first_pass)
        naive = images_per_second(naive_pipeline(preset, files), args.batches)
        rates = training_overhead(preset, pipeline, args.train_steps)
        print(json.dumps({
            "bench": "input_pipeline", "preset": preset, "source": source,
            "image_shape": list(SETUPS[preset][0]), "batch": SETUPS[preset][2], "model": SETUPS[preset][1],
            "kzoo_images_per_s": round(fast, 1), "naive_images_per_s": round(naive, 1),
            "speedup": round(fast / naive, 2), "target_speedup": 3.0,
            "parallel_augment": parallel_augment_default(),
            "kzoo_parallel_augment_images_per_s": round(parallel, 1),
            "speedup_parallel_augment": round(parallel / naive, 2),
            "train_images_per_s_pipeline": round(rates["pipeline"], 1),
            "train_images_per_s_in_memory": round(rates["memory"], 1),
            "overhead_ratio": round(rates["pipeline"] / rates["memory"], 3), "target_overhead_ratio": 0.95,
            "cpus": os.cpu_count(),
        }), flush=True)


if __name__ == "__main__":
    main()
