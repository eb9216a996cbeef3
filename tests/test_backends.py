"""kzoo on Keras' JAX and PyTorch backends: without TensorFlow, and the same outputs from the same weights.

Each backend runs in a subprocess (a Keras process has one backend). "Without
TensorFlow" puts packages named tensorflow, tf_keras, TFDS and TFMOT that fail
to import first on the path, as a machine with JAX or PyTorch alone.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from conftest import FAST_MODELS, assert_close, registry_params

import kzoo

TESTS = os.path.dirname(os.path.abspath(__file__))
BACKENDS = ("jax", "torch")
_HIDDEN = ("tensorflow", "tf_keras", "tensorflow_datasets", "tensorflow_model_optimization")


def run_backend(backend, code, *args, tmp_path, without_tensorflow=False):
    """Runs `code` under KERAS_BACKEND=`backend` (and, if asked, where importing TensorFlow fails)."""
    env = {**os.environ, "KERAS_BACKEND": backend, "KERAS_HOME": str(tmp_path / "keras_home"),
           "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    if without_tensorflow:
        hidden = tmp_path / "hidden"
        for package in _HIDDEN:
            (hidden / package).mkdir(parents=True, exist_ok=True)
            (hidden / package / "__init__.py").write_text(f"raise ImportError('{package} is not installed here')\n")
        env["PYTHONPATH"] = os.pathsep.join([str(hidden), env["PYTHONPATH"]])
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True,
                            text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


WITHOUT_TENSORFLOW = """
    import json, os, sys
    import keras, numpy as np
    import kzoo
    from conftest import assert_close, images, torchvision_resnet_state, write_torch_checkpoint
    from kzoo import _backend, training, transfer

    folder, facts = sys.argv[1], {"backend": keras.backend.backend()}
    model = kzoo.resnet18()
    facts["resnet18_params"] = model.count_params()
    facts["info"] = kzoo.model_info("resnet50")["params"]
    shape, x = (64, 64, 3), images((64, 64, 3))

    # Weights in every format: Keras' own files, and a torchvision checkpoint converted on load.
    small = kzoo.resnet18(input_shape=shape)
    small.save_weights(os.path.join(folder, "r18.weights.h5"))
    small.save(os.path.join(folder, "r18.keras"))
    logits = lambda model: model.predict(x, verbose=0)
    assert_close(logits(kzoo.resnet18(input_shape=shape, weights=os.path.join(folder, "r18.weights.h5"))),
                 logits(small))
    assert_close(logits(keras.models.load_model(os.path.join(folder, "r18.keras"))), logits(small))
    state = torchvision_resnet_state(small)
    checkpoint = write_torch_checkpoint(os.path.join(folder, "r18.pth"), state)
    converted = kzoo.resnet18(input_shape=shape, weights=checkpoint)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(converted.get_layer("predictions").kernel),
                                  state["fc.weight"].T)

    # Transfer learning and fit on arrays, with checkpoints, then on a PyDataset.
    backbone = os.path.join(folder, "lenet.weights.h5")
    kzoo.lenet5().save_weights(backbone)
    new = transfer.build("lenet5", num_classes=3, weights=backbone)
    rng = np.random.default_rng(0)
    images_, labels = rng.integers(0, 256, (96, 28, 28, 1)).astype("uint8"), rng.integers(0, 3, 96)
    history = training.fit(new, (images_, labels), (images_[:32], labels[:32]), epochs=2, batch_size=32,
                           seed=0, checkpoint_dir=os.path.join(folder, "run"), verbose=0)
    facts["epochs"] = history.epoch
    facts["files"] = sorted(os.listdir(os.path.join(folder, "run")))

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 3
        def __getitem__(self, index):
            return images_[index * 32:(index + 1) * 32] / 255.0, labels[index * 32:(index + 1) * 32]

    facts["pydataset_loss"] = training.fit(kzoo.lenet5(num_classes=3), Batches(), epochs=1, verbose=0,
                                           label_smoothing=0.0).history["loss"]

    # Segmentation: a U-Net trains on (images, masks) arrays and is measured.
    from kzoo import segment
    unet = segment.build("resnet20", 3, head="unet", weights=None, input_shape=(32, 32, 3))
    masks, canvases = rng.integers(0, 3, (16, 32, 32)), rng.uniform(0, 1, (16, 32, 32, 3)).astype("float32")
    facts["segment"] = sorted(training.fit(unet, (canvases, masks), epochs=1, batch_size=8, verbose=0).history)
    facts["segment_iou"] = segment.evaluate(unet, (canvases, masks))["mean_iou"]

    # What needs TensorFlow says so, in one error.
    errors = {}
    for what, call in {"data": lambda: kzoo.data.load("digits"), "export": lambda: __import__("kzoo.export"),
                       "strategy": lambda: training.fit(new, (images_, labels), epochs=1, strategy="mirrored"),
                       "compress": lambda: kzoo.compress.prune(new, None),
                       "attack": lambda: kzoo.robust.fgsm(new, images_[:2] / 255.0, eps=0.1),
                       "segment_data": lambda: segment.from_arrays(canvases, masks)}.items():
        try:
            call()
            errors[what] = None
        except _backend.TensorFlowRequiredError as error:
            errors[what] = str(error)
    facts["errors"] = errors
    facts["tensorflow_imported"] = "tensorflow" in sys.modules and hasattr(sys.modules["tensorflow"], "constant")
    print(json.dumps(facts))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_kzoo_builds_loads_and_trains_where_tensorflow_is_missing(backend, tmp_path):
    facts = run_backend(backend, WITHOUT_TENSORFLOW, tmp_path, tmp_path=tmp_path, without_tensorflow=True)
    assert facts["backend"] == backend
    assert facts["resnet18_params"] == kzoo.resnet18().count_params()
    assert facts["info"] == kzoo.model_info("resnet50")["params"]
    assert facts["epochs"] == [0, 1]
    assert facts["files"] == ["best.keras", "history.csv"]  # TensorBoard logs need TensorFlow.
    assert np.isfinite(facts["pydataset_loss"][0])
    assert facts["segment"] == ["accuracy", "loss", "mean_iou"] and 0 <= facts["segment_iou"] <= 1
    assert not facts["tensorflow_imported"]
    for what, message in facts["errors"].items():
        assert message is not None, f"{what} ran without TensorFlow"
        assert "TensorFlow" in message and ("pip install" in message or "KERAS_BACKEND=tensorflow" in message), \
            message


OUTPUTS = """
    import json, sys
    import keras, numpy as np
    import kzoo
    sys.path.insert(0, sys.argv[3])
    from test_backends import filled_logits

    names, path = sys.argv[1].split(","), sys.argv[2]
    np.savez(path, **{name: filled_logits(name) for name in names})
    print(json.dumps(keras.backend.backend()))
"""


def small_input(name):
    info = kzoo.model_info(name)
    size = max(info["min_size"], min(32, info["default_input"][0]))
    return (size, size, info["default_input"][2])


def filled_logits(name):
    """A registry model's logits at a small input, with weights drawn from a NumPy generator seeded by the
    name: every backend builds the same model and fills it with the same values in the same order."""
    shape = small_input(name)
    model = kzoo.get_model(name, input_shape=shape, num_classes=10, classifier_activation=None)
    rng = np.random.default_rng(sum(map(ord, name)))
    # Kernels He-scaled, so that deep stacks neither vanish nor explode; residual stacks a little less (gain 0.8):
    # with full He gain in every branch, SE-ResNet-152's logits grow to 2.5e3 and float32 round-off is amplified
    # to 30% between any two kernels (two CPUs too): chaos, not a backend difference. Gain 0.8 gives 1e-6.
    gain = 0.8 if any(isinstance(layer, keras.layers.Add) for layer in model.layers) else 1.0
    values = []
    for weight in model.weights:
        initial = keras.ops.convert_to_numpy(weight)
        if initial.ndim >= 2:
            values.append(rng.normal(0, gain * np.sqrt(2.0 / np.prod(initial.shape[:-1])), initial.shape))
        else:  # Biases and BatchNorm: their initial values (0 or 1), moved a little.
            values.append(initial + rng.uniform(-0.1, 0.1, initial.shape))
    model.set_weights([value.astype("float32") for value in values])
    x = np.random.default_rng(1).uniform(0, 1, (2, *shape)).astype("float32")
    logits = model.predict(x, verbose=0)
    keras.backend.clear_session()
    return logits


_outputs = {}


def backend_logits(backend, names, tmp_path_factory):
    """`filled_logits` of `names` computed in one `backend` subprocess, cached per (backend, names)."""
    key = (backend, tuple(names))
    if key not in _outputs:
        folder = tmp_path_factory.mktemp(f"logits_{backend}")
        run_backend(backend, OUTPUTS, ",".join(names), folder / "logits.npz", TESTS, tmp_path=folder)
        with np.load(folder / "logits.npz") as saved:
            _outputs[key] = dict(saved)
    return _outputs[key]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", registry_params())
def test_the_same_weights_give_the_same_logits_on_every_backend(name, backend, tmp_path_factory):
    group = sorted(FAST_MODELS) if name in FAST_MODELS else sorted(set(kzoo.list_models()) - FAST_MODELS)
    other = backend_logits(backend, group, tmp_path_factory)[name]
    reference = filled_logits(name)  # TensorFlow, this process.
    assert other.shape == reference.shape == (2, 10)
    assert np.abs(reference).max() > 1e-3  # Not a dead network: the comparison means something.
    assert_close(other, reference, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tf_data_pipelines_feed_fit_where_tensorflow_is_installed(backend, tmp_path):
    facts = run_backend(backend, """
        import json, sys
        import keras, kzoo, numpy as np
        from kzoo import data, training

        train = data.load("digits", batch_size=64, seed=0)
        history = training.fit(kzoo.lenet5(), train, data.load("digits", "test", batch_size=120, shuffle=False),
                               epochs=3, seed=0, checkpoint_dir=sys.argv[1], verbose=0)
        # Every augmentation preset runs in tf.data on this backend, and a seed repeats it.
        rgb = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype="uint8")
        presets = {"mnist": lambda: kzoo.augment.mnist(mixup_alpha=0.2, seed=3),
                   "cifar": lambda: kzoo.augment.cifar(cutmix_alpha=1.0, seed=3),
                   "imagenet": lambda: kzoo.augment.imagenet(image_size=24, hue=0.1, mixup_alpha=0.2, seed=3),
                   "rand_augment": lambda: kzoo.augment.imagenet(image_size=24, rand_augment=True, seed=3)}
        batches = {}
        for name, preset in presets.items():
            # A fresh preset with the same seed gives the same batch (Keras' own RandAugment, seconds to trace
            # on JAX, runs once).
            runs = [[np.asarray(t) for t in next(iter(data.from_arrays(rgb, np.arange(64) % 10, batch_size=16,
                                                                         seed=3, augment=preset(), num_classes=10)))]
                    for _ in range(1 if name == "rand_augment" else 2)]
            x, y = runs[0]
            batches[name] = {"shape": list(x.shape), "labels": list(y.shape), "low": float(x.min()),
                             "high": float(x.max()),
                             "repeats": None if len(runs) == 1 else bool(np.array_equal(x, runs[1][0]))}
        print(json.dumps({"backend": keras.backend.backend(), "val_accuracy": history.history["val_accuracy"],
                          "presets": batches}))
    """, tmp_path / "run", tmp_path=tmp_path)
    assert facts["backend"] == backend
    assert facts["val_accuracy"][-1] > 0.5  # It learned from the tf.data batches.
    for name, batch in facts["presets"].items():
        assert batch["labels"] == ([16] if name == "rand_augment" else [16, 10]), name  # Mixed: soft labels.
        assert batch["shape"][1:] == ([24, 24, 3] if name in ("imagenet", "rand_augment") else [32, 32, 3]), name
        assert 0.0 <= batch["low"] and batch["high"] <= 1.0, name
        assert batch["repeats"] is (None if name == "rand_augment" else True), name
