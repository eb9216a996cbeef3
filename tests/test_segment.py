"""kzoo.segment: heads on dilated backbones, mask pipelines, loss and IoU, training, saving, export, conversion."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_close, images, torchvision_resnet_state, write_torch_checkpoint

import kzoo
from kzoo import export, segment, training
from kzoo.segment.canvases import digit_canvases

SHAPE = (64, 64, 3)


def shapes_canvases(count, size=32, seed=0):
    """Images whose colour says the class: a green (1) and a blue (2) square on a dark background (0)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.2, (count, size, size, 3)).astype("float32")
    masks = np.zeros((count, size, size), "int32")
    for image, mask in zip(x, masks):
        for colour in (1, 2):
            top, left = rng.integers(0, size - 12, 2)
            side = rng.integers(6, 12)
            mask[top:top + side, left:left + side] = colour
            image[top:top + side, left:left + side] = 0.1
            image[top:top + side, left:left + side, colour] = 0.9
    return x, masks


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("head", list(segment.HEADS))
def test_every_head_gives_logits_at_the_input_size_at_every_stride(head, output_stride):
    model = segment.build("resnet18", 5, head=head, weights=None, input_shape=SHAPE, output_stride=output_stride)
    assert model(images(SHAPE)).shape == (2, *SHAPE[:2], 5)
    assert model.feature_info[-1].reduction == output_stride
    assert model.name == f"resnet18_{head}" and model.layers[-1].dtype_policy.name == "float32"


def test_output_stride_dilates_the_last_stages_and_keeps_the_weights(tmp_path):
    plain = kzoo.resnet18(include_top=False, input_shape=SHAPE)
    path = str(tmp_path / "resnet18.weights.h5")
    plain.save_weights(path)
    dilated = kzoo.resnet18(include_top=False, input_shape=SHAPE, weights=path, output_stride=8)
    assert [info.reduction for info in dilated.feature_info] == [2, 4, 8, 8, 8]
    assert dilated.output.shape[1:3] == (8, 8) and plain.output.shape[1:3] == (2, 2)
    # timm's rule: the block that would have strided keeps the previous dilation in its first 3x3.
    rates = {name: dilated.get_layer(name).dilation_rate for name in
             ("conv4_block1_1_conv", "conv4_block1_2_conv", "conv5_block1_1_conv", "conv5_block2_2_conv")}
    assert rates == {"conv4_block1_1_conv": (1, 1), "conv4_block1_2_conv": (2, 2), "conv5_block1_1_conv": (2, 2),
                     "conv5_block2_2_conv": (4, 4)}
    x = images(SHAPE)
    stride8 = "conv3_block2_out"  # Before any dilation, both compute the same.
    assert_close(keras.Model(dilated.input, dilated.get_layer(stride8).output)(x),
                 keras.Model(plain.input, plain.get_layer(stride8).output)(x))


def test_a_backbone_that_cannot_give_the_stride_says_so():
    with pytest.raises(ValueError, match=r"output_stride=8 is not possible for vgg16: its strides cannot be "
                                         r"replaced by dilation.*resnet"):
        kzoo.vgg16(include_top=False, output_stride=8)
    with pytest.raises(ValueError, match=r"output_stride=4 is not possible for resnet18: it runs at output_stride "
                                         r"8, 16, 32"):
        kzoo.resnet18(output_stride=4)
    with pytest.raises(ValueError, match=r"head='fcn8s' fuses the deepest map \(stride 4\) with the map at stride 1"):
        segment.build("lenet5", 3, head="fcn8s", weights=None, input_shape=(28, 28, 1))
    with pytest.raises(ValueError, match=r"head='fcn16s': the upsampled map is 10x10 but the stage it meets is 14x14: "
                                         r"this backbone's stages do not halve evenly"):
        segment.build("lenet5", 3, head="fcn16s", weights=None, input_shape=(28, 28, 1))
    with pytest.raises(ValueError, match=r"multiples of the backbone's output stride 32"):
        segment.build("resnet18", 3, head="unet", weights=None, input_shape=(72, 72, 3))
    with pytest.raises(ValueError, match=r"head='fcn64s' is not one of"):
        segment.build("resnet18", 3, head="fcn64s")


def test_atrous_rates_beyond_the_map_are_capped_without_changing_the_output():
    model = segment.build("resnet18", 3, head="deeplabv3", weights=None, input_shape=SHAPE, output_stride=16)
    layer = model.get_layer("aspp_3_conv")  # Rate 18 on a 4x4 map: only the centre tap lands inside.
    assert layer.dilation_rate == (4, 4)
    feature = keras.Model(model.input, layer.input)(images(SHAPE))
    wide = keras.layers.Conv2D(layer.filters, 3, padding="same", dilation_rate=18, use_bias=False)
    wide.build(feature.shape)
    wide.set_weights(layer.get_weights())
    assert_close(layer(feature), wide(feature))


def test_augmentation_moves_image_and_mask_together_and_never_blends_ids():
    masks = np.zeros((8, 48, 48), "int32")
    masks[:, 8:30, 6:20], masks[:, 28:, 26:44] = 3, 7
    pictures = np.repeat(masks[..., None] / 10.0, 3, axis=-1).astype("float32")  # The image says the mask.
    augment = segment.SegmentAugment(zoom=0.3, translate=0.15, rotate=0.05, brightness=0, contrast=0, seed=0)
    dataset = segment.from_arrays(pictures, masks, batch_size=8, augment=augment, seed=0, num_classes=8)
    x, m = (np.asarray(t) for t in next(iter(dataset)))
    assert m.dtype == np.int32 and m.shape == (8, 48, 48) and set(np.unique(m)) <= {0, 3, 7}
    assert not np.array_equal(m, masks)  # It moved something,
    agree = np.mean(np.round(x[..., 0] * 10) == m)
    assert agree > 0.9, agree  # and the image moved with it (bilinear images differ only along the edges).


def test_the_ignore_class_counts_in_neither_the_loss_nor_the_metrics():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    masks = rng.integers(0, 3, (2, 8, 8)).astype("int32")
    ignored = masks.copy()
    ignored[:, :3] = 255
    loss = segment.SegmentationLoss(ignore_class=255)
    changed = logits.copy()
    changed[:, :3] = rng.normal(size=changed[:, :3].shape) * 10  # Anything at ignored pixels.
    assert_close(loss(ignored, logits), loss(ignored, changed))
    plain = keras.losses.sparse_categorical_crossentropy(masks[:, 3:], logits[:, 3:], from_logits=True)
    assert_close(loss(ignored, logits), np.mean(plain))
    accuracy = segment.PixelAccuracy(ignore_class=255)
    accuracy.update_state(ignored, changed)
    assert float(accuracy.result()) == pytest.approx(np.mean(logits[:, 3:].argmax(-1) == masks[:, 3:]))
    confusion = segment.confusion_matrix(ignored, changed.argmax(-1), 3, ignore_class=255)
    assert confusion.sum() == 2 * 5 * 8


def test_class_weights_and_dice_change_the_loss_as_documented():
    logits = np.zeros((1, 2, 2, 2), "float32")
    masks = np.array([[[0, 0], [1, 1]]], "int32")
    half = segment.SegmentationLoss()(masks, logits)
    assert float(half) == pytest.approx(np.log(2), rel=1e-5)
    logits[..., 0] = 5.0  # Class 0 everywhere: its pixels right, class 1's wrong.
    only_class_1 = segment.SegmentationLoss(class_weights=[0.0, 1.0])(masks, logits)
    assert float(only_class_1) == pytest.approx(np.log(1 + np.exp(5.0)), rel=1e-4)
    certain = np.where(np.eye(2)[masks] > 0, 20.0, -20.0).astype("float32")
    assert float(segment.SegmentationLoss(dice_weight=1.0)(masks, certain)) < 1e-3
    with pytest.raises(ValueError, match="class_weights has 3 weights; the model outputs 2"):
        segment.SegmentationLoss(class_weights=[1, 1, 1])(masks, logits)


def test_mean_iou_on_a_hand_made_case_matches_keras():
    truth = np.array([[0, 0, 1, 1], [2, 2, 2, 0]])
    predicted = np.array([[0, 1, 1, 1], [2, 2, 0, 0]])
    # class 0: TP 2, FP 1, FN 1 -> 2/4; class 1: TP 2, FP 1, FN 0 -> 2/3; class 2: TP 2, FN 1 -> 2/3.
    figures = segment.scores(segment.confusion_matrix(truth, predicted, 4))
    assert figures["iou_per_class"] == {"0": 0.5, "1": pytest.approx(2 / 3), "2": pytest.approx(2 / 3), "3": None}
    assert figures["mean_iou"] == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    assert figures["pixel_accuracy"] == 6 / 8
    keras_iou = keras.metrics.MeanIoU(4)
    keras_iou.update_state(truth, predicted)
    assert figures["mean_iou"] == pytest.approx(float(keras_iou.result()))


def test_a_model_trains_on_masks_keeps_the_best_by_mean_iou_and_round_trips(tmp_path):
    x, masks = shapes_canvases(96)
    model = segment.build("resnet20", 3, head="unet", weights=None, input_shape=(32, 32, 3))
    history = training.fit(model, (x[:64], masks[:64]), (x[64:], masks[64:]), epochs=8, batch_size=8, seed=0,
                           checkpoint_dir=str(tmp_path), verbose=0)
    assert {"mean_iou", "val_mean_iou", "accuracy"} <= set(history.history)
    report = segment.evaluate(model, (x[64:], masks[64:]), class_names=["dark", "green", "blue"])
    assert report["mean_iou"] > 0.6 and report["num_images"] == 32, report
    assert report["mean_iou"] == pytest.approx(history.history["val_mean_iou"][-1], abs=0.02)
    best = keras.models.load_model(tmp_path / "best.keras")
    assert max(history.history["val_mean_iou"]) == pytest.approx(segment.evaluate(best, (x[64:], masks[64:]))["mean_iou"],
                                                                 abs=0.02)
    model.save(tmp_path / "last.keras")
    assert_close(keras.models.load_model(tmp_path / "last.keras")(x[:4]), model(x[:4]))
    int8 = export.to_tflite(model, str(tmp_path / "unet_int8.tflite"), mode="int8", representative_data=x[:64],
                            verify_data=(x[64:], masks[64:]))
    assert int8["agreement"] > 0.95 and abs(int8["mean_iou"] - int8["keras_mean_iou"]) < 0.05, int8
    pytest.importorskip("matplotlib")
    path = segment.plot(model, x[:3], masks[:3], str(tmp_path / "plot.png"), class_names=["dark", "green", "blue"])
    assert os.path.getsize(path) > 0


def test_every_head_exports_and_its_file_verifies_per_pixel(tmp_path):
    x, masks = shapes_canvases(16)
    for head in segment.HEADS:
        model = segment.build("resnet20", 3, head=head, weights=None, input_shape=(32, 32, 3))
        report = export.to_tflite(model, str(tmp_path / f"{head}.tflite"), verify_data=(x[:6], masks[:6]),
                                  min_agreement=0.99)
        assert report["samples"] == 6 and report["mean_iou_vs_keras"] > 0.95, (head, report)
        assert report["mean_iou"] == pytest.approx(report["keras_mean_iou"], abs=0.01)


# One head of each kind: transposed-convolution skips, a resizing decoder, dilated ASPP (the FCN variants and
# torchvision's FCNHead are built from the same layers as fcn8s).
@pytest.mark.parametrize("head", ["fcn8s", "unet", "deeplabv3"])
def test_each_kind_of_head_exports_for_the_edge_tpu_with_integer_operators_only(head, tmp_path):
    x = np.random.default_rng(0).uniform(0, 1, (16, 32, 32, 3)).astype("float32")
    masks = (x[..., 0] > 0.5).astype("int32") + (x[..., 1] > 0.5)
    model = segment.build("resnet18", 3, head=head, weights=None, input_shape=(32, 32, 3))
    report = export.to_tflite(model, str(tmp_path / f"{head}_edgetpu.tflite"), mode="edgetpu", representative_data=x,
                              verify_data=(x[:4], masks[:4]))
    assert report["float_operators"] == [] and report["input_dtype"] == "int8", report  # Whole on the Edge TPU.
    assert report["agreement"] > 0.9, report  # Per pixel, against the Keras model (untrained: near ties).


def test_masks_that_do_not_fit_are_refused_with_the_reason():
    x, masks = shapes_canvases(8)
    model = segment.build("resnet20", 3, head="fcn32s", weights=None, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"masks are 16x16 but the images are 32x32: give masks of the images' size"):
        training.fit(model, (x, masks[:, ::2, ::2]), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"class id 2, but there are num_classes=2 \(ids 0 to 1\)"):
        segment.from_arrays(x, masks, num_classes=2)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"kzoo: a mask in the dataset is outside 0 to 1 "
                                                              r"\(or ignore_class=255\)"):
        next(iter(segment.pipeline(tf.data.Dataset.from_tensor_slices((x, masks)), batch_size=4, num_classes=2,
                                   ignore_class=255)))
    with pytest.raises(ValueError, match=r"masks it seems, but resnet20 outputs one class per image"):
        training.fit(kzoo.resnet20(num_classes=3), (x, masks), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="label_smoothing=0.1 is for one class per image"):
        training.fit(model, (x, masks), epochs=1, label_smoothing=0.1, verbose=0)
    with pytest.raises(ValueError, match=r"weights='coco_voc' predict 21 classes"):
        segment.build("resnet50_tv", 11, head="deeplabv3", weights="coco_voc")
    with pytest.raises(ValueError, match=r"published for resnet50_tv with head='fcn'.*not for resnet18"):
        segment.build("resnet18", 21, head="fcn", weights="coco_voc")


def test_image_and_mask_folders_pair_by_name_and_split_without_overlap(tmp_path):
    x, masks = shapes_canvases(10)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for index, (image, mask) in enumerate(zip(x, masks)):
        tf.io.write_file(str(tmp_path / "images" / f"{index}.png"), tf.io.encode_png(np.uint8(image * 255)))
        tf.io.write_file(str(tmp_path / "masks" / f"{index}.png"), tf.io.encode_png(np.uint8(mask[..., None])))
    options = dict(num_classes=3, image_size=32, validation_split=0.2, test_split=0.2, shuffle=False)
    subsets = {name: segment.from_directory(str(tmp_path / "images"), str(tmp_path / "masks"), subset=name,
                                            batch_size=10, **options) for name in ("training", "validation", "test")}
    seen = {name: next(iter(dataset)) for name, dataset in subsets.items()}
    assert [len(seen[name][0]) for name in subsets] == [6, 2, 2]
    for images_, masks_ in seen.values():  # Every image still says its own mask.
        assert np.array_equal(np.asarray(masks_) == 1, np.asarray(images_)[..., 1] > 0.5)
    tf.io.write_file(str(tmp_path / "images" / "extra.png"), tf.io.encode_png(np.uint8(x[0] * 255)))
    with pytest.raises(ValueError, match=r"1 images in .* have no mask of the same name .* 'extra.png'"):
        segment.from_directory(str(tmp_path / "images"), str(tmp_path / "masks"), num_classes=3)


def test_oxford_pets_loads_under_mock_data_with_masks_shifted_to_ids():
    import tensorflow_datasets as tfds

    def examples(self, *args, **kwargs):
        rng = np.random.default_rng(0)
        rows = [{"image": rng.integers(0, 255, (40, 50, 3), dtype=np.uint8),
                 "segmentation_mask": rng.integers(1, 4, (40, 50, 1), dtype=np.uint8)} for _ in range(6)]
        return tf.data.Dataset.from_tensor_slices({key: np.stack([row[key] for row in rows]) for key in rows[0]})

    with tfds.testing.mock_data(as_dataset_fn=examples):
        dataset = segment.load("oxford_iiit_pet", "train", image_size=32, batch_size=6, augment=True, seed=0)
        x, m = next(iter(dataset))
    assert x.shape == (6, 32, 32, 3) and set(np.unique(m)) <= {0, 1, 2}
    assert dataset.class_names == ["pet", "background", "outline"] and dataset.num_classes == 3


def torchvision_deeplab_state(model):
    """torchvision's DeepLabV3 state dict for `model`'s shapes: the ResNet under `backbone.`, DeepLabHead under
    `classifier.`, written out from torchvision's module structure; plus an auxiliary FCN head (`aux_classifier.`)."""
    rng = np.random.default_rng(1)
    state = {f"backbone.{key}": value for key, value in torchvision_resnet_state(
        kzoo.resnet18(include_top=False, input_shape=SHAPE)).items() if not key.startswith("fc.")}

    def conv(key, out, channels, kernel):
        state[f"{key}.weight"] = rng.normal(0, 0.05, (out, channels, kernel, kernel)).astype("float32")

    def bn(key, channels):
        state.update({f"{key}.weight": rng.uniform(0.5, 1.5, channels), f"{key}.bias": rng.normal(0, 0.1, channels),
                      f"{key}.running_mean": rng.normal(0, 0.1, channels),
                      f"{key}.running_var": rng.uniform(0.5, 1.5, channels),
                      f"{key}.num_batches_tracked": np.array(3)})

    conv("classifier.0.convs.0.0", 256, 512, 1), bn("classifier.0.convs.0.1", 256)
    for branch in (1, 2, 3):
        conv(f"classifier.0.convs.{branch}.0", 256, 512, 3), bn(f"classifier.0.convs.{branch}.1", 256)
    conv("classifier.0.convs.4.1", 256, 512, 1), bn("classifier.0.convs.4.2", 256)
    conv("classifier.0.project.0", 256, 1280, 1), bn("classifier.0.project.1", 256)
    conv("classifier.1", 256, 256, 3), bn("classifier.2", 256)
    conv("classifier.4", 5, 256, 1)
    state["classifier.4.bias"] = rng.normal(0, 0.1, 5).astype("float32")
    conv("aux_classifier.0", 64, 256, 3), bn("aux_classifier.1", 64)  # Trains only: left out.
    return {key: np.asarray(value, dtype=value.dtype if key.endswith("tracked") else "float32")
            for key, value in state.items()}


def test_a_torchvision_deeplabv3_checkpoint_converts_layer_by_layer(tmp_path):
    reference = segment.build("resnet18", 5, head="deeplabv3", weights=None, input_shape=SHAPE)
    state = torchvision_deeplab_state(reference)
    path = write_torch_checkpoint(str(tmp_path / "deeplabv3_resnet18.pth"), state)
    model = segment.build("resnet18", 5, head="deeplabv3", weights=path, input_shape=SHAPE)
    np.testing.assert_array_equal(model.get_layer("aspp_pool_conv").kernel.numpy(),
                                  np.transpose(state["classifier.0.convs.4.1.weight"], (2, 3, 1, 0)))
    np.testing.assert_array_equal(model.get_layer("aspp_2_bn").moving_variance.numpy(),
                                  state["classifier.0.convs.2.1.running_var"])
    np.testing.assert_array_equal(model.get_layer("deeplab_score").bias.numpy(), state["classifier.4.bias"])
    np.testing.assert_array_equal(model.get_layer("conv5_block1_2_conv").kernel.numpy(),
                                  np.transpose(state["backbone.layer4.0.conv2.weight"], (2, 3, 1, 0)))
    assert model.get_layer("conv5_block2_2_conv").dilation_rate == (4, 4)  # torchvision's stride 8.
    assert model.get_layer("preprocess") is not None  # torchvision normalises with ImageNet's mean and std.
    with pytest.raises(ValueError, match=r"Layer 'decoder1_1_conv' has no counterpart in torchvision's FCN"):
        segment.build("resnet18", 5, head="unet", weights=path, input_shape=SHAPE)


def test_published_segmentation_weights_convert_once_from_the_keras_cache(tmp_path, keras_home, monkeypatch):
    import dataclasses

    from kzoo import weights

    reference = segment.build("resnet18", 5, head="deeplabv3", weights=None, input_shape=SHAPE)
    state = torchvision_deeplab_state(reference)
    published = weights.SEGMENTATION_RECORDS[("resnet50_tv", "deeplabv3", "coco_voc")]
    cached = os.path.join(keras_home, "models", "deeplabv3_resnet18_test.pth")
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    write_torch_checkpoint(cached, state)
    record = dataclasses.replace(published, backbone="resnet18", class_names=published.class_names[:5],
                                 file=weights.WeightsFile("http://127.0.0.1:9/none.pth", os.path.basename(cached),
                                                          None))
    monkeypatch.setitem(weights.SEGMENTATION_RECORDS, ("resnet18", "deeplabv3", "coco_voc"), record)
    first = segment.build("resnet18", 5, head="deeplabv3", weights="coco_voc", input_shape=SHAPE)
    converted = [name for name in os.listdir(os.path.dirname(cached)) if name.endswith(".weights.h5")]
    assert len(converted) == 1 and converted[0].startswith("deeplabv3_resnet18_test.kzoo-")
    assert first.feature_info[-1].reduction == 8  # The record's output stride.
    # The second build reads the converted file only: the checkpoint now holds zeros.
    write_torch_checkpoint(cached, {key: value * 0 for key, value in state.items()})
    second = segment.build("resnet18", 5, head="deeplabv3", weights="coco_voc", input_shape=SHAPE)
    np.testing.assert_array_equal(second.get_layer("deeplab_score").bias.numpy(), state["classifier.4.bias"])
    assert_close(second(images(SHAPE)), first(images(SHAPE)))


def test_digit_canvases_label_the_ink_of_each_digit():
    digits = np.zeros((2, 28, 28), "uint8")
    digits[0, 10:20, 12:16] = 255
    digits[1, 5:8, 5:25] = 200
    canvases, masks = digit_canvases(digits, np.array([3, 8]), 20, size=64, seed=0)
    assert canvases.shape == (20, 64, 64, 1) and masks.shape == (20, 64, 64)
    assert set(np.unique(masks)) == {0, 4, 9}
    assert np.array_equal(masks > 0, canvases[..., 0] >= 128)
