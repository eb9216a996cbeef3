"""Converted checkpoints compute what their source computes: torchvision/timm models vs kzoo, logits compared.

For every model with a torch source, a randomly initialised torchvision (or
timm) model is saved with `torch.save` (its state dict, zip format; resnet18
also in torch's legacy format, seresnet50 also as safetensors), loaded into
kzoo through `weights=PATH`, and both run on the same random images (224x224,
BatchNorm with random statistics, so the maps are checked too). Prints one
JSON line per model: the largest logit difference relative to the largest
logit magnitude (target <= 1e-4).

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
}


def torch_model(name: str, source: str):
    import torch

    if source == "timm":
        import timm

        return timm.create_model(name, pretrained=False)
    # torchvision's compiled ops may not match a CPU build of torch; the model definitions need none of them.
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision.models as tv

    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    model = getattr(tv, name)(weights=None, **kwargs)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SOURCES), help="comma-separated kzoo model names")
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    import torch

    torch.manual_seed(0)
    images = np.random.default_rng(0).normal(size=(args.batch, 224, 224, 3)).astype("float32")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            for row in compare(name, SOURCES[name], folder, images):
                print(json.dumps(row), flush=True)
            for leftover in os.listdir(folder):
                os.remove(os.path.join(folder, leftover))


if __name__ == "__main__":
    main()
