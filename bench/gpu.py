"""Training and inference images/s on one GPU: kzoo on Keras-JAX against keras.applications and torchvision.

Every row runs in this one invocation, on the same GPU, one library per
subprocess (a Keras process has one backend; JAX and PyTorch each take the
GPU's memory): bf16 mixed precision, 224x224 images already on the device,
SGD with momentum 0.9, batch 256 (VGG-16: 128). No TensorFlow is needed.

- kzoo: `kzoo.training.fit` on a `keras.utils.PyDataset` of device arrays
  (`--steps-per-execution`, default 8), the path the README recommends; and,
  for ResNet-50, Keras' `train_on_batch` (one step per call) and a
  hand-written jitted step over `model.stateless_call` (the trainer's floor).
  Inference: a jitted `stateless_call`.
- keras.applications ResNet-50 through the same `kzoo.training.fit`.
- The BatchNormalization ablation (ResNet-50): kzoo's model with Keras' own
  BN statistics, and with a hand-written JAX gradient (`BATCHNORM_VARIANTS`).
- `resnet50_tv` is torchvision's own layout (stride on the 3x3, no conv
  biases): the same network as the torchvision rows.
- `--xla-flags`: kzoo's ResNet-50 once more in a JAX process with them.
- torchvision: eager (channels_last, bf16 autocast), and `torch.compile`
  for ResNet-50 (when `--compile`; compiling takes minutes).

An untimed training run warms the JAX process up first. One JSON object per
line, each with the GPU's name.

    KERAS_BACKEND=jax python bench/gpu.py [--models resnet50,resnet18,vgg16,resnet50_tv] [--steps 30] [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = {"vgg16": 128}
TORCHVISION = {"resnet50": "resnet50", "resnet18": "resnet18", "vgg16": "vgg16"}  # resnet50_tv: torchvision's own.


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,resnet18,vgg16")
    parser.add_argument("--steps", type=int, default=64, help="timed steps per row (after the warm-up)")
    parser.add_argument("--steps-per-execution", type=int, default=8)
    parser.add_argument("--compile", action="store_true", help="also torch.compile ResNet-50 (minutes)")
    parser.add_argument("--deadline-s", type=float, default=480, help="rows not started by then are skipped")
    parser.add_argument("--image-size", type=int, default=224, help="smaller only for a smoke run on a CPU")
    parser.add_argument("--batch", type=int, help="one batch size for every model (default 256; VGG-16 128)")
    parser.add_argument("--batchnorm-ablation", action=argparse.BooleanOptionalAction, default=True,
                        help="also train kzoo's ResNet-50 with each BatchNormalization variant (BATCHNORM_VARIANTS)")
    parser.add_argument("--xla-flags", help="then train kzoo's ResNet-50 again in a JAX process with these XLA_FLAGS")
    parser.add_argument("--reference-rows", action=argparse.BooleanOptionalAction, default=True,
                        help="keras.applications' ResNet-50 and kzoo's through train_on_batch")
    parser.add_argument("--worker", choices=["keras", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "keras":
        return keras_rows(args)
    if args.worker == "torch":
        return torch_rows(args)
    start = time.time()

    def run_worker(worker, env, models=args.models, batchnorm_ablation=args.batchnorm_ablation,
                   reference_rows=args.reference_rows):
        """One library's rows in a subprocess, with what is left of the deadline."""
        left = args.deadline_s - (time.time() - start)
        command = [sys.executable, __file__, "--worker", worker, "--models", models, "--steps", str(args.steps),
                   "--steps-per-execution", str(args.steps_per_execution), "--deadline-s", str(left),
                   "--image-size", str(args.image_size),
                   "--batchnorm-ablation" if batchnorm_ablation else "--no-batchnorm-ablation",
                   "--reference-rows" if reference_rows else "--no-reference-rows"]
        command += (["--batch", str(args.batch)] if args.batch else []) + (["--compile"] if args.compile else [])
        subprocess.run(command, env={**os.environ, **env}, cwd=ROOT, check=False)

    run_worker("torch", {})
    run_worker("keras", {"KERAS_BACKEND": "jax"})
    if args.xla_flags and time.time() - start < args.deadline_s:
        emit(note="XLA_FLAGS", xla_flags=args.xla_flags)
        run_worker("keras", {"KERAS_BACKEND": "jax", "XLA_FLAGS": args.xla_flags}, models="resnet50",
                   batchnorm_ablation=False, reference_rows=False)


def emit(**row):
    print(json.dumps(row), flush=True)


class Deadline:
    def __init__(self, seconds):
        self.end = time.time() + seconds

    def passed(self, row):
        if time.time() > self.end:
            emit(**row, skipped="deadline")
            return True
        return False


def keras_rows(args):
    sys.path.insert(0, ROOT)
    import jax
    import keras
    import numpy as np

    import kzoo
    from kzoo import training

    jax.config.update("jax_compilation_cache_dir", "/tmp/kzoo-jax-cache")  # A rerun on the same machine reuses it.
    gpu = jax.devices()[0].device_kind
    deadline = Deadline(args.deadline_s)
    flags = {"xla_flags": os.environ["XLA_FLAGS"]} if os.environ.get("XLA_FLAGS") else {}
    base = {"gpu": gpu, "backend": "jax", "jax": jax.__version__, "keras": keras.__version__,
            "policy": "mixed_bfloat16", **flags}

    names = args.models.split(",")
    # The first training in a process runs slower for a while (measured: 6,150 against 6,520 images/s for the
    # same ResNet-50 fit later in the process), so an untimed one goes first.
    names = [f"warm-up:{names[0]}", *names]
    for name in names:
        warm_up, name = name.startswith("warm-up:"), name.removeprefix("warm-up:")
        shape = (args.image_size, args.image_size, 3)
        builders = [("kzoo", lambda: kzoo.get_model(name, input_shape=shape))]
        if name == "resnet50" and not warm_up and args.reference_rows:
            builders.append(("keras.applications", lambda: keras.applications.ResNet50(weights=None,
                                                                                       input_shape=shape)))
        if name == "resnet50" and not warm_up and args.batchnorm_ablation:  # The "kzoo" row is kzoo's own BN.
            builders += [(f"kzoo, BN: {variant}", lambda: kzoo.get_model(name, input_shape=shape))
                         for variant in BATCHNORM_VARIANTS if variant != BATCHNORM_VARIANTS[1]]
        for library, build in builders:
            batch = args.batch or BATCH.get(name, 256)
            row = {**base, "library": library, "model": name, "batch": batch}
            if deadline.passed(row):
                continue
            keras.backend.clear_session()
            keras.config.set_dtype_policy("mixed_bfloat16")  # After clear_session, which resets the policy.
            variant = library.removeprefix("kzoo, BN: ") if library.startswith("kzoo, BN: ") else None
            with batchnorm_variant(variant):
                model = build()
                x = jax.device_put(np.random.default_rng(0).uniform(0, 1, (batch, *shape)).astype("float32"))
                y = jax.device_put(np.arange(batch, dtype="int32") % 1000)
                measured = fit_throughput(model, x, y, args, training)
                if warm_up:
                    continue
                emit(**row, **measured)
                if variant:
                    emit(**row, **stateless_step_throughput(model, x, y, args))
                    continue
            if library == "kzoo":
                emit(**row, **infer_throughput(model, x, args))
            if library == "kzoo" and name == "resnet50":
                emit(**row, **stateless_step_throughput(model, x, y, args))
                if args.reference_rows and not deadline.passed({**row, "path": "train_on_batch"}):
                    emit(**row, **train_on_batch_throughput(model, x, y, args))


# What BatchNormalization's training statistics cost: kzoo's layer (one pass over the batch for the mean and the
# mean square) against Keras' own (`ops.moments`: the mean, then the variance around it), and against a JAX-only
# BatchNormalization with a hand-written gradient (cuDNN's formula), the most a fused layer could give.
BATCHNORM_VARIANTS = ("Keras' ops.moments", "one pass (kzoo's)", "one pass, hand-written gradient (JAX)")


@contextlib.contextmanager
def batchnorm_variant(variant):
    """Patches kzoo's BatchNormalization into `variant` while models are built, trained and timed."""
    import keras

    from kzoo.layers import BatchNormalization

    saved = dict(BatchNormalization.__dict__)
    if variant == BATCHNORM_VARIANTS[0]:
        BatchNormalization._moments = keras.layers.BatchNormalization._moments
    elif variant == BATCHNORM_VARIANTS[2]:
        BatchNormalization.call = _fused_batchnorm_call(keras.layers.BatchNormalization.call)
    try:
        yield
    finally:
        for key in ("_moments", "call"):
            if key in saved:
                setattr(BatchNormalization, key, saved[key])
            elif key in BatchNormalization.__dict__:
                delattr(BatchNormalization, key)


def _fused_batchnorm_call(keras_call):
    """BatchNormalization.call whose training step is one `jax.custom_vjp` (channels last, no mask)."""
    import jax
    import jax.numpy as jnp
    from keras import ops

    def statistics(x):
        axes = tuple(range(x.ndim - 1))
        values = x.astype(jnp.float32)
        mean = jnp.mean(values, axes)
        return values, axes, mean, jnp.maximum(jnp.mean(jnp.square(values), axes) - jnp.square(mean), 0.0)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
    def normalize(x, gamma, beta, epsilon):
        return forward(x, gamma, beta, epsilon)[0]

    def forward(x, gamma, beta, epsilon):
        values, _, mean, variance = statistics(x)
        inverse = jax.lax.rsqrt(variance + epsilon)
        out = ((values - mean) * (inverse * gamma) + beta).astype(x.dtype)
        return (out, mean, variance), (x, mean, inverse, gamma)

    def backward(epsilon, saved, cotangents):
        x, mean, inverse, gamma = saved  # The statistics' own cotangents are zero: they only feed the moving ones.
        grad = cotangents[0].astype(jnp.float32)
        axes = tuple(range(x.ndim - 1))
        count = x.size // x.shape[-1]
        normalized = (x.astype(jnp.float32) - mean) * inverse
        grad_beta, grad_gamma = jnp.sum(grad, axes), jnp.sum(grad * normalized, axes)
        grad_x = (gamma * inverse / count) * (count * grad - grad_beta - normalized * grad_gamma)
        return grad_x.astype(x.dtype), grad_gamma, grad_beta

    normalize.defvjp(forward, backward)

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or mask is not None or self.axis not in (-1, len(inputs.shape) - 1):
            return keras_call(self, inputs, training=training, mask=mask)
        out, mean, variance = normalize(inputs, ops.cast(self.gamma, "float32"), ops.cast(self.beta, "float32"),
                                        self.epsilon)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return ops.cast(out, self.compute_dtype)

    return call


def fit_throughput(model, x, y, args, training):
    """kzoo.training.fit on device batches; times the calls after the first (compiled) one."""
    import keras

    class DeviceBatches(keras.utils.PyDataset):
        def __len__(self):  # The first call compiles and the second warms up: neither is timed.
            return args.steps + 2 * args.steps_per_execution

        def __getitem__(self, index):
            return x, y

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            float(logs["loss"])  # Waits for the device.
            self.times.append(time.perf_counter())

    started, clock = time.perf_counter(), Clock()
    training.fit(model, DeviceBatches(), epochs=1, optimizer="sgd", learning_rate=0.1, schedule="constant",
                 mixed_precision="mixed_bfloat16", steps_per_execution=args.steps_per_execution,
                 callbacks=[clock], verbose=0)
    elapsed = clock.times[-1] - clock.times[1]
    return {"path": f"training.fit, steps_per_execution {args.steps_per_execution}", "task": "train",
            "images_per_s": round(args.steps * len(x) / elapsed), "first_call_s": round(clock.times[0] - started, 1)}


def infer_throughput(model, x, args):
    import jax

    variables = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])
    forward = jax.jit(lambda trainable, other, images: model.stateless_call(trainable, other, images)[0])
    forward(*variables, x).block_until_ready()
    started = time.perf_counter()
    for _ in range(args.steps):
        out = forward(*variables, x)
    out.block_until_ready()
    return {"path": "jit(stateless_call)", "task": "infer",
            "images_per_s": round(args.steps * len(x) / (time.perf_counter() - started))}


def train_on_batch_throughput(model, x, y, args):
    import keras

    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="sparse_categorical_crossentropy",
                  jit_compile=True)
    for _ in range(2):
        model.train_on_batch(x, y)
    started = time.perf_counter()
    for _ in range(args.steps):
        model.train_on_batch(x, y)  # Returns Python floats: waits for the device every step.
    return {"path": "train_on_batch", "task": "train",
            "images_per_s": round(args.steps * len(x) / (time.perf_counter() - started))}


def stateless_step_throughput(model, x, y, args):
    """The floor under any trainer: one jitted step of loss, gradients and SGD over `stateless_call`."""
    import jax
    import keras

    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    def loss(trainable, other, images, labels):
        out, other = model.stateless_call(trainable, other, images, training=True)
        return loss_fn(labels, out), other

    @jax.jit
    def step(trainable, other, slots, images, labels):
        (value, other), grads = jax.value_and_grad(loss, has_aux=True)(trainable, other, images, labels)
        trainable, slots = optimizer.stateless_apply(slots, grads, trainable)
        return trainable, other, slots, value

    state = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables])
    for _ in range(2):
        *state, value = step(*state, x, y)
    value.block_until_ready()
    started = time.perf_counter()
    for _ in range(args.steps):
        *state, value = step(*state, x, y)
    value.block_until_ready()
    return {"path": "jit(value_and_grad(stateless_call)) + SGD", "task": "train",
            "images_per_s": round(args.steps * len(x) / (time.perf_counter() - started))}


def torch_rows(args):
    try:
        import torch
        import torchvision
    except (ImportError, RuntimeError) as error:  # Absent, or (CPU-only torch) its compiled ops do not load.
        emit(library="torchvision", skipped=f"cannot be imported ({error})")
        return
    deadline = Deadline(args.deadline_s)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = torch.cuda.get_device_name() if device == "cuda" else "none (CPU)"
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    base = {"gpu": gpu, "torch": torch.__version__, "torchvision": torchvision.__version__, "policy": "bf16 autocast",
            "memory_format": "channels_last"}
    plans = [(name, "eager") for name in args.models.split(",") if name in TORCHVISION]
    if args.compile and "resnet50" in args.models.split(","):
        plans.append(("resnet50", "torch.compile"))
    for name, mode in plans:
        batch = args.batch or BATCH.get(name, 256)
        row = {**base, "library": f"torchvision {mode}", "model": name, "batch": batch}
        if deadline.passed(row):
            continue
        model = getattr(torchvision.models, TORCHVISION[name])().to(device).to(memory_format=torch.channels_last)
        x = torch.rand(batch, 3, args.image_size, args.image_size, device=device).to(memory_format=torch.channels_last)
        y = torch.arange(batch, device=device) % 1000
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        run = torch.compile(model) if mode == "torch.compile" else model

        def train_step():
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(run(x), y)
            loss.backward()
            optimizer.step()

        def infer_step():
            with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
                run(x)

        for task, step in (("train", train_step), ("infer", infer_step)):
            model.train(task == "train")
            started = time.perf_counter()
            for _ in range(3):
                step()
            synchronize()
            warm = time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(args.steps):
                step()
            synchronize()
            emit(**row, task=task, images_per_s=round(args.steps * batch / (time.perf_counter() - started)),
                 warmup_s=round(warm, 1))
        del model, optimizer, run
        if device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
