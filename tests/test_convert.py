"""kzoo.convert: checkpoint tensors move into a model by a key map, every weight accounted for."""

import os
import pickle

import keras
import numpy as np
import pytest
from conftest import assert_close, images, torchvision_resnet_state, write_torch_checkpoint

import kzoo
from kzoo import convert

# LeNet-5 in a PyTorch-style checkpoint: the key map a family converter declares.
LENET_MAP = {
    "conv1": [("features.0.weight", convert.torch_conv_kernel), "features.0.bias"],
    "conv2": [("features.3.weight", convert.torch_conv_kernel), "features.3.bias"],
    "fc1": [("classifier.0.weight", convert.torch_dense_kernel), "classifier.0.bias"],
    "fc2": [("classifier.2.weight", convert.torch_dense_kernel), "classifier.2.bias"],
    "predictions": [("classifier.4.weight", convert.torch_dense_kernel), "classifier.4.bias"],
}


def torch_layout_checkpoint(model):
    """The model's weights as PyTorch stores them (kernels out-first), under LENET_MAP's keys."""
    tensors = {}
    for layer_name, entries in LENET_MAP.items():
        kernel, bias = model.get_layer(layer_name).get_weights()
        kernel = np.transpose(kernel, (3, 2, 0, 1)) if kernel.ndim == 4 else kernel.T
        tensors[entries[0][0]], tensors[entries[1]] = kernel, bias
    tensors["features.1.num_batches_tracked"] = np.array(7)  # Carries no weights: ignored.
    return tensors


def test_port_moves_a_torch_layout_checkpoint_into_the_model():
    source = kzoo.lenet5()
    target = kzoo.lenet5()
    x = images((28, 28, 1), batch=4)
    assert not np.allclose(target(x), source(x))
    convert.port(target, torch_layout_checkpoint(source), LENET_MAP)
    assert_close(target(x), source(x), rtol=1e-6)


@pytest.mark.parametrize("break_it, message", [
    (lambda t, m: t.pop("features.3.bias"), "'features.3.bias' .* is not in the checkpoint"),
    (lambda t, m: t.update({"features.0.weight": t["features.0.weight"][:, :, :3]}), r"gives shape \(3, 5, 1, 6\) for conv1/kernel, which needs \(5, 5, 1, 6\)"),
    (lambda t, m: t.update({"extra.weight": np.zeros(3)}), "have no place in the key map"),
    (lambda t, m: m.pop("fc2"), "not in the key map, e.g. \\['fc2'\\]"),
    (lambda t, m: m.update({"fc9": ["x"]}), "names layer 'fc9'"),
    (lambda t, m: m.update({"fc1": ["classifier.0.bias"]}), "has 2 weights"),
])
def test_port_refuses_a_map_that_does_not_fit_and_changes_nothing(break_it, message):
    source, target = kzoo.lenet5(), kzoo.lenet5()
    tensors, key_map = torch_layout_checkpoint(source), dict(LENET_MAP)
    break_it(tensors, key_map)
    before = [w.copy() for w in target.get_weights()]
    with pytest.raises(ValueError, match=message):
        convert.port(target, tensors, key_map)
    assert all(np.array_equal(a, b) for a, b in zip(before, target.get_weights()))


@pytest.mark.parametrize("form", ["zip", "legacy", "safetensors"])
def test_each_checkpoint_format_reads_back_the_arrays_it_holds(form, tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"a.weight": rng.normal(size=(4, 3, 2, 2)).astype("float32"),
               "a.bias": rng.normal(size=4).astype("float16"),
               "b.num_batches_tracked": np.array(5, dtype="int64"),
               "c.weight": rng.normal(size=(3, 5)).astype("float64")}
    if form == "safetensors":
        from safetensors.numpy import save_file

        path = str(tmp_path / "w.safetensors")
        save_file(tensors, path)
    else:
        path = write_torch_checkpoint(str(tmp_path / "w.pth"), tensors, legacy=form == "legacy")
    read = convert.read_checkpoint(path)
    assert sorted(read) == sorted(tensors)  # safetensors keeps its own order.
    for key, array in tensors.items():
        assert read[key].dtype == array.dtype and read[key].shape == array.shape
        np.testing.assert_array_equal(read[key], array)
    assert sorted(convert.checkpoint_keys(path)) == sorted(tensors)
    if form == "legacy":  # Its tensors' bytes come last: the keys are read without them.
        with open(path, "r+b") as file:
            file.truncate(os.path.getsize(path) - tensors["c.weight"].nbytes)
        assert sorted(convert.checkpoint_keys(path)) == sorted(tensors)
        with pytest.raises(convert.CheckpointError, match="truncated"):
            convert.read_checkpoint(path)


def test_a_pickle_that_names_any_other_global_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    for path, data in [(tmp_path / "evil.pth", pickle.dumps({"w": Payload()}, protocol=2))]:
        import zipfile

        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", data)
        with pytest.raises(convert.CheckpointError, match=r"names (posix|os)\.system.*never runs code"):
            convert.read_checkpoint(str(path))
    legacy = tmp_path / "evil-legacy.pth"
    legacy.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(Payload(), protocol=2))
    with pytest.raises(convert.CheckpointError, match="never runs code"):
        convert.read_checkpoint(str(legacy))
    assert not marker.exists()


@pytest.mark.parametrize("form", ["zip", "legacy"])
def test_a_truncated_checkpoint_says_so(form, tmp_path):
    tensors = {"w": np.ones((64, 64), "float32")}
    path = write_torch_checkpoint(str(tmp_path / "w.pth"), tensors, legacy=form == "legacy")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) - 4000])
    with pytest.raises(convert.CheckpointError, match="truncated"):
        convert.read_checkpoint(path)


def test_not_a_checkpoint_and_not_a_state_dict_are_refused(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(convert.CheckpointError, match="truncated, corrupt or not a PyTorch file"):
        convert.read_checkpoint(str(text))
    listed = tmp_path / "list.pth"
    import zipfile

    with zipfile.ZipFile(listed, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps([1, 2], protocol=2))
    with pytest.raises(convert.CheckpointError, match="holds no state dict"):
        convert.read_checkpoint(str(listed))


@pytest.mark.parametrize("form", ["zip", "legacy", "safetensors"])
def test_resnet18_loads_a_torchvision_checkpoint_layer_by_layer(form, tmp_path):
    shape = (64, 64, 3)
    state = torchvision_resnet_state(kzoo.resnet18(input_shape=shape))
    if form == "safetensors":
        from safetensors.numpy import save_file

        path = str(tmp_path / "resnet18.safetensors")
        save_file({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, path)
    else:
        path = write_torch_checkpoint(str(tmp_path / "resnet18.pth"), state, legacy=form == "legacy")
    model = kzoo.resnet18(weights=path, input_shape=shape)
    conv = model.get_layer("conv3_block1_0_conv").kernel.numpy()
    np.testing.assert_array_equal(conv, np.transpose(state["layer2.0.downsample.0.weight"], (2, 3, 1, 0)))
    bn = model.get_layer("conv4_block2_2_bn")
    for weight, key in zip(bn.weights, ("weight", "bias", "running_mean", "running_var")):
        np.testing.assert_array_equal(weight.numpy(), state[f"layer3.1.bn2.{key}"])
    np.testing.assert_array_equal(model.get_layer("predictions").kernel.numpy(), state["fc.weight"].T)
    # Without the classifier, the same checkpoint fills the backbone and its fc.* tensors are left out.
    backbone = kzoo.resnet18(weights=path, include_top=False, input_shape=shape)
    x = images(shape)
    features = keras.Model(model.input, model.get_layer("conv5_block2_out").output)
    assert_close(backbone(x), features(x))


def test_the_flatten_reorder_matches_torchs_channel_first_order():
    """torch flattens a (C, H, W) map, Keras an (H, W, C) one: the first dense layer's rows are reordered."""
    rng = np.random.default_rng(0)
    feature_map = rng.normal(size=(3, 2, 5)).astype("float32")  # (H, W, C)
    torch_weight = rng.normal(size=(7, 5 * 3 * 2)).astype("float32")  # (out, C*H*W)
    expected = torch_weight @ np.transpose(feature_map, (2, 0, 1)).ravel()
    keras_kernel = convert.after_flatten(3, 2, 5)(torch_weight)
    assert_close(feature_map.ravel() @ keras_kernel, expected)


def test_alexnet_takes_torchvisions_sequential_numbering(tmp_path):
    shape = (127, 127, 3)  # A 3x3 map before the flatten: the reorder matters.
    model = kzoo.alexnet(input_shape=shape, num_classes=5)
    rng, state = np.random.default_rng(0), {}
    for index, layer in zip((0, 3, 6, 8, 10), ("conv1", "conv2", "conv3", "conv4", "conv5")):
        h, w, c_in, c_out = model.get_layer(layer).kernel.shape
        state[f"features.{index}.weight"] = rng.normal(0, 0.05, (c_out, c_in, h, w)).astype("float32")
        state[f"features.{index}.bias"] = rng.normal(0, 0.05, c_out).astype("float32")
    for index, layer in zip((1, 4, 6), ("fc6", "fc7", "predictions")):
        c_in, c_out = model.get_layer(layer).kernel.shape
        state[f"classifier.{index}.weight"] = rng.normal(0, 0.05, (c_out, c_in)).astype("float32")
        state[f"classifier.{index}.bias"] = rng.normal(0, 0.05, c_out).astype("float32")
    path = write_torch_checkpoint(str(tmp_path / "alexnet.pth"), state)
    loaded = kzoo.alexnet(input_shape=shape, num_classes=5, weights=path)
    assert model.get_layer("pool5").output.shape[1:3] == (3, 3)
    np.testing.assert_array_equal(loaded.get_layer("conv4").kernel.numpy(),
                                  np.transpose(state["features.8.weight"], (2, 3, 1, 0)))
    kernel = loaded.get_layer("fc6").kernel.numpy()  # Row (h, w, c) holds torch's column (c, h, w).
    np.testing.assert_array_equal(kernel[(1 * 3 + 2) * 256 + 7], state["classifier.1.weight"][:, 7 * 9 + 1 * 3 + 2])


def test_a_checkpoint_of_another_architecture_names_the_first_key_that_does_not_fit(tmp_path):
    shape = (64, 64, 3)
    path = write_torch_checkpoint(str(tmp_path / "r18.pth"), torchvision_resnet_state(kzoo.resnet18(input_shape=shape)))
    with pytest.raises(ValueError, match=r"does not fit resnet34: .*'layer1\.2\.conv1\.weight'.*not in the checkpoint"):
        kzoo.resnet34(weights=path, input_shape=shape)
    with pytest.raises(ValueError, match=r"vgg11 \(vgg\)|does not fit vgg11"):
        kzoo.vgg11(weights=path, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="no converter for PyTorch checkpoints"):
        kzoo.lenet5(weights=path)


def test_googlenet_drops_the_auxiliary_heads_unless_it_has_them(tmp_path):
    with_aux = kzoo.googlenet(aux_logits=True, num_classes=4, input_shape=(96, 96, 3))
    state = {}
    for layer in (layer for layer in with_aux.layers if layer.weights):
        module = "fc" if layer.name == "predictions" else layer.name.replace("_", ".")
        for entry, weight in zip(convert.layer_entries(layer, module), layer.weights):
            key = entry[0] if isinstance(entry, tuple) else entry
            value = np.random.default_rng(len(state)).normal(0, 0.05, weight.shape).astype("float32")
            if isinstance(layer, keras.layers.Conv2D) and key.endswith(".weight"):
                value = np.transpose(value, (3, 2, 0, 1))
            elif isinstance(layer, keras.layers.Dense) and key.endswith(".weight"):
                value = value.T
            state[key] = np.abs(value) + 0.5 if key.endswith("running_var") else value
    assert "aux1.fc1.weight" in state and "inception4e.branch3.1.conv.weight" in state
    path = write_torch_checkpoint(str(tmp_path / "googlenet.pth"), state)
    plain = kzoo.googlenet(num_classes=4, input_shape=(96, 96, 3), weights=path)
    again = kzoo.googlenet(aux_logits=True, num_classes=4, input_shape=(96, 96, 3), weights=path)
    x = images((96, 96, 3))
    assert_close(plain(x), again(x)[0])
    np.testing.assert_array_equal(again.get_layer("aux2_fc2").kernel.numpy(), state["aux2.fc2.weight"].T)


def test_kzoo_convert_writes_a_weights_file_once(tmp_path, capsys):
    from kzoo import cli

    state = torchvision_resnet_state(kzoo.resnet18(input_shape=(64, 64, 3)))
    checkpoint = write_torch_checkpoint(str(tmp_path / "resnet18-test.pth"), state)
    out = str(tmp_path / "resnet18.weights.h5")
    assert cli.main(["convert", checkpoint, "--model", "resnet18", "--out", out]) == 0
    assert "wrote" in capsys.readouterr().out
    model = kzoo.resnet18(weights=out)
    np.testing.assert_array_equal(model.get_layer("conv1_conv").kernel.numpy(),
                                  np.transpose(state["conv1.weight"], (2, 3, 1, 0)))
    assert oct(os.stat(out).st_mode & 0o777) != oct(0o600)  # A normal file, not a temporary's mode.
    assert cli.main(["convert", checkpoint, "--model", "resnet18", "--out", out]) == cli.EXIT_EXISTS
    assert cli.main(["convert", checkpoint, "--model", "resnet34", "--out", str(tmp_path / "r34.weights.h5")]) \
        == cli.EXIT_CHECK_FAILED
    assert "'layer1.2.conv1.weight'" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "r34.weights.h5")
    assert cli.main(["convert", checkpoint, "--model", "resnet81"]) == cli.EXIT_NOT_FOUND
    assert "Did you mean" in capsys.readouterr().err
    assert cli.main(["convert", str(tmp_path / "none.pth"), "--model", "resnet18"]) == cli.EXIT_NOT_FOUND
