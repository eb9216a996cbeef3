"""Measuring a detector (image and pixel AUROC, F1 at its threshold), its picture, loading it, and its checked export."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from kzoo.data import checks



def evaluate(detector, images, labels, *, masks=None) -> dict:
    """Image AUROC, F1 at the threshold, and with `masks` pixel AUROC, on labelled test images.

    Args:
        detector: A fitted detector (`set_threshold` called for F1).
        images: Test images, as `predict` takes them.
        labels: 1 = anomalous, 0 = normal, one per image.
        masks: Optional `(n, H, W)` ground-truth defect masks (non-zero = defect).

    Returns:
        `{"image_auroc", "f1", "pixel_auroc", "pro_auc", "samples", "anomalous"}`
        (missing figures are None; `pro_auc` is the per-region overlap up to
        FPR 0.3, see `pro_auc`).

    Raises:
        ValueError: When labels do not hold both classes (AUROC is undefined).
    """
    from sklearn.metrics import f1_score, roc_auc_score

    out = detector.predict(images)
    labels = checks.class_ids(labels, "labels", num_classes=2, count=len(out["scores"]))
    if labels.min() == labels.max():
        raise ValueError("evaluate needs normal (0) and anomalous (1) test images: AUROC is undefined otherwise.")
    report = {"samples": int(len(labels)), "anomalous": int(labels.sum()),
              "image_auroc": float(roc_auc_score(labels, out["scores"])),
              "f1": float(f1_score(labels, out["labels"])) if out["labels"] is not None else None,
              "pixel_auroc": None, "pro_auc": None}
    if masks is not None and out["maps"] is not None:
        masks = np.asarray(masks)
        if masks.shape != out["maps"].shape:
            raise ValueError(f"masks have shape {masks.shape}, the maps {out['maps'].shape}: give one mask per image "
                             "at the detector's image_size.")
        truth = (masks > 0).ravel()
        if truth.any() and not truth.all():
            report["pixel_auroc"] = float(roc_auc_score(truth, out["maps"].ravel()))
            report["pro_auc"] = pro_auc(out["maps"], masks)
    return report


def pro_auc(maps, masks, *, max_fpr: float = 0.3, steps: int = 200) -> float:
    """Per-region overlap (Bergmann et al. 2020): area under PRO(FPR) up to `max_fpr`, divided by it.

    PRO at a threshold is the mean, over every connected defect region, of
    the fraction of its pixels above the threshold, so small defects count as
    much as large ones; FPR is over the normal pixels. The thresholds are
    quantiles of the normal pixels' scores covering FPR 0 to `max_fpr`, and
    each curve point comes from sorted scores (`searchsorted`), so it costs a
    sort, not a pass over the pixels per threshold.
    """
    from scipy import ndimage

    maps, masks = np.asarray(maps, "float64"), np.asarray(masks) > 0
    normal = np.sort(maps[~masks])
    thresholds = np.quantile(normal, np.linspace(1 - max_fpr, 1, steps))
    fpr = 1 - np.searchsorted(normal, thresholds, side="left") / len(normal)
    overlaps = []
    for score_map, mask in zip(maps, masks):
        regions, count = ndimage.label(mask)
        for region in range(1, count + 1):
            scores = np.sort(score_map[regions == region])
            overlaps.append(1 - np.searchsorted(scores, thresholds, side="left") / len(scores))
    pro = np.mean(overlaps, axis=0)
    order = np.argsort(fpr)
    fpr, pro = np.clip(fpr[order], 0, max_fpr), pro[order]
    return float(np.trapezoid(pro, fpr) / max_fpr)


def load(path: str):
    """A detector saved by `save`, ready to predict (and to set a new threshold)."""
    import keras

    from kzoo.anomaly import detectors
    from kzoo.anomaly import layers  # noqa: F401  (registers the layers)

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read(detectors.META))
    except (KeyError, zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"{path!r} is not a detector saved by kzoo.anomaly ({error}).") from None
    cls = {c.method: c for c in (detectors.PatchCore, detectors.PaDiM, detectors.KNN)}[config["method"]]
    detector = cls.__new__(cls)
    detector.config = {k: v for k, v in config.items() if k != "threshold"}
    detector.model = keras.saving.load_model(path)
    detector.input_shape = tuple(detector.model.input.shape[1:])
    detector.threshold = config["threshold"]
    detector.embedder = None  # Fitting again needs a new detector.
    detector._raw_model = detectors.raw_model(detector.model)
    return detector


def export_tflite(detector, path: str, *, mode: str = "float32", check_images=None, overwrite: bool = False,
                  tolerance: float = 1e-3) -> dict:
    """Writes the detector as a `.tflite` (image -> score, map) and checks its scores against the Keras model.

    The file is kept only when every score and map value of `check_images`
    agrees within `tolerance` (normalised scores are in [0, 1], the cut at
    0.5); otherwise it is removed and this raises `kzoo.export.ExportError`.
    float32 keeps them within about 1e-5. float16 stores the bank in half
    precision and moved normalised scores by 0.007 in our tests, so it passes
    only with a looser `tolerance` you accept. dynamic and int8 would quantize
    the distances themselves and are refused.
    """
    from kzoo import export

    if mode not in ("float32", "float16"):
        raise ValueError(f"mode={mode!r}: a detector exports as 'float32' or 'float16'; quantized distances "
                         "move scores across the threshold.")
    detector._check_fitted()
    report = export.to_tflite(detector.model, path, mode=mode, overwrite=overwrite)
    if check_images is not None:
        expected = detector.predict(check_images)
        got = run_tflite(path, check_images)
        differences = {"score": float(np.abs(got["score"] - expected["scores"]).max())}
        if expected["maps"] is not None:
            differences["map"] = float(np.abs(got["map"] - expected["maps"]).max())
        report["max_abs_diff"] = differences
        if max(differences.values()) > tolerance:
            os.remove(path)
            raise export.ExportError(f"The {mode} detector's outputs differ from the Keras model's by "
                                     f"{differences} (> {tolerance}); not kept.")
    return report


def run_tflite(path: str, images) -> dict:
    """Runs an exported detector in LiteRT: `{"score": (n,), "map": (n, H, W)}`."""
    from kzoo.export import TFLiteModel

    model = TFLiteModel(path)
    outputs = {"score": [], "map": []}
    for batch, _ in checks.batches(images, "images"):
        for image in batch:
            for name, value in model.run_all(image).items():
                key = "map" if value.ndim == 2 else "score"
                outputs[key].append(value.reshape(()) if key == "score" else value)
    return {key: np.stack(value) for key, value in outputs.items() if value}


def plot(detector, images, path: str, *, masks=None, columns: int = 4) -> str:
    """A PNG grid: each image, its heat map over it, its mask (if given) and the verdict."""
    from kzoo._io import pyplot, save_figure

    plt = pyplot("anomaly.plot")
    out = detector.predict(images)
    images = np.concatenate([batch for batch, _ in checks.batches(images, "images")])
    rows = 3 if masks is not None else 2
    count = len(images)
    figure, axes = plt.subplots(rows, count, figsize=(1.8 * count, 1.9 * rows), squeeze=False)
    for index in range(count):
        image = np.clip(images[index], 0, 1).squeeze()
        axes[0][index].imshow(image, cmap="gray" if image.ndim == 2 else None)
        verdict = "" if out["labels"] is None else (" anomalous" if out["labels"][index] else " normal")
        axes[0][index].set_title(f"{out['scores'][index]:.2f}{verdict}", fontsize=8)
        axes[1][index].imshow(image, cmap="gray" if image.ndim == 2 else None)
        if out["maps"] is not None:
            axes[1][index].imshow(out["maps"][index], cmap="jet", alpha=0.5, vmin=0, vmax=1)
        if masks is not None:
            axes[2][index].imshow(np.asarray(masks)[index], cmap="gray")
    for axis in np.ravel(axes):
        axis.axis("off")
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
    return path
