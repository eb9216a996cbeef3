"""The model zoo: one module per family, each a spec table; importing them fills the registry.

Every registered model is a public builder here (`kzoo.models.resnet50`, also
`kzoo.resnet50`), made by `_builder.register_family` from its spec row.
"""

from kzoo.models import (  # noqa: F401  (register)
    alexnet as _alexnet, googlenet as _googlenet, lenet as _lenet, resnet as _resnet, vgg as _vgg, zfnet as _zfnet,
)
from kzoo.models._registry import FeatureInfo, get_model, list_models, model_entry, model_info, register_model

globals().update({name: model_entry(name).fn for name in list_models()})

__all__ = ["FeatureInfo", "get_model", "list_models", "model_entry", "model_info", "register_model", *list_models()]
