"""The registry: listing, lookup, duplicate refusal, model_info figures."""

import pytest
from conftest import registry_params

import kzoo
from kzoo.models import _registry
from kzoo.models.lenet import LENET


def test_list_models_filters_with_shell_wildcards_in_natural_order():
    assert kzoo.list_models("vgg1?") == ["vgg11", "vgg13", "vgg16", "vgg19"]
    assert kzoo.list_models("resnet*_v2") == ["resnet50_v2", "resnet101_v2", "resnet152_v2"]
    assert kzoo.list_models("*_bn") == ["vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]
    assert kzoo.list_models("nothing*") == []


def test_every_registered_model_is_exported_from_kzoo():
    for name in kzoo.list_models():
        assert getattr(kzoo, name) is _registry.model_entry(name).fn
        assert name in kzoo.__all__


def test_get_model_passes_arguments_to_the_builder():
    model = kzoo.get_model("resnet20", num_classes=100)
    assert model.output.shape == (None, 100)


def test_unknown_model_suggests_the_closest_names():
    with pytest.raises(ValueError, match=r"Unknown model 'resnet5'\. Did you mean .*'resnet50'"):
        kzoo.get_model("resnet5")
    with pytest.raises(ValueError, match=r"Unknown model 'vgg16bn'\. Did you mean 'vgg16_bn'"):
        kzoo.model_info("vgg16bn")


def test_a_second_model_with_the_same_name_is_refused():
    with pytest.raises(ValueError, match="'lenet5' is already registered"):

        @_registry.register_model(LENET)
        def lenet5(**kwargs):
            return None


def test_model_info_describes_the_model_from_a_built_copy():
    info = kzoo.model_info("resnet50")
    assert info["family"] == "resnet" and "He et al. 2015" in info["paper"]
    assert info["params"] == 25_636_712
    assert info["trainable_params"] < info["params"]  # BN moving statistics.
    assert info["default_input"] == (224, 224, 3) and info["min_size"] == 32
    assert info["weights"] == ("imagenet",) and info["num_classes"] == 1000
    assert info["flops"] == 2 * info["macs"]
    assert kzoo.model_info("lenet5")["weights"] == ()


# Published multiply-adds at 224x224: torchvision's "GFLOPS" (which counts
# multiply-adds) for its layouts, and He et al. 2015 (3.8e9) for Keras'
# ResNet-50, which strides in the 1x1 conv and so does less work than torchvision's.
PUBLISHED_GMACS = {
    "alexnet": 0.71, "vgg11": 7.61, "vgg16": 15.47, "vgg19": 19.63,
    "resnet18": 1.81, "resnet34": 3.66, "resnet50": 3.8,
}


@pytest.mark.parametrize("name, gmacs", [pytest.param(*item, marks=() if item[0] in ("resnet18", "alexnet") else pytest.mark.slow)
                                         for item in PUBLISHED_GMACS.items()])
def test_macs_match_the_published_figures(name, gmacs):
    assert kzoo.model_info(name)["macs"] / 1e9 == pytest.approx(gmacs, rel=0.025)


def test_lenet5_macs_counted_by_hand():
    # conv1 28*28*6*25, conv2 10*10*16*150, dense 400*120 + 120*84 + 84*10
    expected = 28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 400 * 120 + 120 * 84 + 84 * 10
    assert kzoo.model_info("lenet5")["macs"] == expected


@pytest.mark.parametrize("name", registry_params())
def test_every_builder_refuses_an_unknown_argument_in_its_own_name(name):
    with pytest.raises(TypeError, match=rf"^{name}\(\) has no argument 'num_clases'. Did you mean 'num_classes'\?"):
        kzoo.get_model(name, num_clases=3)


def test_an_argument_of_other_families_says_which_models_take_it():
    with pytest.raises(TypeError) as error:
        kzoo.resnet50(sequential=True)
    message = str(error.value)
    assert message.startswith("resnet50() has no argument 'sequential'.")
    assert "alexnet, lenet5, the vgg models (vgg11 ... vgg19_bn)" in message and "build_" not in message


def test_builders_take_keyword_arguments_only():
    with pytest.raises(TypeError, match=r"vgg16\(\) takes keyword arguments only"):
        kzoo.vgg16(10)
