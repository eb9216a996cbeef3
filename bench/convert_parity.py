"""Converted checkpoints compute what their source computes: torchvision/timm models vs kzoo, logits compared.

For every model with a torch source, a randomly initialised torchvision (or
timm) model is saved with `torch.save` (its state dict, zip format; resnet18
also in torch's legacy format, seresnet50 also as safetensors), loaded into
kzoo through `weights=PATH`, and both run on the same random images (224x224,
BatchNorm with random statistics, so the maps are checked too). torchvision's
FCN and DeepLabV3 (ResNet-50/101 at output stride 8) load the same way into
`kzoo.segment.build` and are compared per pixel at 128x128. Prints one JSON
line per model: the largest logit difference relative to the largest logit
magnitude (target <= 1e-4).

Needs torch, torchvision and timm (not kzoo dependencies):
    pip install torch==2.13.0+cpu torchvision timm
    python bench/convert_parity.py [--models resnet18,googlenet]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import types

import numpy as np

SOURCES = {
    "alexnet": "torchvision", "vgg11": "torchvision", "vgg13": "torchvision", "vgg16": "torchvision",
    "vgg19": "torchvision", "vgg11_bn": "torchvision", "vgg13_bn": "torchvision", "vgg16_bn": "torchvision",
    "vgg19_bn": "torchvision", "resnet18": "torchvision", "resnet34": "torchvision", "googlenet": "torchvision",
    "wide_resnet50_2": "torchvision", "wide_resnet101_2": "torchvision", "seresnet50": "timm",
    "resnet50_tv": "torchvision", "resnet101_tv": "torchvision",
}
# torchvision's segmentation models (ResNet v1.5 dilated to output stride 8, with the auxiliary head that their
# published checkpoints carry) -> kzoo.segment's backbone and head.
SEGMENTATION = {
    "fcn_resnet50": ("resnet50_tv", "fcn"), "fcn_resnet101": ("resnet101_tv", "fcn"),
    "deeplabv3_resnet50": ("resnet50_tv", "deeplabv3"), "deeplabv3_resnet101": ("resnet101_tv", "deeplabv3"),
}
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406], "float32"), np.array([0.229, 0.224, 0.225], "float32")


def torch_model(name: str, source: str):
    import torch

    if source == "timm":
        import timm

        return timm.create_model(name, pretrained=False)
    # torchvision's compiled ops may not match a CPU build of torch; the model definitions need none of them.
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision.models as tv
    import torchvision.models.segmentation as tv_segmentation

    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    if name in SEGMENTATION:
        kwargs = {"num_classes": 21, "aux_loss": True, "weights_backbone": None}
    module = tv_segmentation if name in SEGMENTATION else tv
    model = getattr(module, name.removesuffix("_tv"))(weights=None, **kwargs)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # Random BN statistics, so that a mixed-up mean or variance shows.
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model


def compare(name: str, source: str, folder: str, images: np.ndarray) -> list[dict]:
    import torch

    import kzoo

    reference = torch_model(name, source).eval()
    if name == "googlenet":
        reference.transform_input = False  # kzoo applies preprocessing outside the model.
    with torch.no_grad():
        expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    files = {"zip": os.path.join(folder, f"{name}.pth")}
    torch.save(reference.state_dict(), files["zip"])
    if name == "resnet18":
        files["legacy"] = os.path.join(folder, f"{name}-legacy.pth")
        torch.save(reference.state_dict(), files["legacy"], _use_new_zipfile_serialization=False)
    if source == "timm":
        from safetensors.torch import save_file

        files["safetensors"] = os.path.join(folder, f"{name}.safetensors")
        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, files["safetensors"])
    rows = []
    for form, path in files.items():
        start = time.perf_counter()
        model = kzoo.models.model_entry(name).fn(weights=path, classifier_activation=None)
        load_s = time.perf_counter() - start
        got = np.asarray(model.predict(images, verbose=0, batch_size=len(images)))
        scale = float(np.abs(expected).max())
        rows.append(dict(
            bench="convert_parity", model=name, source=source, format=form,
            max_abs_diff=float(np.abs(got - expected).max()), logit_scale=scale,
            relative=float(np.abs(got - expected).max() / scale),
            top1_agreement=float(np.mean(got.argmax(1) == expected.argmax(1))),
            load_and_convert_s=round(load_s, 2), cpu=platform.processor() or platform.machine(),
        ))
    return rows


def compare_segmentation(name: str, folder: str, images: np.ndarray) -> list[dict]:
    """A torchvision FCN/DeepLabV3 against `kzoo.segment.build(..., weights=PATH)`: per-pixel logits at the
    input size, from images in [0, 1] (kzoo normalises inside the model, torchvision's transforms outside)."""
    import torch

    from kzoo import segment

    reference = torch_model(name, "torchvision").eval()
    normalised = (images - IMAGENET_MEAN) / IMAGENET_STD
    with torch.no_grad():
        expected = reference(torch.from_numpy(normalised.transpose(0, 3, 1, 2).copy()))["out"].numpy()
    expected = expected.transpose(0, 2, 3, 1)
    path = os.path.join(folder, f"{name}.pth")
    torch.save(reference.state_dict(), path)
    backbone, head = SEGMENTATION[name]
    start = time.perf_counter()
    model = segment.build(backbone, 21, head=head, weights=path, input_shape=images.shape[1:])
    load_s = time.perf_counter() - start
    got = np.asarray(model.predict(images, verbose=0, batch_size=len(images)))
    scale = float(np.abs(expected).max())
    return [dict(bench="convert_parity", model=name, source="torchvision", format="zip", kzoo=f"{backbone}+{head}",
                 max_abs_diff=float(np.abs(got - expected).max()), logit_scale=scale,
                 relative=float(np.abs(got - expected).max() / scale),
                 pixel_agreement=float(np.mean(got.argmax(-1) == expected.argmax(-1))),
                 load_and_convert_s=round(load_s, 2), cpu=platform.processor() or platform.machine())]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join([*SOURCES, *SEGMENTATION]),
                        help="comma-separated kzoo model names and torchvision segmentation models")
    parser.add_argument("--segmentation-size", type=int, default=128, help="input size of the segmentation models")
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    import torch

    torch.manual_seed(0)
    images = np.random.default_rng(0).normal(size=(args.batch, 224, 224, 3)).astype("float32")
    unit_images = np.random.default_rng(1).uniform(size=(2, args.segmentation_size, args.segmentation_size, 3))
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            rows = (compare_segmentation(name, folder, unit_images.astype("float32")) if name in SEGMENTATION
                    else compare(name, SOURCES[name], folder, images))
            for row in rows:
                print(json.dumps(row), flush=True)
            for leftover in os.listdir(folder):
                os.remove(os.path.join(folder, leftover))


if __name__ == "__main__":
    main()
