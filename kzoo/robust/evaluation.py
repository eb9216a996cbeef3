"""How robust a model is: accuracy under attack per eps (checking its own work), the exported file's, and pictures."""

from __future__ import annotations

import logging

import numpy as np

from kzoo.data import checks
from kzoo.robust.attacks import FGSM, PGD

log = logging.getLogger(__name__)
EPSILONS = (0.0, 0.05, 0.1, 0.2, 0.3)


def robust_accuracy(model, data, *, attack="pgd", epsilons=EPSILONS, steps: int = 40, norm: str = "linf",
                    seed: int | None = 0, max_samples: int | None = None) -> dict:
    """Accuracy on examples crafted against the true labels, at each eps (eps 0 is the clean accuracy).

    The one-step attack (FGSM) runs beside an iterative one as a check: an
    iterative attack that scores above FGSM at the same eps, or accuracy that
    rises with eps, means the gradients mislead the attack (gradient masking),
    and the figures flatter the model. Each violation is listed in
    `warnings` and logged.

    Args:
        model: A classifier taking images in [0, 1].
        data: `(images, labels)` arrays or batches (as `kzoo.data` gives them).
        attack: "pgd" (with `steps`, step 2.5 * eps / steps, one random
            start), "fgsm", or a `PGD` instance (its eps is replaced by each of `epsilons`).
        epsilons: The sizes to try, in [0, 1] units; 0 is added if missing.
        norm: "linf" or "l2" (for "pgd" and "fgsm").
        max_samples: Use only the first this many images.

    Returns:
        `{"attack", "norm", "epsilons", "accuracy", "fgsm_accuracy", "samples", "warnings"}`.
    """
    images, labels = _arrays(data, max_samples)
    epsilons = sorted({0.0, *map(float, epsilons)})
    if isinstance(attack, PGD):
        template = attack
    elif attack == "pgd":
        template = PGD(steps=steps, norm=norm, seed=seed)
    elif attack == "fgsm":
        template = FGSM(norm=norm)
    else:
        raise ValueError(f"attack={attack!r} is not 'pgd', 'fgsm' or a kzoo.robust.PGD.")
    accuracy, fgsm_accuracy = [], []
    for eps in epsilons:
        crafted = _with_eps(template, eps)(model, images, labels)
        accuracy.append(_accuracy(model, crafted, labels))
        if template.name == "fgsm":
            fgsm_accuracy.append(accuracy[-1])
        else:
            fgsm_accuracy.append(_accuracy(model, FGSM(eps, norm=template.norm)(model, images, labels), labels))
    warnings = []
    for eps, iterative, one_step in zip(epsilons, accuracy, fgsm_accuracy):
        if iterative > one_step + 1e-9:
            warnings.append(f"at eps {eps}, {template.name} ({iterative:.4f}) scores above FGSM ({one_step:.4f}): "
                            "likely gradient masking")
    for (eps_a, a), (eps_b, b) in zip(zip(epsilons, accuracy), zip(epsilons[1:], accuracy[1:])):
        if b > a + 1e-9:
            warnings.append(f"accuracy rises from {a:.4f} at eps {eps_a} to {b:.4f} at eps {eps_b}: likely "
                            "gradient masking")
    for warning in warnings:
        log.warning("robust_accuracy: %s", warning)
    return {"attack": template.name, "norm": template.norm, "epsilons": epsilons, "accuracy": accuracy,
            "fgsm_accuracy": fgsm_accuracy, "samples": int(len(labels)), "warnings": warnings}


def tflite_accuracy(tflite_path: str, adversarial_images, labels) -> float:
    """Accuracy of an exported `.tflite` (float, float16, int8 ...) on examples crafted against its float model.

    Quantized models have no useful gradients, so attacking the float model
    and feeding its examples to the file (a transfer attack) is the honest
    measure of how the deployed file fares.
    """
    from kzoo.export import TFLiteModel

    model = TFLiteModel(tflite_path)
    images = checks.unit_images(np.asarray(adversarial_images), "adversarial_images")
    labels = checks.class_ids(labels, "labels", count=len(images))
    checks.fits_model(images.shape[1:], model.input_shape, "adversarial_images")
    predictions = model(images).argmax(-1)
    return float(np.mean(predictions == labels))


def plot_robustness(tables: dict, path: str) -> str:
    """Accuracy against eps, one line per named `robust_accuracy` table (e.g. standard vs adversarial)."""
    from kzoo._io import pyplot, save_figure

    plt = pyplot("robust.plot_robustness")
    figure, axis = plt.subplots(figsize=(5, 3.6))
    for name, table in tables.items():
        axis.plot(table["epsilons"], table["accuracy"], marker="o", label=f"{name} ({table['attack']})")
        if table["attack"] != "fgsm":
            axis.plot(table["epsilons"], table["fgsm_accuracy"], linestyle=":", marker=".", label=f"{name} (fgsm)")
    axis.set_xlabel(f"eps ({next(iter(tables.values()))['norm']}, [0, 1] pixel units)")
    axis.set_ylabel("accuracy")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
    return path


def plot_examples(model, images, labels=None, *, eps: float = 0.2, path: str, attack=None,
                  class_names=None) -> str:
    """The panda/gibbon figure for your model: original, perturbation (scaled to be seen), adversarial image.

    Each image is titled with the predicted class and its confidence. The
    attack is PGD-40 at `eps` unless `attack` (a `PGD`) is given.
    """
    from kzoo._io import pyplot, save_figure

    plt = pyplot("robust.plot_examples")
    images = checks.unit_images(np.asarray(images), "images")
    attack = attack or PGD(eps=eps, steps=40)
    crafted = attack(model, images, labels)
    before, after = _probabilities(model, images), _probabilities(model, crafted)
    figure, axes = plt.subplots(len(images), 3, figsize=(5.4, 1.9 * len(images)), squeeze=False)

    def title(probabilities):
        index = int(probabilities.argmax())
        name = class_names[index] if class_names is not None else str(index)
        return f"{name} ({probabilities[index]:.0%})"

    for row, (image, adversarial) in enumerate(zip(images, crafted)):
        delta = adversarial - image
        scale = max(float(np.abs(delta).max()), 1e-12)
        shown = [(image, title(before[row])), (0.5 + 0.5 * delta / scale, f"perturbation (x{0.5 / scale:.1f})"),
                 (adversarial, title(after[row]))]
        for axis, (picture, text) in zip(axes[row], shown):
            picture = np.clip(picture, 0, 1).squeeze()
            axis.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1)
            axis.set_title(text, fontsize=8)
            axis.axis("off")
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
    return path


def _arrays(data, max_samples):
    images, labels = [], []
    for batch_images, batch_labels in checks.batches(data, "data"):
        if batch_labels is None:
            raise ValueError("robust_accuracy needs labelled data: (images, labels).")
        images.append(batch_images)
        labels.append(batch_labels)
        if max_samples is not None and sum(map(len, images)) >= max_samples:
            break
    images, labels = np.concatenate(images), np.concatenate(labels)
    return (images[:max_samples], labels[:max_samples]) if max_samples else (images, labels)


def _with_eps(attack: PGD, eps: float) -> PGD:
    from dataclasses import replace

    step = None if attack.step is None else (eps if attack.steps == 1 and not attack.random_start else attack.step)
    return replace(attack, eps=eps, step=step)


def _accuracy(model, images, labels) -> float:
    predictions = np.asarray(model.predict(images, batch_size=256, verbose=0)).argmax(-1)
    return float(np.mean(predictions == labels))


def _probabilities(model, images):
    from kzoo._training_core import outputs_probabilities

    outputs = np.asarray(model.predict(images, batch_size=256, verbose=0))
    if outputs_probabilities(model):
        return outputs
    exp = np.exp(outputs - outputs.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)
