"""The model zoo: one module per family; importing them fills the registry."""

from kzoo.models._registry import get_model, list_models, model_info, register_model
from kzoo.models.alexnet import alexnet
from kzoo.models.lenet import lenet5
from kzoo.models.resnet import (
    resnet18, resnet20, resnet32, resnet34, resnet44, resnet50, resnet50_v2, resnet56,
    resnet101, resnet101_v2, resnet110, resnet152, resnet152_v2,
)
from kzoo.models.vgg import vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn

__all__ = [
    "get_model", "list_models", "model_info", "register_model",
    "lenet5", "alexnet",
    "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnet50_v2", "resnet101_v2", "resnet152_v2",
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
]
