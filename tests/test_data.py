"""kzoo.data and kzoo.augment: shapes, ranges, determinism, presets, TFDS, offline errors."""

import numpy as np
import pytest
import tensorflow as tf

from kzoo import augment, data


def first_batch(dataset):
    images, labels = next(iter(dataset))
    return images.numpy(), labels.numpy()


def all_images(dataset):
    return np.concatenate([images.numpy() for images, _ in dataset])


@pytest.mark.parametrize(
    "preset, shape",
    [("mnist", (28, 28, 1)), ("cifar", (32, 32, 3)), ("imagenet", (64, 64, 3))],
)
def test_each_preset_keeps_shape_dtype_and_value_range(preset, shape):
    rng = np.random.RandomState(0)
    images = (rng.uniform(0, 255, (40, *shape))).astype("uint8")
    options = {"imagenet": augment.imagenet(image_size=shape[0])}
    dataset = data.from_arrays(images, np.arange(40) % 5, batch_size=16,
                               augment=options.get(preset, preset), seed=1)
    x, y = first_batch(dataset)
    assert x.shape == (16, *shape) and x.dtype == np.float32 and y.dtype == np.int32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert x.std() > 0.05


def test_digits_load_offline_as_28x28_in_unit_range():
    train = data.load("digits", "train", batch_size=2000, shuffle=False)
    test = data.load("digits", "test", batch_size=2000, shuffle=False)
    (x, y), (xt, yt) = first_batch(train), first_batch(test)
    assert x.shape == (1437, 28, 28, 1) and xt.shape == (360, 28, 28, 1)
    assert x.min() >= 0 and 0.9 < x.max() <= 1.0
    assert sorted(set(y)) == sorted(set(yt)) == list(range(10))


def test_the_same_seed_gives_the_same_batches_and_another_seed_does_not():
    def run(seed):
        return all_images(data.load("digits", batch_size=64, augment="mnist", seed=seed))

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


def test_two_epochs_see_different_augmentations_of_the_same_order():
    dataset = data.load("digits", batch_size=64, augment="mnist", shuffle=False, seed=5)
    first, second = all_images(dataset), all_images(dataset)
    assert first.shape == second.shape
    assert not np.array_equal(first, second)


def test_shuffle_reshuffles_each_epoch():
    dataset = data.load("digits", batch_size=2000, seed=1)
    first, second = first_batch(dataset)[1], first_batch(dataset)[1]
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)


@pytest.mark.parametrize("mix", [dict(mixup_alpha=0.2), dict(cutmix_alpha=1.0)])
def test_mixup_and_cutmix_labels_are_one_hot_mixtures_that_sum_to_one(mix):
    dataset = data.load("digits", batch_size=64, augment=augment.cifar(image_size=28, **mix), seed=2)
    x, y = first_batch(dataset)
    assert y.shape == (64, 10) and y.dtype == np.float32
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
    assert (y.max(axis=1) < 1.0 - 1e-3).any()  # Some images really were mixed.


def test_cifar_pad_and_crop_shifts_each_image_on_its_own():
    images = np.zeros((32, 32, 32, 1), "float32")
    images[:, 12:20, 12:20] = 1.0  # The same square in every image.
    dataset = data.from_arrays(images, np.zeros(32), batch_size=32, shuffle=False,
                               augment=augment.cifar(flip=False), seed=0)
    x, _ = first_batch(dataset)
    centres = {tuple(np.argwhere(image[..., 0] > 0.5).mean(axis=0).round(1)) for image in x}
    assert len(centres) > 8  # Per-image offsets, not one for the batch.
    shifts = np.abs(np.array(sorted(centres)) - 15.5)
    assert shifts.max() <= 4.0  # Never more than the 4-pixel pad.


def test_tfds_datasets_load_under_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40):
        x, y = first_batch(data.load("cifar10", "train", batch_size=8, augment="cifar", seed=0))
        assert x.shape == (8, 32, 32, 3) and x.dtype == np.float32 and x.max() <= 1.0
        assert y.dtype == np.int32 and y.max() < 10
        flowers_dataset = data.load("tf_flowers", "train", batch_size=4)
        flowers, _ = first_batch(flowers_dataset)
        assert flowers.shape == (4, 224, 224, 3)  # Variable-size images get the default size.
        assert len(flowers_dataset.class_names) == 5 and "daisy" in flowers_dataset.class_names
    assert data.load("digits", "test", batch_size=8).class_names == [str(d) for d in range(10)]


def test_missing_dataset_offline_gives_one_clear_error(tmp_path):
    with pytest.raises(data.DatasetUnavailableError) as error:
        data.load("mnist", data_dir=str(tmp_path), download=False)
    message = str(error.value)
    assert "'mnist'" in message and str(tmp_path) in message
    assert '"digits"' in message and "from_directory" in message


def test_from_directory_reads_a_folder_per_class(tmp_path):
    from PIL import Image

    rng = np.random.RandomState(0)
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for index in range(3):
            Image.fromarray(rng.randint(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / name / f"{index}.png")
    dataset = data.from_directory(str(tmp_path), image_size=16, batch_size=6, augment="cifar", seed=0)
    x, y = first_batch(dataset)
    assert dataset.class_names == ["cat", "dog"]
    assert x.shape == (6, 16, 16, 3) and sorted(y) == [0, 0, 0, 1, 1, 1]
    assert x.max() <= 1.0


def test_the_pipeline_decodes_caches_shuffles_batches_augments_then_prefetches():
    node, chain = data.load("digits", batch_size=32, augment="mnist", seed=0), []
    while node is not None:  # From the last transformation back to the source.
        chain.append(type(node).__name__.strip("_"))
        node = getattr(node, "_input_dataset", None)
    stages = [name for name in chain if name != "OptionsDataset"][::-1]
    assert stages == [
        "TensorSliceDataset", "ParallelMapDataset",  # source, decode + resize
        "CacheDataset", "ShuffleDataset", "ParallelBatchDataset",
        "ParallelMapDataset",  # batch-level augmentation
        "PrefetchDataset",
    ]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: data.load("digits", augment="cutout"), r"augment='cutout' is not a preset; choose one of \['cifar', 'imagenet', 'mnist'\]"),
        (lambda: data.load("digits", split="validation"), r"split='validation': the digits dataset has 'train', 'test' and 'all'"),
        (lambda: data.load("digits", batch_size=0), r"batch_size=0 must be a positive integer"),
        (lambda: data.from_arrays(np.zeros((3, 8, 8)), np.zeros(2)), r"got images \(3, 8, 8, 1\) and labels \(2,\)"),
        (lambda: augment.cifar(mixup_alpha=0.2, cutmix_alpha=1.0), r"Choose MixUp or CutMix, not both"),
    ],
)
def test_bad_data_arguments_get_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_preview_writes_a_png_grid(tmp_path):
    path = augment.preview(data.load("digits", batch_size=16, augment="mnist"), str(tmp_path / "grid.png"),
                           rows=2, columns=4)
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # No temporary file left.


def test_random_resized_crop_outputs_the_requested_size():
    layer = augment.RandomResizedCrop(24, seed=0)
    out = layer(tf.random.uniform((5, 40, 50, 3)), training=True)
    assert out.shape == (5, 24, 24, 3)


def test_random_affine_at_zero_strength_is_the_identity():
    images = tf.random.uniform((4, 16, 20, 1))
    out = augment.RandomAffine(rotation=0.0, translation=0.0, zoom=0.0, seed=0)(images, training=True)
    np.testing.assert_allclose(out.numpy(), images.numpy(), atol=1e-6)


def test_random_affine_shifts_stay_within_the_translation_bound():
    images = np.zeros((64, 32, 32, 1), "float32")
    images[:, 14:18, 14:18] = 1.0
    out = augment.RandomAffine(translation=0.1, seed=1)(tf.constant(images), training=True).numpy()
    centres = np.array([np.argwhere(image[..., 0] > 0.25).mean(axis=0) for image in out])
    assert np.abs(centres - 15.5).max() <= 0.1 * 32 + 0.5
    assert centres.std(axis=0).min() > 0.5  # Each image moved on its own.


def test_color_jitter_keeps_range_and_gray_stays_gray():
    gray = tf.repeat(tf.random.uniform((8, 10, 10, 1)), 3, axis=-1)
    out = augment.ColorJitter(0.4, 0.4, 0.4, seed=0)(gray, training=True).numpy()
    assert 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-5)  # Saturation of gray is a no-op.
    assert not np.allclose(out, gray.numpy())


def test_color_jitter_blend_equals_brightness_contrast_saturation_one_by_one():
    import keras

    images = tf.random.uniform((6, 9, 9, 3), 0.4, 0.6, seed=1)  # Mid-range: no step clips.
    out = augment.ColorJitter(0.1, 0.1, 0.1, seed=3)(images, training=True).numpy()
    draws = keras.random.SeedGenerator(3)  # The layer's draws, in its order.
    b, c, s = (keras.random.uniform((6, 1, 1, 1), 0.9, 1.1, seed=draws) for _ in range(3))
    step = images * b
    mean = tf.reduce_mean(tf.image.rgb_to_grayscale(step), axis=[1, 2, 3], keepdims=True)
    step = mean + c * (step - mean)
    gray = tf.image.rgb_to_grayscale(step)
    step = gray + s * (step - gray)
    np.testing.assert_allclose(out, step.numpy(), atol=1e-5)


def test_random_resized_crop_flip_mirrors_some_crops_for_free():
    ramp = tf.tile(tf.linspace(0.0, 1.0, 32)[None, None, :, None], (16, 32, 1, 1))
    crops = augment.RandomResizedCrop(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=True, seed=0)(ramp).numpy()
    rising = crops[:, 8, -1, 0] > crops[:, 8, 0, 0]
    assert 0 < rising.sum() < 16  # Some crops kept the left-to-right ramp, some were mirrored.


def test_augmentation_runs_one_batch_at_a_time_on_a_cpu_only_machine():
    from kzoo.data.datasets import _augment_parallelism

    assert _augment_parallelism(None, seed=None) == 1  # This machine has no GPU or TPU.
    assert _augment_parallelism(True, seed=None) == tf.data.AUTOTUNE
    assert _augment_parallelism(True, seed=0) == 1  # A seed needs one stream.
