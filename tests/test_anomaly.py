"""kzoo.anomaly: PatchCore, PaDiM and kNN fit on normal images, find a planted defect, keep their threshold, export."""

import logging
import os

import keras
import numpy as np
import pytest
from conftest import assert_close

from kzoo import anomaly
from kzoo.anomaly import coreset

SIZE = 64


def textures(count, seed=0, size=SIZE):
    """Normal images: smooth stripes with noise, all alike up to phase and a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(count):
        phase = rng.uniform(0, 2 * np.pi)
        base = 0.5 + 0.25 * np.sin(2 * np.pi * 4 * x + phase)
        image = base[..., None] + rng.normal(0, 0.02, (size, size, 3))
        images.append(np.clip(image, 0, 1))
    return np.asarray(images, "float32")


def with_defect(images, seed=0):
    """A bright square planted at a random place; returns the images and their masks."""
    rng = np.random.default_rng(seed)
    images, masks = images.copy(), np.zeros(images.shape[:3], "uint8")
    for image, mask in zip(images, masks):
        top, left = rng.integers(4, SIZE - 20, 2)
        image[top:top + 14, left:left + 14] = [1.0, 0.1, 0.1]
        mask[top:top + 14, left:left + 14] = 1
    return images, masks


DETECTORS = {
    "patchcore": lambda: anomaly.PatchCore("resnet18", weights=None, stages=(1, 2), image_size=SIZE, coreset_ratio=0.5),
    "padim": lambda: anomaly.PaDiM("resnet18", weights=None, stages=(0, 1, 2), image_size=SIZE, channels=40),
    "knn": lambda: anomaly.KNN("resnet18", weights=None, image_size=SIZE),
}


@pytest.fixture(scope="module")
def fitted():
    keras.utils.set_random_seed(0)  # The backbones' random weights: module fixtures are made before the autouse seed.
    normal = textures(12)
    return {method: build().fit(normal) for method, build in DETECTORS.items()}


@pytest.mark.parametrize("method", DETECTORS)
def test_fit_predict_shapes_and_the_planted_defect_ranks_first(fitted, method):
    detector = fitted[method]
    normal = textures(5, seed=1)
    defective, masks = with_defect(textures(1, seed=2), seed=3)
    images = np.concatenate([normal, defective])
    out = detector.predict(images)
    assert out["scores"].shape == (6,) and out["labels"] is None  # No threshold yet.
    assert np.argmax(out["scores"]) == 5
    if method == "knn":
        assert out["maps"] is None
    else:
        assert out["maps"].shape == (6, SIZE, SIZE)
        peak = np.unravel_index(np.argmax(out["maps"][5]), (SIZE, SIZE))
        assert masks[0][peak] == 1 or np.mean(np.abs(np.array(peak) - np.argwhere(masks[0]).mean(0))) < 10


def test_threshold_is_f1_optimal_with_anomalies_and_a_quantile_without(fitted, caplog):
    detector = fitted["patchcore"]
    normal = textures(6, seed=4)
    defective, _ = with_defect(textures(4, seed=5), seed=6)
    images = np.concatenate([normal, defective])
    labels = np.array([0] * 6 + [1] * 4)
    threshold = detector.set_threshold(images, labels)
    raw = detector._raw(images)["score"]
    assert raw[labels == 0].max() < threshold <= raw[labels == 1].min()  # Separable here: the F1-optimal cut.
    out = detector.predict(images)
    assert (out["labels"] == labels).all()
    assert ((out["scores"] >= 0.5) == labels).all() and out["scores"].min() >= 0 and out["scores"].max() <= 1
    with caplog.at_level(logging.WARNING):
        quantile = detector.set_threshold(normal)
    assert "saw no anomalous image" in caplog.text
    assert quantile == pytest.approx(np.quantile(raw[:6], 0.99), rel=1e-5)
    detector.set_threshold(images, labels)


@pytest.mark.parametrize("method", DETECTORS)
def test_save_and_load_give_the_same_outputs(fitted, method, tmp_path):
    detector = fitted[method]
    normal = textures(4, seed=7)
    defective, _ = with_defect(textures(2, seed=8), seed=9)
    detector.set_threshold(np.concatenate([normal, defective]), [0, 0, 0, 0, 1, 1])
    path = detector.save(str(tmp_path / f"{method}.keras"))
    loaded = anomaly.load(path)
    images = textures(3, seed=10)
    expected, got = detector.predict(images), loaded.predict(images)
    assert_close(got["scores"], expected["scores"])
    assert loaded.threshold == detector.threshold and loaded.config == detector.config
    if expected["maps"] is not None:
        assert_close(got["maps"], expected["maps"])


def test_exported_scores_equal_the_keras_ones(fitted, tmp_path):
    detector = fitted["patchcore"]
    images = np.concatenate([textures(2, seed=11), with_defect(textures(1, seed=12))[0]])
    report = anomaly.export_tflite(detector, str(tmp_path / "patchcore.tflite"), check_images=images)
    assert report["max_abs_diff"]["score"] <= 1e-3 and report["max_abs_diff"]["map"] <= 1e-3
    got = anomaly.run_tflite(str(tmp_path / "patchcore.tflite"), images)
    assert_close(got["score"], detector.predict(images)["scores"], rtol=1e-3)
    with pytest.raises(ValueError, match="'float32' or 'float16'"):
        anomaly.export_tflite(detector, str(tmp_path / "int8.tflite"), mode="int8")
    from kzoo.export import ExportError

    with pytest.raises(ExportError, match="float16 detector's outputs differ"):  # Half-precision bank: refused.
        anomaly.export_tflite(detector, str(tmp_path / "half.tflite"), mode="float16", check_images=images,
                              tolerance=1e-5)
    assert not os.path.exists(tmp_path / "half.tflite")


def test_evaluate_reports_image_and_pixel_auroc(fitted):
    detector = fitted["padim"]
    normal = textures(4, seed=13)
    defective, masks = with_defect(textures(4, seed=14), seed=15)
    images = np.concatenate([normal, defective])
    labels = np.array([0] * 4 + [1] * 4)
    detector.set_threshold(images, labels)
    report = anomaly.evaluate(detector, images, labels, masks=np.concatenate([np.zeros_like(masks), masks]))
    assert report["image_auroc"] == 1.0 and report["pixel_auroc"] > 0.8 and report["f1"] == 1.0
    assert 0.3 < report["pro_auc"] <= 1.0
    with pytest.raises(ValueError, match="normal \\(0\\) and anomalous \\(1\\)"):
        anomaly.evaluate(detector, normal, [0, 0, 0, 0])


@pytest.mark.parametrize("build, fit_with, message", [
    (lambda: DETECTORS["patchcore"](), np.zeros((0, SIZE, SIZE, 3), "float32"), "fit images is empty"),
    (lambda: DETECTORS["patchcore"](), textures(2, size=32), "are 32x32, but this detector works at 64x64"),
    (lambda: DETECTORS["knn"](), [textures(1)[0], textures(1, size=48)[0]], "have different sizes .*48x48x3, 64x64x3"),
    (lambda: anomaly.PatchCore("resnet20", weights=None, stages=(2, 3), image_size=32), None,
     r"stages=\(2, 3\) are not stages of resnet20: it has 3"),
    (lambda: anomaly.PatchCore("resnet18", weights=None, image_size=SIZE, coreset_ratio=0), None, "coreset_ratio=0"),
    (lambda: anomaly.PaDiM("resnet18", weights=None, image_size=SIZE), textures(1), "at least 2 normal images"),
])
def test_bad_input_gets_a_clear_error(build, fit_with, message):
    with pytest.raises(ValueError, match=message):
        detector = build()
        detector.fit(fit_with)


def test_predict_refuses_images_of_another_size_and_an_unfitted_detector(fitted):
    with pytest.raises(ValueError, match="are 48x48, but this detector works at 64x64"):
        fitted["knn"].predict(textures(1, size=48))
    with pytest.raises(ValueError, match="not fitted"):
        DETECTORS["knn"]().predict(textures(1))


def test_greedy_k_center_covers_the_points_and_repeats_with_its_seed():
    rng = np.random.default_rng(0)
    clusters = np.concatenate([rng.normal(centre, 0.01, (50, 8)) for centre in (0, 5, 10, -5)])
    picked = coreset.greedy_k_center(clusters, 4, seed=3)
    assert sorted(set(i // 50 for i in picked)) == [0, 1, 2, 3]  # One from each cluster.
    assert (picked == coreset.greedy_k_center(clusters, 4, seed=3)).all()
    assert len(coreset.greedy_k_center(clusters, 500)) == 200


def test_mvtec_layout_loads_in_one_call(tmp_path):
    import tensorflow as tf

    def write(path, array):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tf.io.write_file(str(path), tf.io.encode_png((array * 255).astype("uint8")))

    for index, image in enumerate(textures(3)):
        write(tmp_path / "train" / "good" / f"{index:03d}.png", image)
    write(tmp_path / "test" / "good" / "000.png", textures(1)[0])
    defective, masks = with_defect(textures(1))
    write(tmp_path / "test" / "scratch" / "000.png", defective[0])
    write(tmp_path / "ground_truth" / "scratch" / "000_mask.png", masks[0][..., None].astype("float32"))
    data = anomaly.load_mvtec(str(tmp_path), image_size=32)
    assert data["train"].shape == (3, 32, 32, 3) and data["test"].shape == (2, 32, 32, 3)
    assert list(data["test_labels"]) == [0, 1] and list(data["test_defects"]) == ["good", "scratch"]
    assert data["test_masks"][0].sum() == 0 and 0 < data["test_masks"][1].sum() < 32 * 32
    assert set(np.unique(data["test_masks"])) <= {0, 1}
    with pytest.raises(FileNotFoundError, match="train/good"):
        anomaly.load_mvtec(str(tmp_path / "test"))


def test_pro_rewards_covering_every_region_and_is_low_for_a_random_map():
    from kzoo.anomaly.evaluation import pro_auc

    rng = np.random.default_rng(0)
    masks = np.zeros((4, 32, 32), "uint8")
    masks[0, 2:6, 2:6] = 1  # A small region counts as much as a large one.
    masks[1, 5:25, 5:25] = 1
    perfect = masks + rng.uniform(0, 0.1, masks.shape)
    assert pro_auc(perfect, masks) > 0.99
    assert pro_auc(rng.uniform(0, 1, masks.shape), masks) < 0.3
    only_large = masks * (np.arange(4)[:, None, None] == 1) + rng.uniform(0, 0.1, masks.shape)
    assert 0.5 < pro_auc(only_large, masks) < 0.7  # One region of two found; the other at chance (~0.15).


def test_grey_images_work_with_a_grey_backbone_or_input_channels():
    grey = textures(6)[..., :1]
    lenet = anomaly.KNN("lenet5", weights=None, image_size=28).fit(grey[:, :28, :28])
    assert lenet.predict(grey[:2, :28, :28])["scores"].shape == (2,)
    resnet = anomaly.PatchCore("resnet20", weights=None, image_size=32, stages=(1, 2), input_channels=1)
    assert resnet.fit(grey[:, :32, :32]).predict(grey[:2, :32, :32])["maps"].shape == (2, 32, 32)
