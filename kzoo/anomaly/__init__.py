"""Anomaly detection from pretrained features: PatchCore, PaDiM and kNN on kzoo backbones.

Fit on normal images only; score new ones and point at the defect:

    det = anomaly.PatchCore(backbone="wide_resnet50_2", weights="imagenet", stages=(2, 3), coreset_ratio=0.1)
    det.fit(normal_images)
    det.set_threshold(validation_images, validation_labels)     # 1 = anomalous
    out = det.predict(images)            # {"scores": (n,), "maps": (n, H, W), "labels": (n,)}
    report = anomaly.evaluate(det, test_images, test_labels, masks=test_masks)
    det.save("bottle.keras"); det = anomaly.load("bottle.keras")

- `detectors`: the three methods, each one Keras model image -> {score, map}.
- `layers`: their memory-bank and Mahalanobis layers; `coreset`: PatchCore's bank selection.
- `evaluation`: AUROC and F1, the heat-map picture, loading, the checked `.tflite` export.
- `mvtec`: MVTec AD's folder layout.
"""

from kzoo.anomaly.detectors import KNN, METHODS, Detector, PaDiM, PatchCore
from kzoo.anomaly.evaluation import evaluate, export_tflite, load, plot, run_tflite
from kzoo.anomaly.mvtec import load_mvtec

__all__ = ["KNN", "METHODS", "Detector", "PaDiM", "PatchCore", "evaluate", "export_tflite", "load", "load_mvtec",
           "plot", "run_tflite"]
