"""kzoo.convert: checkpoint tensors move into a model by a key map, every weight accounted for."""

import numpy as np
import pytest
from conftest import assert_close, images

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
